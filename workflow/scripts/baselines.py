"""Snakemake adapter for rule baselines: Richardson–Lucy with one PSF on one raw stack."""

from pathlib import Path

from cycledecon.boundary import user_errors_exit
from cycledecon.evaluate import run_baselines

with user_errors_exit(snakemake.log[0]):
    learned = snakemake.input.learned_psf
    run_baselines(
        Path(snakemake.input.raw),
        {snakemake.wildcards.psf: Path(snakemake.output.zarr)},
        learned_psf_path=Path(learned) if learned else None,
        optics=snakemake.params.optics,
        psf_shape=tuple(snakemake.params.psf_shape),
        iterations=snakemake.params.iterations,
    )

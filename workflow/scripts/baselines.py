"""Snakemake adapter for rule baselines: Richardson–Lucy with one PSF on one raw stack."""

from cycledecon.baselines import load_psf, write_baseline
from cycledecon.boundary import user_errors_exit
from cycledecon.io import read_ome_zarr

with user_errors_exit(snakemake.log[0]):
    raw = snakemake.input.raw
    psf = load_psf(
        snakemake.wildcards.psf,
        read_ome_zarr(raw)[1],
        path=snakemake.input.learned_psf or None,
        optics=snakemake.params.optics,
        shape=tuple(snakemake.params.psf_shape),
    )
    write_baseline(raw, snakemake.output.zarr, psf, snakemake.params.iterations)

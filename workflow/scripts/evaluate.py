"""Snakemake adapter for rule evaluate: metrics and PSF measurements of one campaign."""

from pathlib import Path

from cycledecon.boundary import user_errors_exit
from cycledecon.evaluate import evaluate_campaign

with user_errors_exit(snakemake.log[0]):
    evaluate_campaign(
        snakemake.params.samples,
        learned_psf_path=Path(snakemake.input.learned_psf),
        true_psf_path=Path(snakemake.input.reference_psf) if "reference_psf" in snakemake.input.keys() else None,
        optics=snakemake.params.optics,
        psf_shape=tuple(snakemake.params.psf_shape),
        true_psf_voxel_size=snakemake.params.true_psf_voxel_size,
        metrics_csv=Path(snakemake.output.metrics),
        psf_csv=Path(snakemake.output.psf),
        psf_figure=Path(snakemake.output.psf_figure),
    )

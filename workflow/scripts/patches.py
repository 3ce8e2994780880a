"""Snakemake adapter for rule patches."""

from pathlib import Path

from cycledecon.boundary import user_errors_exit
from cycledecon.patches import SampleInput, extract_patches

with user_errors_exit(snakemake.log[0]):
    extract_patches(
        [SampleInput(name=name, role=role, path=Path(path)) for name, role, path in snakemake.params.samples],
        store=Path(snakemake.output.patches),
        manifest=Path(snakemake.output.manifest),
        config=snakemake.params.config,
        campaign=snakemake.wildcards.campaign,
        optics=snakemake.params.optics,
    )

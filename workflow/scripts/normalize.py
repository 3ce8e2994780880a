"""Snakemake adapter for rule normalize."""

from cycledecon.boundary import user_errors_exit
from cycledecon.normalize import normalize

with user_errors_exit(snakemake.log[0]):
    normalize(snakemake.input.zarr, snakemake.output.zarr, snakemake.params.config)

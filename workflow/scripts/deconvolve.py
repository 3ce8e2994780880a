"""Snakemake adapter for rule deconvolve: normalized stack + model.pt → deconvolved OME-Zarr."""

from cycledecon.boundary import user_errors_exit
from cycledecon.infer import deconvolve_file

with user_errors_exit(snakemake.log[0]):
    deconvolve_file(
        snakemake.input.image,
        snakemake.input.model,
        snakemake.output.zarr,
        snakemake.params.config,
        threads=snakemake.threads,
    )

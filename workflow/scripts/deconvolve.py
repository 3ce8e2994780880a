"""Snakemake adapter for rule deconvolve: normalized stack + model.pt → deconvolved OME-Zarr."""

from cycledecon.boundary import user_errors_exit
from cycledecon.deconvolve import deconvolve_file
from cycledecon.progress import echo_progress

# The progress bar goes to the log and, a line at a time, to the terminal Snakemake shows.
with user_errors_exit(snakemake.log[0]), echo_progress(snakemake.wildcards.sample):
    deconvolve_file(
        snakemake.input.image,
        snakemake.input.model,
        snakemake.output.zarr,
        snakemake.params.config,
        threads=snakemake.threads,
    )

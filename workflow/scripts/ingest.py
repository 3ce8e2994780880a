"""Snakemake adapter for rule ingest."""

from cycledecon.boundary import user_errors_exit
from cycledecon.ingest import ingest

with user_errors_exit(snakemake.log[0]):
    channel = snakemake.params.channel
    ingest(
        snakemake.input.raw,
        snakemake.output.zarr,
        channel=None if channel is None else int(channel),
        voxel_size=snakemake.params.voxel_size,
        extra_attrs=snakemake.params.attrs,
        chunks=tuple(snakemake.params.chunks),
    )

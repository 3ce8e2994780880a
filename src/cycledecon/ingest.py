"""Ingest: one raw TIFF / OME-TIFF / ImageJ stack, checked, to OME-Zarr with its voxel size."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cycledecon.io import DEFAULT_CHUNKS, DEFAULT_NGFF_VERSION, check_output, check_values, read_stack, write_ome_zarr
from cycledecon.voxel import VoxelSize

log = logging.getLogger(__name__)


def ingest(
    path: str | Path,
    out: str | Path,
    channel: int | None = None,
    voxel_size: VoxelSize | None = None,
    extra_attrs: dict[str, Any] | None = None,
    chunks: tuple[int, int, int] = DEFAULT_CHUNKS,
    overwrite: bool = False,
    ngff_version: str = DEFAULT_NGFF_VERSION,
) -> Path:
    """Convert one raw stack to OME-Zarr (NGFF `ngff_version`), after checking it is a usable 3D
    volume and that `out` may be written (never the input; never something cycledecon did not
    write, unless `overwrite`)."""
    check_output(out, [path], overwrite=overwrite)
    stack = read_stack(path, channel=channel, voxel_size=voxel_size)
    low, high = check_values(stack.data, path)
    attrs = {**stack.metadata, "value_range": [low, high], **(extra_attrs or {})}
    log.info("ingesting %s %s %s voxel %s µm", path, stack.data.shape, stack.data.dtype, stack.voxel_size)
    return write_ome_zarr(
        stack.data, out, stack.voxel_size, attrs=attrs, chunks=chunks, overwrite=overwrite, ngff_version=ngff_version
    )

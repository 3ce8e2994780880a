"""Resampling a stack to another voxel size, in physical units, with bounded memory.

A campaign's reference stacks may come from another instrument: before patches are cut they are
put on the widefield stacks' grid, so that one voxel means the same length in both domains.
Each axis is resampled on its own with ``skimage.transform.resize`` (linear interpolation,
``anti_aliasing``): on an axis that is downsampled it first applies a Gaussian of σ = (f − 1) / 2
input voxels (f the size ratio), so detail finer than the new grid is averaged instead of aliased,
and an axis that is upsampled is only interpolated. One axis at a time lets every dask block hold
that axis whole and the others in their stored chunks, so no block grows with the whole stack.
Voxel centres are aligned (the first and last voxel centres keep their physical positions up to
half a voxel of the new grid, as the new voxel count is the physical extent rounded).
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from skimage.transform import resize

from cycledecon.voxel import VoxelSize

#: Relative difference below which two voxel sizes are the same (float round-off in metadata).
SAME_VOXEL_RTOL = 1e-6


def same_voxel_size(a: VoxelSize, b: VoxelSize) -> bool:
    """Whether two voxel sizes agree in every axis up to float round-off."""
    return bool(np.allclose(a.as_tuple(), b.as_tuple(), rtol=SAME_VOXEL_RTOL, atol=0))


def resampled_shape(shape: tuple[int, ...], source: VoxelSize, target: VoxelSize) -> tuple[int, int, int]:
    """Voxel counts on the target grid that cover the same physical extent (at least one per axis)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, source.as_tuple(), target.as_tuple()))


def coarser_axes(source: VoxelSize, target: VoxelSize) -> list[str]:
    """The axes (of 'z', 'y', 'x') in which `source` samples more coarsely than `target`."""
    return [name for name, s, t in zip("zyx", source.as_tuple(), target.as_tuple())
            if s > t * (1 + SAME_VOXEL_RTOL)]  # fmt: skip


def _resize_axis(block: np.ndarray, axis: int, size: int) -> np.ndarray:
    """One block, whole along `axis`, resized to `size` voxels along it (the other axes unchanged)."""
    shape = list(block.shape)
    shape[axis] = size
    out = resize(block, shape, order=1, mode="reflect", anti_aliasing=size < block.shape[axis],
                 preserve_range=True)  # fmt: skip
    return out.astype(np.float32, copy=False)


def resample(data: da.Array, source: VoxelSize, target: VoxelSize) -> da.Array:
    """A (z, y, x) stack sampled at `source` µm, lazily resampled to `target` µm (float32).

    Downsampled axes are done first, so the later passes work on fewer voxels.
    """
    shape = resampled_shape(data.shape, source, target)
    chunks = data.chunksize
    out = data.astype(np.float32)
    order = sorted(range(3), key=lambda axis: shape[axis] / data.shape[axis])
    for axis in order:
        if shape[axis] == out.shape[axis]:
            continue
        out = out.rechunk({axis: -1})
        new_chunks = tuple((shape[axis],) if a == axis else c for a, c in enumerate(out.chunks))
        out = out.map_blocks(_resize_axis, axis, shape[axis], chunks=new_chunks, dtype=np.float32)
    return out.rechunk(tuple(min(c, n) for c, n in zip(chunks, shape)))


def store(data: da.Array, path: Path) -> da.Array:
    """Compute `data` block by block into a zarr array at `path` and open it lazily again, so that
    later random reads (patches) read stored voxels instead of recomputing the resampling."""
    array = zarr.create_array(str(path), shape=data.shape, chunks=data.chunksize, dtype="float32",
                              zarr_format=3)  # fmt: skip
    da.store(data, array, lock=False)
    return da.from_zarr(zarr.open_array(str(path), mode="r"))

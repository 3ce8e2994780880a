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
import dask.local
import numpy as np
import zarr
from scipy.ndimage import gaussian_filter, map_coordinates
from skimage.transform import resize

from cycledecon.errors import CycledeconError
from cycledecon.io import read_stack
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


def psf_to_grid(psf: np.ndarray, source: VoxelSize, target: VoxelSize) -> np.ndarray:
    """A PSF sampled at `source` µm, resampled to `target` µm about its centre voxel.

    Unlike `resample`, the new grid is centred on the array's centre and keeps an odd size, so a
    centred PSF stays centred on a voxel; voxels beyond the old extent are zero. Downsampled axes are
    Gaussian-filtered first (σ = (f − 1) / 2 input voxels, as in `resample`), then interpolated
    linearly (scipy.ndimage.map_coordinates).
    """
    ratio = np.array(target.as_tuple()) / np.array(source.as_tuple())  # input voxels per output voxel
    sigma = np.maximum(0.0, (ratio - 1) / 2)
    smooth = gaussian_filter(psf.astype(np.float32), sigma, mode="constant") if sigma.any() else psf
    centre_in = (np.array(psf.shape) - 1) / 2
    half = np.floor(centre_in / ratio + 1e-9).astype(int)
    axes = [c + (np.arange(-h, h + 1)) * r for c, h, r in zip(centre_in, half, ratio)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    out = map_coordinates(smooth, coords, order=1, mode="constant", cval=0.0)
    return np.clip(out, 0, None).astype(np.float32)


def read_psf_on_grid(path: str | Path, grid: VoxelSize, voxel_size: VoxelSize | None = None) -> np.ndarray:
    """A known PSF file (TIFF/OME-TIFF) as float32 of unit sum, sampled at `grid` µm.

    Its voxel size is `voxel_size` when given (the config states it, and wins as the sheet's columns
    do), else the file's metadata, else `grid` itself (a PSF file without metadata is taken to be
    made on the campaign's widefield grid); on another grid it is resampled to `grid`.
    """
    stack = read_stack(path, voxel_size=voxel_size, default_voxel_size=grid)
    psf = np.asarray(stack.data.compute(scheduler=dask.local.get_sync), dtype=np.float32)
    if not same_voxel_size(stack.voxel_size, grid):
        psf = psf_to_grid(psf, stack.voxel_size, grid)
    total = float(psf.sum())
    if not total > 0:
        raise CycledeconError(f"{path}: the PSF sums to {total:g}; a PSF needs positive weight")
    return psf / total

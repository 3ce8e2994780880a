"""Intensity normalization of one stack: robust percentile rescale, optionally followed by 3D CLAHE.

Two methods, chosen by ``normalize.method``:

``clahe``
    The volume is rescaled linearly so that its low/high percentiles map to 0/1 and clipped to
    [0, 1]; then contrast-limited adaptive histogram equalization is applied in 3D with a
    contextual-region (kernel) size given in µm and converted to voxels with the stack's voxel
    size. The CLAHE is this module's own implementation of the algorithm in scikit-image's
    ``skimage.exposure`` (Zuiderveld's, with the same 14-bit quantization, tile grid, histogram
    clipping and interpolation; tests check that both give the same levels). It differs only in
    keeping the intensity scale fixed: scikit-image's public function stretches its input and its
    output by the image's own min and max, which differ from block to block, so separately
    equalized blocks would not match. Here the input levels are the [0, 1] volume times 2¹⁴−1 and
    the output is the equalized levels divided by 2¹⁴−1: a pure function of the globally rescaled
    volume, which is what makes blockwise processing exact (see below). Output in [0, 1].

``percentile`` (default)
    Only the linear percentile rescale (optionally clipped), so intensities stay proportional to
    photon counts above the offset. It has an exact inverse (`linear_inverse`), which brings a
    result computed in normalized units back to the stack's own intensity units; CLAHE has none.

Percentiles are computed once per volume: exactly when the volume has at most
``percentile_sample_voxels`` voxels, otherwise on a regular strided subsample (every s-th voxel
along each axis) of at most that many voxels, read from the lazily opened store.

Volumes with more than ``chunk_voxels`` voxels are equalized in blocks. The CLAHE anchors its
tile grid at the volume origin (tiles ``[j·k, (j+1)·k)`` per axis for kernel ``k``, the last
one completed by reflection) and interpolates each voxel between the two nearest tiles per axis.
Block cores therefore start and end on multiples of the kernel and are read with one kernel of
halo on each side (clipped at the volume edge): every tile a core voxel uses is then complete in
the block and identical to the global tile, and the global end reflection happens at the same
place. The blockwise result equals the whole-volume result exactly (tested bit for bit).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import dask.local
import numpy as np
from skimage.exposure import rescale_intensity
from skimage.util import img_as_uint

from cycledecon.config.normalize import APPLIED_KEY, CLAHE_GREY_LEVELS, NormalizeConfig, parse_normalize_config
from cycledecon.errors import CycledeconError
from cycledecon.io import read_ome_zarr, write_ome_zarr
from cycledecon.voxel import VoxelSize

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------ parameters
def kernel_voxels(kernel_um: tuple[float, float, float], voxel_size: VoxelSize) -> tuple[int, int, int]:
    """CLAHE kernel in voxels: `kernel_um` / voxel size, rounded to the nearest odd integer ≥ 1.

    Parameters
    ----------
    kernel_um : (z, y, x) kernel size in µm.
    voxel_size : voxel size in µm.

    Returns
    -------
    (z, y, x) kernel size in voxels, each odd (ties round up: 2.0 → 3).
    """
    return tuple(max(1, 2 * math.floor(v / 2) + 1) for v in voxel_size.to_voxels(kernel_um))


def strided_sample(data: da.Array | np.ndarray, max_voxels: int) -> tuple[np.ndarray, int]:
    """Every s-th voxel along each axis, with the smallest step s leaving at most `max_voxels`.

    Returns
    -------
    (sample, s): the sample as a NumPy array (the whole volume when s == 1) and the step.
    """
    step = max(1, math.floor((math.prod(data.shape) / max_voxels) ** (1 / data.ndim)))
    while math.prod(math.ceil(n / step) for n in data.shape) > max_voxels:
        step += 1
    return np.asarray(data[(slice(None, None, step),) * data.ndim]), step


def percentile_values(
    data: da.Array | np.ndarray, percentiles: tuple[float, float], max_voxels: int
) -> tuple[tuple[float, float], int]:
    """Intensities at the (low, high) percentiles of a volume (exact up to `max_voxels` voxels).

    Returns
    -------
    ((low, high), s): the two intensities and the subsampling step used (1 = every voxel).

    Raises CycledeconError when they are equal (a constant or nearly constant volume).
    """
    sample, step = strided_sample(data, max_voxels)
    low, high = (float(v) for v in np.percentile(sample, percentiles))
    if not high > low:
        raise CycledeconError(
            f"the {percentiles[0]} and {percentiles[1]} percentiles are both {low}; "
            "the volume is (nearly) constant and cannot be normalized"
        )
    return (low, high), step


# ------------------------------------------------------------------------------------ transforms
def rescale(block: np.ndarray, low: float, high: float, clip: bool) -> np.ndarray:
    """Map intensities `low` → 0 and `high` → 1 linearly (float32), optionally clipped to [0, 1]."""
    out = (np.asarray(block, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(out, 0.0, 1.0, out=out) if clip else out


def clahe(unit: np.ndarray, kernel: tuple[int, int, int], clip_limit: float, nbins: int) -> np.ndarray:
    """3D CLAHE of a volume in [0, 1] with a fixed (not min–max) intensity scale.

    Parameters
    ----------
    unit : (z, y, x) volume with values in [0, 1].
    kernel : (z, y, x) contextual-region (tile) size in voxels.
    clip_limit : normalized clip limit in [0, 1]; 0 disables clipping (plain AHE).
    nbins : number of histogram bins per tile, at most CLAHE_GREY_LEVELS.

    Returns
    -------
    float32 volume in [0, 1]: the equalized 14-bit levels divided by 2¹⁴ − 1.
    """
    # Quantized through 16 bits, as scikit-image's CLAHE does, so both round the same voxels alike.
    levels = rescale_intensity(img_as_uint(unit), in_range=(0, 2**16 - 1), out_range=(0, CLAHE_GREY_LEVELS - 1))
    bins = np.round(levels).astype(np.uint16) // np.uint16(1 + CLAHE_GREY_LEVELS // nbins)
    return interpolate_maps(tile_maps(bins, kernel, clip_limit, nbins), bins, kernel)


def tile_maps(bins: np.ndarray, kernel: tuple[int, int, int], clip_limit: float, nbins: int) -> np.ndarray:
    """Grey-level mapping of every tile: its clipped histogram, cumulated and scaled to the levels.

    Tiles are ``[j·k, (j+1)·k)`` along each axis from the volume origin; the last one along an
    axis is completed by reflecting the volume at its end.

    Parameters
    ----------
    bins : (z, y, x) histogram bin of every voxel, in [0, nbins).
    kernel, clip_limit, nbins : as in `clahe`.

    Returns
    -------
    (tiles_z, tiles_y, tiles_x, nbins) uint16 array: the output level of each bin in each tile.
    """
    tiles = tuple(-(-n // k) for n, k in zip(bins.shape, kernel))
    padded = np.pad(bins, [(0, t * k - n) for t, k, n in zip(tiles, kernel, bins.shape)], mode="reflect")
    # Histograms one z row of tiles at a time: label each voxel with (its y, x tile) · nbins + bin.
    tile_y, tile_x = (np.arange(t * k) // k for t, k in zip(tiles[1:], kernel[1:]))
    tile_yx = tile_y[:, None] * tiles[2] + tile_x
    hist = np.empty((*tiles, nbins), np.int64)
    for tz in range(tiles[0]):
        labels = (tile_yx * nbins + padded[tz * kernel[0] : (tz + 1) * kernel[0]]).ravel()
        hist[tz] = np.bincount(labels, minlength=math.prod(tiles[1:]) * nbins).reshape(*tiles[1:], nbins)
    elements = math.prod(kernel)
    limit = int(max(clip_limit * elements, 1)) if clip_limit > 0 else elements
    cumulative = np.cumsum(clip_histograms(hist.reshape(-1, nbins), limit), axis=-1).astype(np.float64)
    cumulative *= (CLAHE_GREY_LEVELS - 1) / elements
    np.minimum(cumulative, CLAHE_GREY_LEVELS - 1, out=cumulative)
    return cumulative.astype(np.uint16).reshape(hist.shape)


def clip_histograms(hist: np.ndarray, limit: int) -> np.ndarray:
    """Clip each row of `hist` at `limit` counts and spread the excess over the bins below it.

    Zuiderveld's redistribution in scikit-image's order: an equal share to every bin that stays
    below the limit, then the remainder one count at a time along strided passes. Following it
    step for step keeps the tile mappings, and so the output levels, equal to scikit-image's.

    Parameters
    ----------
    hist : (tiles, nbins) integer histograms; modified in place.
    limit : largest count a bin may hold, at least 1.

    Returns
    -------
    `hist`, clipped.
    """
    excess = np.maximum(hist - limit, 0).sum(axis=1)
    np.minimum(hist, limit, out=hist)
    share = excess // hist.shape[1]
    upper = (limit - share)[:, None]
    low = hist < upper
    excess -= low.sum(axis=1) * share
    hist += low * share[:, None]
    # Bins the share brought within reach of the limit are topped up to it, from the excess.
    middle = (hist >= upper) & (hist < limit)
    excess -= np.where(middle, limit - hist, 0).sum(axis=1)
    hist[middle] = limit
    for row in np.flatnonzero(excess > 0):
        spread_remainder(hist[row], int(excess[row]), limit)
    return hist


def spread_remainder(hist: np.ndarray, excess: int, limit: int) -> None:
    """Add `excess` counts to the bins of `hist` below `limit` (in place), one per bin per pass.

    Each pass starts at a successive bin and visits every s-th bin, with s the number of bins
    below the limit divided by the counts left; passes repeat until no count is left or a whole
    round places none (every bin full).
    """
    while excess > 0:
        before = excess
        for start in range(hist.size):
            under = hist < limit
            if not under.any():
                return
            step = max(1, np.count_nonzero(under) // excess)
            picked = under[start::step]
            hist[start::step][picked] += 1
            excess -= np.count_nonzero(picked)
            if excess <= 0:
                return
        if excess == before:
            return


def interpolate_maps(maps: np.ndarray, bins: np.ndarray, kernel: tuple[int, int, int]) -> np.ndarray:
    """Every voxel's bin mapped by the 2 × 2 × 2 tiles around it, weighted trilinearly.

    A voxel's weights along an axis fall linearly from its nearest tile centre to the next; tiles
    beyond the volume's ends repeat the edge tile. The sum is formed in float32 in a fixed corner
    order and truncated to whole levels, as scikit-image does, so the levels match it exactly.

    Parameters
    ----------
    maps : (tiles_z, tiles_y, tiles_x, nbins) output levels from `tile_maps`.
    bins : (z, y, x) histogram bin of every voxel.
    kernel : (z, y, x) tile size in voxels.

    Returns
    -------
    float32 (z, y, x) volume: the levels divided by 2¹⁴ − 1.
    """
    (zs, ys, xs) = (axis_neighbours(n, k, t) for n, k, t in zip(bins.shape, kernel, maps.shape[:3]))
    # (y, x) corners with their in-plane weights, x weight times y weight.
    plane_corners = [(ty[:, None], tx, wx * wy[:, None]) for (ty, wy), (tx, wx) in itertools.product(ys, xs)]
    out = np.empty(bins.shape, np.float32)
    for z in range(bins.shape[0]):
        total = np.zeros(bins.shape[1:], np.float32)
        for (tz, wz), (ty, tx, wyx) in itertools.product(zs, plane_corners):
            total += (maps[tz[z], ty, tx, bins[z]] * (wyx * wz[z])).astype(np.float32)
        out[z] = np.trunc(total) / np.float32(CLAHE_GREY_LEVELS - 1)
    return out


def axis_neighbours(
    length: int, kernel: int, tiles: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The two tiles around each position along an axis, with their interpolation weights.

    Returns
    -------
    ((lower tile, weight), (upper tile, weight)), each an array over the `length` positions.
    """
    shifted = np.arange(length) + kernel // 2
    fraction = (shifted % kernel) / kernel
    lower = np.maximum(shifted // kernel - 1, 0)
    upper = np.minimum(shifted // kernel, tiles - 1)
    return (lower, 1 - fraction), (upper, fraction)


def block_chunks(
    shape: tuple[int, ...], kernel: tuple[int, ...], max_voxels: int
) -> tuple[tuple[int, ...], ...]:
    """Dask chunks for blockwise CLAHE: cores are multiples of the kernel, so the tile grid stays
    the global one; axes are halved (largest core first) until a core plus one kernel of halo on
    each side has at most `max_voxels` voxels, or every core is one kernel wide.

    Returns
    -------
    Chunk sizes per axis; a single chunk per axis when the volume has at most `max_voxels` voxels.
    """
    if math.prod(shape) <= max_voxels:
        return tuple((n,) for n in shape)
    tiles = [math.ceil(n / k) for n, k in zip(shape, kernel)]

    def block_voxels() -> int:
        return math.prod(min(t * k + 2 * k, n) for t, k, n in zip(tiles, kernel, shape))

    while block_voxels() > max_voxels and max(tiles) > 1:
        axis = max((i for i in range(len(shape)) if tiles[i] > 1), key=lambda i: tiles[i] * kernel[i])
        tiles[axis] = math.ceil(tiles[axis] / 2)
    if block_voxels() > max_voxels:
        log.warning("CLAHE blocks of %d voxels exceed chunk_voxels=%d (3 kernels per axis)",
                    block_voxels(), max_voxels)
    return tuple(_split(n, t * k) for n, t, k in zip(shape, tiles, kernel))


def _split(length: int, core: int) -> tuple[int, ...]:
    return (core,) * (length // core) + ((length % core,) if length % core else ())


def clahe_blockwise(
    data: da.Array,
    low: float,
    high: float,
    kernel: tuple[int, int, int],
    clip_limit: float,
    nbins: int,
    chunks: tuple[tuple[int, ...], ...],
) -> da.Array:
    """Lazy CLAHE of the percentile-rescaled `data`, one task per chunk of `chunks`.

    Each task reads its core plus one kernel of halo per side from `data` (so only one block is in
    memory per worker), equalizes it and keeps the core. With `chunks` from `block_chunks` the
    result equals the whole-volume result exactly.
    """

    def equalize_block(block_info: dict | None = None) -> np.ndarray:
        location = block_info[None]["array-location"]
        halo = tuple(slice(max(a - k, 0), min(b + k, n)) for (a, b), k, n in zip(location, kernel, data.shape))
        raw = data[halo].compute(scheduler=dask.local.get_sync)
        out = clahe(rescale(raw, low, high, clip=True), kernel, clip_limit, nbins)
        return out[tuple(slice(a - h.start, b - h.start) for (a, b), h in zip(location, halo))]

    return da.map_blocks(equalize_block, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))


@dataclass(frozen=True)
class LinearInverse:
    """The inverse of the percentile rescale: ``input = normalized × scale + offset``.

    scale: high − low percentile intensity of the stack, in its own units per normalized unit.
    offset: the low percentile intensity (camera offset plus background); it is added back, so a
        result keeps the stack's offset, as the Richardson–Lucy baselines keep theirs.
    """

    scale: float
    offset: float

    def apply(self, block: np.ndarray) -> np.ndarray:
        """`block` (normalized units) in the stack's intensity units, float32."""
        return np.asarray(block, dtype=np.float32) * np.float32(self.scale) + np.float32(self.offset)

    def undo(self, block: np.ndarray) -> np.ndarray:
        """`block` (the stack's units) back in normalized units, float32: the forward rescale."""
        return rescale(block, self.offset, self.offset + self.scale, clip=False)


def linear_inverse(record: Mapping[str, Any]) -> LinearInverse:
    """The inverse of a stored `normalization` record, from its method and its `applied` values.

    Raises CycledeconError (the reason, in one line) when the record has no exact inverse: CLAHE is
    a non-linear, locally adaptive mapping, and a record without percentile values (one written
    by another tool) cannot say which intensities 0 and 1 stood for.
    """
    method = record.get("method")
    if method == "clahe":
        raise CycledeconError("CLAHE normalization is non-linear and has no inverse")
    if method != "percentile":
        raise CycledeconError(f"normalization method {method!r} records no inverse")
    values = (record.get(APPLIED_KEY) or {}).get("percentile_values")
    try:
        low, high = (float(v) for v in values)
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise CycledeconError(f"the normalization record holds no usable percentile values (got {values!r})")
    return LinearInverse(scale=high - low, offset=low)


# ------------------------------------------------------------------------------------ entry points
def normalize_lazy(
    data: da.Array, voxel_size: VoxelSize, params: NormalizeConfig | Mapping[str, Any] | None = None
) -> tuple[da.Array, dict[str, Any]]:
    """Lazily normalized (z, y, x) volume and the record of how (see `normalize_array`).

    Only the percentiles are computed now (one streaming pass); the returned dask array reads
    `data` block by block when computed or written.
    """
    config = parse_normalize_config(params)
    (low, high), step = percentile_values(data, config.percentiles, config.percentile_sample_voxels)
    applied: dict[str, Any] = {"percentile_values": [low, high], "percentile_sample_step": step}
    if config.method == "percentile":
        out = data.map_blocks(rescale, low, high, config.clip, dtype=np.float32)
        applied["chunked"] = out.npartitions > 1
    else:
        kernel = kernel_voxels(config.clahe.kernel_um, voxel_size)
        chunks = block_chunks(data.shape, kernel, config.chunk_voxels)
        out = clahe_blockwise(data, low, high, kernel, config.clahe.clip_limit, config.clahe.nbins, chunks)
        applied.update(kernel_voxels=list(kernel), chunked=out.npartitions > 1, block_shape=list(out.chunksize))
    log.info("normalize %s %s: %s", config.method, data.shape, applied)
    return out, {**config.to_dict(), APPLIED_KEY: applied}


def normalize_array(
    volume: np.ndarray, voxel_size: VoxelSize, params: NormalizeConfig | Mapping[str, Any] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalize an in-memory (z, y, x) volume.

    Parameters
    ----------
    volume : the raw volume (any real dtype).
    voxel_size : its voxel size in µm (converts the CLAHE kernel to voxels).
    params : a NormalizeConfig, a `normalize:` config dict, or a stored `normalization` record (as
        found in a normalized store or a patch store). A record's `applied` intensity values are
        not reused: percentiles are always recomputed on `volume`, because a new stack's offset,
        exposure and bleaching differ from the training stacks' and a rescale fixed to theirs
        would misplace its background and saturation.

    Returns
    -------
    (normalized float32 volume, record): the record holds the configuration plus, under
    `applied`, the percentile intensity values, the subsampling step, the kernel in voxels and
    whether the volume was processed in blocks.
    """
    out, record = normalize_lazy(da.asarray(volume), voxel_size, params)
    return out.compute(), record


def normalize(
    in_path: str | Path, out_path: str | Path, params: NormalizeConfig | Mapping[str, Any] | None = None
) -> Path:
    """Normalize one OME-Zarr stack into a new float32 OME-Zarr (written atomically).

    The input's `cycledecon` attributes are kept and the record of `normalize_array` is added under
    `normalization`. Memory stays bounded by one block when the volume is above `chunk_voxels`.
    """
    config = parse_normalize_config(params)
    data, voxel_size, attrs = read_ome_zarr(in_path)
    try:
        out, record = normalize_lazy(data, voxel_size, config)
    except CycledeconError as exc:
        raise CycledeconError(f"{in_path}: {exc}") from None
    return write_ome_zarr(out, out_path, voxel_size, attrs={**attrs, "normalization": record})

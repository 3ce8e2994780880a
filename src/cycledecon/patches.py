"""Unpaired 3D training patches of one campaign: domain A (widefield) and domain B (reference).

The two domains are sampled independently, from different stacks: there is no spatial
correspondence between an A patch and a B patch, which is what cycle-consistent training expects.

Validation is held out **by sample**, per domain: with ``val_samples`` the named stacks, otherwise
``round(val_fraction × stacks)`` stacks (at least one, and at least one left for training) chosen
with the seed. A domain with a single stack cannot be split by sample; its validation patches then
come from a slab of that stack along y, its last ``min(round(val_fraction × ny), ⌊0.2 × ny⌋)`` rows,
so that training keeps at least 80 % of the only stack it has; training patches come from the
other rows, and no patch crosses the boundary. When that slab is lower than a patch, validation
comes from the last patch height of rows and training from the whole stack (validation then
overlaps training; the log says so). The store's ``splits`` attribute names the stacks of each
split.

With ``context_um`` every patch is cut with a margin of that many µm on each side (rounded up to
voxels): the training model's PSF layer blurs the margin into the patch, as the microscope blurs
light from outside the field into it; the patch itself (the centre) is what the networks see.
Where the margin reaches past the stack's edge it is the stack mirrored at that edge (the scene
beyond a stack is unknown; its mirror image has the same density of structures), so patches can
lie anywhere in a stack, however thin next to the PSF.

The widefield stacks of a campaign share one voxel size (one microscope); a reference stack may come
from another instrument with its own voxel size, and is then resampled to the widefield voxel size
(anti-aliased, in physical units: see cycledecon.resample) before anything else is computed from it,
so a voxel is the same length in both domains. A reference coarser than the widefield grid in some
axis is used with a warning: it holds no detail finer than its own sampling there. The store's
``resampling`` attribute and the manifest's ``sample_d*_um`` columns record each stack's own voxel
size; patch origins are voxels of the widefield grid.

Reference stacks are put on the widefield stacks' intensity scale (``reference_units: widefield``,
the default when the campaign's optics are known): each stack is normalized by its own percentiles,
so a sparse reference and a widefield stack of the same scene end up on unrelated scales, differing
from stack to stack, which one intensity map per domain cannot undo. A reference x is therefore
rescaled to x' = (x − low) / (high − low), with low and high the widefield normalization's
percentiles of x blurred by the theoretical PSF: its widefield image h ⊛ x' is then normalized as a
real widefield stack is (h sums to one, so the affine map commutes with the blur).

A patch is kept when at least ``min_foreground_fraction`` of its voxels lie above its stack's
foreground level (Otsu's threshold, or a percentile, of the stack), with at most ``max_tries``
random positions per requested patch. The patches of one (domain, split) are shared out evenly
between its stacks, so a stack where the filter finds nothing is named in the error.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import dask.local
import numpy as np
import pandas as pd
import zarr
from scipy import ndimage
from scipy.signal import fftconvolve
from skimage.filters import threshold_otsu

from cycledecon.atomic import atomic_path, check_replaceable, check_writable
from cycledecon.config.normalize import APPLIED_KEY
from cycledecon.config.patches import PatchConfig, parse_patch_config
from cycledecon.errors import CycledeconError
from cycledecon.io import read_ome_zarr
from cycledecon.normalize import percentile_values, strided_sample
from cycledecon.psf.theory import psf_from_optics
from cycledecon.resample import coarser_axes, resample, resampled_shape, same_voxel_size, store
from cycledecon.voxel import VoxelSize

log = logging.getLogger(__name__)

#: Domain letter of each sample role: the generator maps A (blurred) to B (sharp).
DOMAINS = {"widefield": "A", "reference": "B"}
SPLITS = ("train", "val")
#: Share of a lone stack's rows that training keeps when validation comes from the same stack.
MIN_TRAIN_SHARE = 0.8
#: Voxels of the strided subsample on which a stack's foreground level is computed.
FOREGROUND_SAMPLE_VOXELS = 2**22
#: Reference smoothing: the Gaussian is cut at this many σ (scipy's default).
GAUSSIAN_TRUNCATE = 4.0
#: Suffix of the arrays that hold each patch's distance to its stack's faces (see `fill_array`): where
#: G's context ring reaches past the stack, training shows G what inference shows it there.
ROOM_SUFFIX = "_room"

MANIFEST_COLUMNS = ("array", "index", "domain", "split", "sample", "z", "y", "x",
                    "mean", "p1", "p99", "foreground_fraction", "sample_dz_um", "sample_dy_um",
                    "sample_dx_um")  # fmt: skip


@dataclass(frozen=True)
class SampleInput:
    """One normalized stack of a campaign: its sample name, role and OME-Zarr path."""

    name: str
    role: Literal["widefield", "reference"]
    path: Path


@dataclass(frozen=True)
class _Stack:
    """An opened stack on the campaign's grid, its own voxel size and its foreground level."""

    sample: SampleInput
    data: da.Array
    voxel_size: VoxelSize
    attrs: dict[str, Any]
    own_voxel_size: VoxelSize
    level: float = float("nan")


@dataclass(frozen=True)
class _Region:
    """The box of one stack that one (domain, split) samples from."""

    stack: _Stack
    box: tuple[slice, slice, slice]


# ------------------------------------------------------------------------------------ stacks
def foreground_level(data: da.Array, config: PatchConfig) -> float:
    """A stack's foreground level: Otsu's threshold or a percentile of a strided subsample."""
    sample, _ = strided_sample(data, FOREGROUND_SAMPLE_VOXELS)
    if config.foreground == "otsu":
        return float(threshold_otsu(sample))
    return float(np.percentile(sample, config.foreground_percentile))


def _open_stacks(samples: list[SampleInput], campaign: str) -> list[_Stack]:
    """The campaign's stacks as stored (each on its own grid), sorted by name; no level yet."""
    stacks = []
    for sample in sorted(samples, key=lambda s: s.name):
        if sample.role not in DOMAINS:
            raise CycledeconError(f"campaign {campaign}: sample {sample.name} has role {sample.role!r}; "
                                  f"need one of {', '.join(DOMAINS)}")
        data, voxel_size, attrs = read_ome_zarr(sample.path)
        stacks.append(_Stack(sample, data, voxel_size, attrs, own_voxel_size=voxel_size))
    for role in DOMAINS:
        if not any(s.sample.role == role for s in stacks):
            raise CycledeconError(f"campaign {campaign}: no {role} stack; patches need both widefield "
                                  "(domain A) and reference (domain B) stacks")
    return stacks


def widefield_voxel_size(stacks: list[_Stack], campaign: str) -> VoxelSize:
    """The campaign's voxel size: that of its widefield stacks, which must agree (one microscope)."""
    widefield = [s for s in stacks if s.sample.role == "widefield"]
    first = widefield[0]
    for stack in widefield[1:]:
        if not same_voxel_size(stack.voxel_size, first.voxel_size):
            raise CycledeconError(
                f"campaign {campaign}: widefield samples {first.sample.name} and {stack.sample.name} have "
                f"different voxel sizes {first.voxel_size.as_tuple()} and {stack.voxel_size.as_tuple()} µm; "
                "a campaign's widefield stacks share one microscope"
            )
    return first.voxel_size


def on_widefield_grid(
    stacks: list[_Stack], voxel_size: VoxelSize, workdir: Path, campaign: str
) -> tuple[list[_Stack], dict[str, dict[str, list]]]:
    """The stacks with every reference of another voxel size resampled to `voxel_size` (stored
    under `workdir`), and {sample: its own and the target voxel size and shape} of those resampled."""
    out, record = [], {}
    for stack in stacks:
        if stack.sample.role == "reference" and not same_voxel_size(stack.voxel_size, voxel_size):
            record[stack.sample.name] = _resampling_record(stack, voxel_size)
            _warn_if_coarser(stack, voxel_size, campaign)
            data = store(resample(stack.data, stack.voxel_size, voxel_size), workdir / f"{stack.sample.name}.zarr")
            log.info("campaign %s: reference %s resampled from %s µm (%s voxels) to %s µm (%s voxels)", campaign,
                     stack.sample.name, stack.voxel_size.as_tuple(), stack.data.shape, voxel_size.as_tuple(),
                     data.shape)  # fmt: skip
            stack = dataclasses.replace(stack, data=data, voxel_size=voxel_size)
        out.append(stack)
    return out, record


def _resampling_record(stack: _Stack, target: VoxelSize) -> dict[str, list]:
    return {"voxel_size_um": list(stack.voxel_size.as_tuple()), "target_voxel_size_um": list(target.as_tuple()),
            "shape": list(stack.data.shape),
            "resampled_shape": list(resampled_shape(stack.data.shape, stack.voxel_size, target))}  # fmt: skip


def _warn_if_coarser(stack: _Stack, target: VoxelSize, campaign: str) -> None:
    """One line when a reference is sampled more coarsely than the widefield grid in some axis."""
    axes = coarser_axes(stack.voxel_size, target)
    if axes:
        sizes = ", ".join(f"{a} {getattr(stack.voxel_size, a):g} vs {getattr(target, a):g} µm" for a in axes)
        log.warning("campaign %s: reference %s is sampled more coarsely than the widefield stacks (%s); "
                    "interpolated onto their grid it holds no detail finer than its own voxels, which bounds "
                    "the sharpness the network learns along %s", campaign, stack.sample.name, sizes, "/".join(axes))


def _with_levels(stacks: list[_Stack], config: PatchConfig) -> list[_Stack]:
    """The stacks with their foreground levels, computed on the campaign's grid."""
    return [dataclasses.replace(s, level=foreground_level(s.data, config)) for s in stacks]


def _normalization(stacks: list[_Stack], campaign: str) -> dict[str, Any]:
    """The widefield stacks' shared normalization settings (without per-stack intensity values)."""
    settings = {}
    for stack in stacks:
        if stack.sample.role != "widefield":
            continue
        record = stack.attrs.get("normalization")
        if record is None:
            raise CycledeconError(f"campaign {campaign}: sample {stack.sample.name} has no normalization "
                                  f"record; patches need stacks written by cycledecon normalize")
        settings[stack.sample.name] = {k: v for k, v in record.items() if k != APPLIED_KEY}
    names = list(settings)
    for name in names[1:]:
        if settings[name] != settings[names[0]]:
            raise CycledeconError(f"campaign {campaign}: samples {names[0]} and {name} were normalized "
                                  "with different settings")
    return settings[names[0]]


# ------------------------------------------------------------------------------------ reference units
def widefield_units(data: da.Array, psf: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """(low, high − low) of a sharp stack blurred by `psf`: the offset and scale that give its
    widefield image the normalization of a real widefield stack (see the module docstring)."""
    radius = tuple(n // 2 for n in psf.shape)
    data = data.astype(np.float32).rechunk(tuple(max(c, 2 * r + 1) for c, r in zip(data.chunksize, radius)))
    blurred = data.map_overlap(lambda block: fftconvolve(block, psf, mode="same").astype(np.float32),
                               depth=radius, boundary="reflect", dtype=np.float32)
    (low, high), _ = percentile_values(blurred, percentiles, FOREGROUND_SAMPLE_VOXELS)
    return low, high - low


def to_widefield_units(
    stacks: list[_Stack], normalization: dict[str, Any], optics: dict[str, float] | None,
    margin: tuple[int, int, int], config: PatchConfig, campaign: str,
) -> tuple[list[_Stack], dict[str, dict[str, float]] | None]:
    """The stacks with each reference rescaled to widefield units, and {sample: {offset, scale}};
    unchanged stacks and None when the config, the optics or the margin rule it out."""
    if config.reference_units == "own":
        return stacks, None
    if not optics or not any(margin):
        log.warning("campaign %s: references keep their own intensity scale (patches.reference_units: "
                    "widefield needs the sheet's optics and patches.context_um > 0)", campaign)
        return stacks, None
    psf = psf_from_optics(tuple(2 * m + 1 for m in margin), stacks[0].voxel_size, optics).astype(np.float32)
    percentiles = tuple(normalization.get("percentiles", (0.1, 99.9)))
    scaling, out = {}, []
    for stack in stacks:
        if stack.sample.role == "reference":
            offset, scale = widefield_units(stack.data, psf, percentiles)
            scaling[stack.sample.name] = {"offset": offset, "scale": scale}
            stack = dataclasses.replace(stack, data=(stack.data - offset) / scale,
                                        level=(stack.level - offset) / scale)
            log.info("campaign %s: reference %s in widefield units: (x − %.4g) / %.4g",
                     campaign, stack.sample.name, offset, scale)
        out.append(stack)
    return out, scaling


def smoothed_references(stacks: list[_Stack], sigma: float) -> list[_Stack]:
    """The stacks with each reference smoothed by a Gaussian of `sigma` voxels (see PatchConfig)."""
    if sigma == 0:
        return stacks
    smooth = functools.partial(ndimage.gaussian_filter, sigma=sigma, truncate=GAUSSIAN_TRUNCATE, output=np.float32)
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)  # scipy's own kernel radius: blocks match the whole stack
    return [dataclasses.replace(s, data=s.data.astype(np.float32).map_overlap(
                smooth, depth=radius, boundary="none", dtype=np.float32))
            if s.sample.role == "reference" else s for s in stacks]


# ------------------------------------------------------------------------------------ splits
def split_regions(
    stacks: list[_Stack], config: PatchConfig, campaign: str
) -> dict[tuple[str, str], list[_Region]]:
    """Regions sampled by each (domain, split); validation is held out by sample (see module doc)."""
    names = {s.sample.name for s in stacks}
    unknown = sorted(set(config.val_samples or ()) - names)
    if unknown:
        raise CycledeconError(f"campaign {campaign}: patches.val_samples names unknown sample(s) "
                              f"{', '.join(unknown)}")
    regions: dict[tuple[str, str], list[_Region]] = {}
    for index, (role, domain) in enumerate(DOMAINS.items()):
        members = [s for s in stacks if s.sample.role == role]
        if config.n_val == 0:
            split = {"train": [_whole(s) for s in members], "val": []}
        elif len(members) == 1:
            split = _slab_split(members[0], config, campaign)
        else:
            val = _val_names(members, config, index, campaign)
            split = {"train": [_whole(s) for s in members if s.sample.name not in val],
                     "val": [_whole(s) for s in members if s.sample.name in val]}  # fmt: skip
        for name, parts in split.items():
            regions[domain, name] = parts
    return regions


def _whole(stack: _Stack) -> _Region:
    return _Region(stack, tuple(slice(0, n) for n in stack.data.shape))


def _val_names(members: list[_Stack], config: PatchConfig, domain_index: int, campaign: str) -> set[str]:
    names = [s.sample.name for s in members]
    if config.val_samples is not None:
        val = set(names) & set(config.val_samples)
    else:
        count = min(max(round(config.val_fraction * len(names)), 1), len(names) - 1)
        order = np.random.default_rng([config.seed, domain_index]).permutation(len(names))
        val = {names[i] for i in order[:count]}
    if not val or val == set(names):
        role = members[0].sample.role
        raise CycledeconError(f"campaign {campaign}: patches.val_samples leaves the {role} stacks "
                              f"({', '.join(names)}) without a {'validation' if not val else 'training'} stack")
    return val


def _slab_split(stack: _Stack, config: PatchConfig, campaign: str) -> dict[str, list[_Region]]:
    """Train on the first rows of a lone stack, validate on its last rows; training keeps at
    least MIN_TRAIN_SHARE of the rows (a lone stack is all the data that domain has), so a stack
    too short for a separate validation slab of one patch height is validated on a slab that
    training also sees. The log says which case applied."""
    nz, ny, nx = stack.data.shape
    held = min(round(config.val_fraction * ny), int(np.floor((1 - MIN_TRAIN_SHARE) * ny + 1e-9)))
    full_z, full_x = slice(0, nz), slice(0, nx)
    what = f"campaign {campaign}: one {stack.sample.role} stack ({stack.sample.name})"
    if held >= config.shape[1]:
        log.warning("%s: training from its first %d of %d rows (%.0f %%), validation from the last %d",
                    what, ny - held, ny, 100 * (ny - held) / ny, held)
        return {"train": [_Region(stack, (full_z, slice(0, ny - held), full_x))],
                "val": [_Region(stack, (full_z, slice(ny - held, ny), full_x))]}  # fmt: skip
    held = min(config.shape[1], ny)
    log.warning("%s: training from all %d rows; validation from its last %d rows, which training also sees "
                "(a separate slab of patch height %d would leave training under %.0f %% of the stack), so the "
                "validation losses are not independent of training", what, ny, held, config.shape[1],
                100 * MIN_TRAIN_SHARE)  # fmt: skip
    return {"train": [_whole(stack)], "val": [_Region(stack, (full_z, slice(ny - held, ny), full_x))]}


# ------------------------------------------------------------------------------------ sampling
def context_voxels(config: PatchConfig, voxel_size: VoxelSize) -> tuple[int, int, int]:
    """The context margin in voxels per axis (µm rounded up, so it never falls short)."""
    return tuple(int(np.ceil(c / v - 1e-9)) for c, v in zip(config.context_um, voxel_size.as_tuple()))


def sample_region(
    region: _Region, count: int, config: PatchConfig, rng: np.random.Generator, where: str,
    margin: tuple[int, int, int] = (0, 0, 0),
) -> list[tuple[tuple[int, int, int], np.ndarray, float]]:
    """Draw `count` foreground patches from a region, each with `margin` voxels of context.

    Returns
    -------
    (origin (z, y, x) of the patch in the stack, float32 patch with its margin, foreground
    fraction of the patch) per patch, in draw order.

    Raises CycledeconError naming `where` when the region is smaller than a patch or when fewer
    than `count` positions pass the foreground filter in `count × max_tries` tries.
    """
    extent = [s.stop - s.start for s in region.box]
    if any(e < p for e, p in zip(extent, config.shape)):
        raise CycledeconError(f"{where}: region {'×'.join(map(str, extent))} is smaller than the patch "
                              f"{'×'.join(map(str, config.shape))}; no valid patch position")
    centre = tuple(slice(m, m + p) for m, p in zip(margin, config.shape))
    fill = config.reference_past_faces if region.stack.sample.role == "reference" else "mirror"
    patches, best, tries = [], 0.0, count * config.max_tries
    for _ in range(tries):
        if len(patches) == count:
            break
        origin = tuple(int(rng.integers(s.start, s.stop - p + 1)) for s, p in zip(region.box, config.shape))
        patch = read_window(region.stack.data, origin, config.shape, margin, fill)
        fraction = float(np.mean(patch[centre] > region.stack.level))
        best = max(best, fraction)
        if fraction >= config.min_foreground_fraction:
            patches.append((origin, patch, fraction))
    if len(patches) == count:
        return patches
    raise CycledeconError(
        f"{where}: only {len(patches)} of {count} patches have ≥ {config.min_foreground_fraction:g} of their "
        f"voxels above the foreground level {region.stack.level:.4g} ({config.foreground}) in {tries} tries "
        f"(best {best:.3g}); check the stack or lower patches.min_foreground_fraction"
    )


def read_window(data: da.Array, origin: tuple[int, ...], shape: tuple[int, ...],
                margin: tuple[int, ...], fill: Literal["mirror", "wrap"] = "mirror") -> np.ndarray:
    """The patch at `origin` with `margin` voxels around it, mirrored (or wrapped) where it leaves
    the stack."""
    start = [o - m for o, m in zip(origin, margin)]
    stop = [o + p + m for o, p, m in zip(origin, shape, margin)]
    inside = tuple(slice(max(0, a), min(n, b)) for a, b, n in zip(start, stop, data.shape))
    pad = [(s.start - a, b - s.stop) for s, a, b in zip(inside, start, stop)]
    if fill == "wrap" and any(p != (0, 0) for p in pad):
        for axis, (a, b, n) in enumerate(zip(start, stop, data.shape)):
            data = da.take(data, np.arange(a, b) % n, axis=axis)
        return np.asarray(data.compute(scheduler=dask.local.get_sync), dtype=np.float32)
    block = np.asarray(data[inside].compute(scheduler=dask.local.get_sync), dtype=np.float32)
    return np.pad(block, pad, mode="symmetric") if any(p != (0, 0) for p in pad) else block


def _quotas(total: int, parts: int) -> list[int]:
    """`total` shared out as evenly as possible, the remainder going to the first parts."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def _rng(seed: int, domain: str, split: str, sample: str) -> np.random.Generator:
    """Independent, order-free stream per (domain, split, sample)."""
    return np.random.default_rng([seed, ord(domain), SPLITS.index(split), zlib.crc32(sample.encode())])


def fill_array(
    array: zarr.Array, room: zarr.Array, regions: list[_Region], config: PatchConfig, domain: str, split: str,
    campaign: str, margin: tuple[int, int, int] = (0, 0, 0),
) -> list[dict[str, Any]]:
    """Write the patches of one (domain, split), with their margin, into `array`, and into `room`
    each patch's distance (z, y, x; before, after) in voxels to its stack's faces; return their
    manifest rows (statistics of the centre)."""
    centre = tuple(slice(m, m + p) for m, p in zip(margin, config.shape))
    rows = []
    for region, count in zip(regions, _quotas(array.shape[0], len(regions))):
        name = region.stack.sample.name
        where = f"campaign {campaign}: sample {name} ({region.stack.sample.role}, {split})"
        for origin, patch, fraction in sample_region(region, count, config, _rng(config.seed, domain, split, name),
                                                     where, margin):
            array[len(rows)] = patch
            room[len(rows)] = [(o, n - o - p) for o, p, n in zip(origin, config.shape, region.stack.data.shape)]
            patch = patch[centre]
            p1, p99 = np.percentile(patch, [1, 99])
            rows.append(dict(zip(MANIFEST_COLUMNS, (
                f"{domain}_{split}", len(rows), domain, split, name, *origin,
                float(patch.mean()), float(p1), float(p99), fraction, *region.stack.own_voxel_size.as_tuple(),
            ))))  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------ entry point
def store_voxel_size(path: Path) -> VoxelSize:
    """The voxel size (µm) of a patch store: its campaign's widefield grid."""
    return VoxelSize(*zarr.open_group(str(path), mode="r").attrs["voxel_size_um"])



def extract_patches(
    samples: list[SampleInput],
    store: Path,
    manifest: Path,
    config: Mapping[str, Any] | PatchConfig | None,
    campaign: str,
    optics: dict[str, float] | None,
) -> Path:
    """Sample unpaired training and validation patches of one campaign.

    Parameters
    ----------
    samples : the campaign's normalized stacks (widefield → domain A, reference → domain B).
    store : where the patches go (a zarr v3 group, written atomically).
    manifest : where the CSV of every patch's origin goes (written atomically).
    config : the `patches:` config section (see PatchConfig).
    campaign : campaign name, stored and used in error messages.
    optics : {na, wavelength_nm, immersion_ri} of the campaign's microscope, or None; stored.

    Returns
    -------
    `store`: a zarr v3 group with float32 arrays A_train, B_train, A_val, B_val of
    shape (n, z, y, x) — patch_shape plus twice context_voxels — and attributes voxel_size_um (the
    widefield stacks'), patch_shape, context_voxels, campaign, normalization (the widefield stacks'
    settings), optics, resampling ({reference: {voxel_size_um, target_voxel_size_um, shape,
    resampled_shape}} of the references resampled to voxel_size_um; empty when none was),
    reference_scaling ({sample: {offset, scale}} or None), seed and splits (sample names per
    domain and split).
    """
    config = parse_patch_config(config)
    store, manifest = Path(store), Path(manifest)
    for path in (store, manifest):  # refused before any work, not after it
        check_replaceable(path)
        check_writable(path)
    store.parent.mkdir(parents=True, exist_ok=True)  # the resampled references' scratch folder goes there
    with tempfile.TemporaryDirectory(prefix=".resampled-", dir=store.parent) as workdir:
        return _extract(samples, store, manifest, config, campaign, optics, Path(workdir))


def _extract(
    samples: list[SampleInput], store: Path, manifest: Path, config: PatchConfig, campaign: str,
    optics: dict[str, float] | None, workdir: Path,
) -> Path:
    """extract_patches with a scratch folder `workdir` for the resampled references."""
    stacks = _open_stacks(samples, campaign)
    voxel_size = widefield_voxel_size(stacks, campaign)
    normalization = _normalization(stacks, campaign)
    stacks, resampling = on_widefield_grid(stacks, voxel_size, workdir, campaign)
    # smoothed first, so that the foreground filter and the intensity scale see the data patches hold
    stacks = smoothed_references(stacks, config.reference_smoothing_voxels)
    stacks = _with_levels(stacks, config)
    margin = context_voxels(config, voxel_size)
    stacks, reference_scaling = to_widefield_units(stacks, normalization, optics, margin, config, campaign)
    regions = split_regions(stacks, config, campaign)
    window_shape = tuple(p + 2 * m for p, m in zip(config.shape, margin))
    rows: list[dict[str, Any]] = []
    with atomic_path(store) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for (domain, split), parts in regions.items():
            count = config.n_train if split == "train" else config.n_val
            array = group.create_array(f"{domain}_{split}", shape=(count, *window_shape), dtype="float32",
                                       chunks=(1, *window_shape))
            room = group.create_array(f"{domain}_{split}{ROOM_SUFFIX}", shape=(count, 3, 2), dtype="int32")
            rows += fill_array(array, room, parts, config, domain, split, campaign, margin)
            log.info("campaign %s: %s_%s %d patches from %s", campaign, domain, split, count,
                     sorted({r.stack.sample.name for r in parts}))
        group.attrs.update({
            "voxel_size_um": list(voxel_size.as_tuple()),
            "patch_shape": list(config.shape),
            "context_voxels": list(margin),
            "campaign": campaign,
            "normalization": normalization,
            "optics": optics,
            "resampling": resampling,
            "reference_scaling": reference_scaling,
            "reference_smoothing_voxels": config.reference_smoothing_voxels,
            "seed": config.seed,
            "splits": {f"{d}_{s}": sorted({r.stack.sample.name for r in parts}) for (d, s), parts in regions.items()},
        })  # fmt: skip
    with atomic_path(manifest) as tmp:
        pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(tmp, index=False)
    return store

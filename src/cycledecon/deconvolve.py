"""Seam-free blockwise inference of the generator G over stacks larger than memory.

How blocks stay seam-free
-------------------------
The volume is padded lazily by a face padding ``e`` on every side (numpy ``edge``, the face's
voxels repeated, or ``reflect``, the face voxel not repeated: deconvolve.face_padding_mode). Output
blocks of ``block_size`` tile the *unpadded* volume; each block reads its region plus a halo ``h``
on every side, clipped to the padded volume, runs G, and keeps its region. The reference this reproduces is G applied once to the whole padded
volume, cropped back (`reference_output`):

* A side of a block's input clipped to the padded volume (a face side) ends where the reference's
  tensor ends, with the same voxels, so G zero-pads its convolutions there as in the whole run.
* Any other side lies ``h`` beyond the kept region, and ``h`` is at least G's receptive-field
  radius: a kept voxel never sees that edge, only padded-volume voxels it also sees in the whole run.
* Block size, ``h`` and ``e`` are multiples of ``2**depth``, so every block's input starts on the
  max-pooling grid of the padded volume; a block cut off the grid would pool different voxel pairs
  and differ everywhere, not just at its edges. As ``e`` is a multiple too, that grid is also G's
  grid on the unpadded volume.
* The last block along an axis ends exactly where the padded volume ends, so G's internal
  high-end reflect padding (to a multiple of ``2**depth``) and its convolution zero padding sit
  at the same place, with the same content, as in the whole-volume run.

The blockwise result then equals the reference up to float rounding (tested to 1e-4 in fp32),
at block borders and at the volume's outer faces alike; no overlap blending is needed. In bf16
(`cycledecon.precision`) the same holds up to bf16 rounding, since blocks and the whole volume may
round differently. With ``norm: instance`` every tile is normalized by its own statistics and this
guarantee is lost.

The halo is what keeps blocks from seeing each other's edges; ``e`` only defines the output at the
volume's faces (how much padded context G gets there before its own zero padding), and it costs
G work on every face block. Any ``e`` from 0 up is seam-free; from ``h`` up the output no longer
changes (a kept voxel never reaches further), so `face_padding_voxels` caps it there. G is trained
on patches with a thin context ring or none, its convolutions zero-padding at the patch edge, so a
little padded context at a face serves it as well as a full halo: the default,
DEFAULT_FACE_PADDING_VOXELS, is per axis the smallest that scored as well as ``e = h`` against
ground truth, at the faces and over the whole stack.

Any block that keeps these rules is seam-free, so its size only trades memory for speed: each block
recomputes its halo, and larger blocks waste less of that work. Unless ``deconvolve.block_size`` is
given, `block_for_budget` takes the largest such block whose estimated peak memory
(`block_peak_bytes`) fits ``deconvolve.memory_gb``.

Blocks whose inputs have equal shapes are batched into one forward pass (``batch_size``); the
blocks form a lazy dask array that `write_ome_zarr` streams chunk by chunk (pyramid included), so
memory is bounded by a few blocks, not by the volume. All tasks run on dask's synchronous scheduler: one thread owns the model (loaded
once per process) and torch gets the rule's threads for its own intra-op parallelism.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import dask
import dask.array as da
import dask.local
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import cycledecon
from cycledecon.config.deconvolve import (
    DEFAULT_FACE_MODE,
    DEFAULT_FACE_PADDING_VOXELS,
    DEFAULT_UINT16_SCALE,
    MEMORY_CAP_GB,
    FaceMode,
    InferenceConfig,
    parse_inference_config,
)
from cycledecon.config.normalize import parse_normalize_config
from cycledecon.config.train import parse_generator_config
from cycledecon.errors import CycledeconError
from cycledecon.io import (
    DEFAULT_CHUNKS,
    check_output,
    check_values,
    image_name,
    read_ome_zarr,
    read_stack,
    write_ome_zarr,
)
from cycledecon.local_dask import local_dask
from cycledecon.model.checkpoint import load_model
from cycledecon.model.unet import receptive_field
from cycledecon.normalize import LinearInverse, linear_inverse, normalize_lazy
from cycledecon.precision import Precision, resolve_device, resolve_precision
from cycledecon.voxel import VoxelSize

log = logging.getLogger(__name__)

#: Relative voxel-size mismatch between a stack and the model's training data that is warned about.
VOXEL_SIZE_TOLERANCE = 0.10
UINT16_MAX = 65535
#: uint16 output in input units is warned about below this many steps between the stack's low and
#: high percentiles (a stack in [0, 1] would round to a handful of levels).
MIN_UINT16_LEVELS = 1000
#: What the offset convention of an output in input units is, as its attributes state it.
OFFSET_KEPT = ("kept: the low percentile (camera offset and background) is added back, "
               "as in the Richardson-Lucy baselines")
GIB = 2**30

# Memory estimate of a block (`block_peak_bytes`), calibrated so that it bounds the peak RSS measured
# by benchmarks/inference_memory.py, a little above it (table in benchmarks/results/inference_memory.md).
#: Full-resolution feature maps alive at G's peak, in units of base_channels, per precision.
PEAK_CHANNELS = {"fp32": 6.0, "bf16": 4.0}
#: G's float32 input, head output and residual sum, bytes per voxel.
FLOAT32_IO_BYTES = 12.0
#: The pipeline's copies outside G (the halo'd input assembled by dask, input chunks kept for the
#: next blocks, G's output until its centre is written), bytes per voxel of the halo'd block.
BUFFER_BYTES = 16.0
#: Memory of a first forward pass that does not grow with the block (kernels set up on first use).
FIXED_BYTES = 160 * 2**20

# Default budget (`default_memory_gb`).
MEMORY_FRACTION = 0.5
FALLBACK_MEMORY_GB = 4.0


# ---------------------------------------------------------------------------------- block geometry
def halo_voxels(generator_config: Mapping[str, Any]) -> tuple[int, int, int]:
    """Per-axis halo: G's receptive-field radius rounded up to a multiple of 2**depth."""
    multiple = 2 ** parse_generator_config(generator_config).depth
    return tuple(_round_up(r, multiple) for r in receptive_field(generator_config))


def face_padding_voxels(
    generator_config: Mapping[str, Any], requested: Sequence[int] | None = None
) -> tuple[int, int, int]:
    """Per-axis padding at the volume's faces: `requested` (None: DEFAULT_FACE_PADDING_VOXELS)
    rounded up to a multiple of 2**depth, at most the halo (wider padding gives the same output)."""
    multiple = 2 ** parse_generator_config(generator_config).depth
    wanted = DEFAULT_FACE_PADDING_VOXELS if requested is None else requested
    return tuple(min(_round_up(w, multiple), h) for w, h in zip(wanted, halo_voxels(generator_config)))


class AxisBlock(NamedTuple):
    """One block along one axis, in the coordinates of the axis reflect-padded by the face padding:
    the output range it keeps, [start, stop), and the range it reads, [read_start, read_stop)."""

    start: int
    stop: int
    read_start: int
    read_stop: int

    @property
    def extent(self) -> int:
        """Voxels G computes along this axis for the block."""
        return self.read_stop - self.read_start

    @property
    def crop(self) -> slice:
        """The kept range within G's output on what the block read."""
        return slice(self.start - self.read_start, self.stop - self.read_start)


def axis_blocks(length: int, block: int, halo: int, face: int) -> list[AxisBlock]:
    """Blocks of `block` voxels along an axis of `length`, padded by `face` at both ends: each reads
    its range plus `halo` on both sides, clipped to the padded axis (see the module docstring)."""
    return [
        AxisBlock(start + face, stop + face, max(start - halo, -face) + face, min(stop + halo, length + face) + face)
        for start, stop in _block_ranges(length, block)
    ]


def block_layout(
    block_size: Sequence[int], generator_config: Mapping[str, Any]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(block, zarr chunks) per axis: every block a whole number of chunks and of 2**depth.

    Chunks are the store's default, or the block itself where that is smaller; the block is then
    rounded up to a multiple of the chunk and of 2**depth (see the module docstring).
    """
    multiple = 2 ** parse_generator_config(generator_config).depth
    block, chunks = zip(*(_layout_axis(b, c, multiple) for b, c in zip(block_size, DEFAULT_CHUNKS)))
    return tuple(block), tuple(chunks)


def _layout_axis(size: int, default_chunk: int, multiple: int) -> tuple[int, int]:
    """(block, chunk) along one axis for a requested block `size` (see `block_layout`)."""
    chunk = min(default_chunk, _round_up(size, multiple))
    return _round_up(size, math.lcm(chunk, multiple)), chunk


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# ------------------------------------------------------------------------------ memory and blocks
def activation_bytes_per_voxel(generator_config: Mapping[str, Any], bf16: bool) -> float:
    """Peak bytes per voxel of a halo'd block inside one forward pass of G.

    At G's peak, its last full-resolution merge, PEAK_CHANNELS[precision] × base_channels feature
    maps of the block's size are alive, plus the skips kept at coarser levels (level l: 2**l ×
    base_channels channels on 8**-l of the voxels), 2 bytes a value in bf16 and 4 in fp32; G's
    float32 input, head output and residual sum add FLOAT32_IO_BYTES.
    """
    config = parse_generator_config(generator_config)
    channels = PEAK_CHANNELS["bf16" if bf16 else "fp32"] + sum(4.0**-level for level in range(1, config.depth))
    return channels * config.base_channels * (2 if bf16 else 4) + FLOAT32_IO_BYTES


def block_peak_bytes(
    block: Sequence[int],
    shape: Sequence[int],
    generator_config: Mapping[str, Any],
    bf16: bool,
    batch_size: int = 1,
    face_padding: Sequence[int] | None = None,
) -> float:
    """Estimated peak memory of one batch of blocks of `block` output voxels in a volume of `shape`.

    Per voxel of the largest input G gets (per axis, the longest a block reads: its region plus
    the halo, clipped to the volume padded by `face_padding`, as in `face_padding_voxels`): G's
    activations and the pipeline's float32 buffers (BUFFER_BYTES), times the batch; plus G's fixed
    workspace (FIXED_BYTES), which does not grow with the block.
    """
    voxels = math.prod(largest_read(block, shape, generator_config, face_padding))
    per_voxel = activation_bytes_per_voxel(generator_config, bf16) + BUFFER_BYTES
    return FIXED_BYTES + batch_size * voxels * per_voxel


def largest_read(
    block: Sequence[int], shape: Sequence[int], generator_config: Mapping[str, Any],
    face_padding: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Per axis, the longest input G gets for blocks of `block` output voxels in a volume of `shape`:
    a block's region plus the halo, clipped to the volume padded by `face_padding`."""
    halo = halo_voxels(generator_config)
    face = face_padding_voxels(generator_config, face_padding)
    return tuple(max(a.extent for a in axis_blocks(n, b, h, e)) for b, n, h, e in zip(block, shape, halo, face))


def block_for_budget(
    shape: Sequence[int],
    generator_config: Mapping[str, Any],
    memory_gb: float,
    bf16: bool,
    batch_size: int = 1,
    face_padding: Sequence[int] | None = None,
) -> tuple[int, int, int]:
    """The largest valid block (see `block_layout`) whose `block_peak_bytes` fits `memory_gb` GiB.

    The block grows one axis at a time from 2**depth voxels per axis, along a path set by the
    volume alone, so that a larger budget never gives a smaller block on any axis: each step takes
    the axis whose next size saves the most halo work per byte. An axis only takes sizes that
    lower its number of blocks (`_axis_sizes`), so a block is never larger than the volume needs.
    """
    config = parse_generator_config(generator_config)
    halo, face = halo_voxels(config), face_padding_voxels(config, face_padding)
    sizes = [_axis_sizes(n, c, 2**config.depth) for n, c in zip(shape, DEFAULT_CHUNKS)]
    index = [0, 0, 0]

    def peak(at: Sequence[int]) -> float:
        return block_peak_bytes([s[i] for s, i in zip(sizes, at)], shape, config, bf16, batch_size, face)

    if peak(index) > memory_gb * GIB:
        smallest = [s[0] for s in sizes]
        raise CycledeconError(
            f"deconvolve.memory_gb: {memory_gb:.3g} GiB is too small; the smallest block, {smallest} voxels "
            f"plus a halo of {list(halo)} (face padding {list(face)}, batch_size {batch_size}), needs an estimated "
            f"{peak(index) / GIB:.2f} GiB"
        )
    while growable := [a for a in range(3) if index[a] + 1 < len(sizes[a])]:
        axis = max(growable, key=lambda a: _step_gain(shape[a], halo[a], face[a], sizes[a][index[a]],
                                                      sizes[a][index[a] + 1]))  # fmt: skip
        grown = [i + (a == axis) for a, i in enumerate(index)]
        if peak(grown) > memory_gb * GIB:
            break
        index = grown
    return tuple(s[i] for s, i in zip(sizes, index))


def _axis_sizes(length: int, default_chunk: int, multiple: int) -> list[int]:
    """Valid block sizes along an axis of `length` voxels, ascending: for each number of blocks
    along it, the smallest valid size that needs no more."""
    by_count: dict[int, int] = {}
    for count in range(1, -(-length // multiple) + 1):
        size = _layout_axis(-(-length // count), default_chunk, multiple)[0]
        by_count.setdefault(-(-length // size), size)
    return sorted(set(by_count.values()))


def _step_gain(length: int, halo: int, face: int, size: int, grown: int) -> float:
    """Halo work saved per memory spent when an axis grows from blocks of `size` to `grown`: the log
    ratio of the voxels computed along it (every block's read extent, `axis_blocks`) over that of
    the longest extent; infinite where the longest extent does not grow."""
    before, after = (axis_blocks(length, b, halo, face) for b in (size, grown))
    extent, new_extent = (max(a.extent for a in blocks) for blocks in (before, after))
    if new_extent <= extent:
        return math.inf
    work, new_work = (sum(a.extent for a in blocks) for blocks in (before, after))
    return math.log(work / new_work) / math.log(new_extent / extent)


def default_memory_gb(device: torch.device) -> float:
    """The budget when deconvolve.memory_gb is unset: MEMORY_FRACTION of the memory free on
    `device`, at most MEMORY_CAP_GB (past it, larger blocks save little halo work, and the host
    still holds each block's buffers); FALLBACK_MEMORY_GB where free memory cannot be read."""
    free = _free_memory_bytes(device)
    if free is None:
        return FALLBACK_MEMORY_GB
    return min(MEMORY_FRACTION * free / GIB, MEMORY_CAP_GB)


def _free_memory_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA device, or the host's MemAvailable (Linux /proc/meminfo; None elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def pad_faces(data: da.Array, width: Sequence[int], mode: FaceMode = DEFAULT_FACE_MODE) -> da.Array:
    """Lazily pad each axis by `width` voxels with numpy's `mode` (``reflect`` or ``edge``), even
    past the axis length.

    `dask.array.pad` silently truncates a reflection wider than the axis; here the indices come
    from numpy, which reflects back and forth as often as needed (short z stacks, wide halos).
    """
    for axis, w in enumerate(width):
        if w == 0:
            continue
        index = np.pad(np.arange(data.shape[axis]), w, mode=mode)
        pieces = [da.take(data, index[:w], axis=axis), data, da.take(data, index[-w:], axis=axis)]
        data = da.concatenate(pieces, axis=axis)
    return data


def _block_ranges(size: int, block: int) -> list[tuple[int, int]]:
    return [(start, min(start + block, size)) for start in range(0, size, block)]


def choose_block(
    config: InferenceConfig, shape: Sequence[int], generator_config: Mapping[str, Any], device: torch.device,
    precision: Precision,
) -> tuple[tuple[int, int, int], tuple[int, int, int], float | None]:
    """(block, zarr chunks, budget in GiB) for a run: deconvolve.block_size when given (budget None),
    else the largest block for deconvolve.memory_gb or the device's default budget."""
    if config.block_size is not None:
        return (*block_layout(config.block_size, generator_config), None)
    budget = config.memory_gb or default_memory_gb(device)
    block = block_for_budget(shape, generator_config, budget, precision.bf16, config.batch_size,
                             config.face_padding_voxels)  # fmt: skip
    return (*block_layout(block, generator_config), round(budget, 3))


# --------------------------------------------------------------------------------------- predictor
class BlockPredictor:
    """G on one device: runs batches of equal-shaped blocks and returns G's output on each.

    `precision` (a Precision, or a choice for `resolve_precision`) sets autocast and the memory
    layout; G's weights are moved to that layout here, in place. Outputs are float32 either way.
    """

    def __init__(
        self,
        generator: nn.Module,
        device: torch.device,
        precision: Precision | str,
        on_batch: Callable[[int], Any] | None = None,
    ) -> None:
        self.device = device
        self.precision = precision if isinstance(precision, Precision) else resolve_precision(precision, device)
        self.generator = self.precision.prepare(generator)
        self.on_batch = on_batch  # told the number of blocks done, e.g. a progress bar's update

    def __call__(self, blocks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One forward pass over equal-shaped (z, y, x) blocks, each as read (halo included)."""
        # one writable block is used as it is (a copy costs a fresh array's first touches)
        single = len(blocks) == 1 and blocks[0].flags.writeable
        stacked = blocks[0][None] if single else np.stack(blocks)
        batch = torch.from_numpy(stacked.astype(np.float32, copy=False))[:, None]
        with torch.inference_mode(), self.precision.autocast(self.device):
            out = self.generator(self.precision.layout(batch.to(self.device)))
        out = out[:, 0].float().cpu().contiguous().numpy()
        if self.on_batch is not None:
            self.on_batch(len(blocks))
        return list(out)

    def __dask_tokenize__(self) -> tuple[str, int]:
        # one predictor per run: its identity, not its weights (dask would otherwise pickle G)
        return ("BlockPredictor", id(self))


def deconvolve_lazy(
    data: da.Array,
    predictor: BlockPredictor,
    block_size: Sequence[int],
    batch_size: int,
    halo: Sequence[int],
    face_padding: Sequence[int],
    face_mode: FaceMode = DEFAULT_FACE_MODE,
) -> da.Array:
    """G over a (z, y, x) volume as a lazy float32 dask array chunked by `block_size`: the volume
    padded by `face_padding` (`face_mode`), each block read with `halo` (see the module docstring)."""
    padded = pad_faces(data.astype(np.float32), face_padding, face_mode)
    axes = [axis_blocks(n, b, h, e) for n, b, h, e in zip(data.shape, block_size, halo, face_padding)]
    outputs = np.empty([len(a) for a in axes], dtype=object)
    token = dask.base.tokenize(data.name, predictor, tuple(block_size), tuple(halo), tuple(face_padding), face_mode)
    for number, group in enumerate(_batches(axes, batch_size)):
        inputs = [padded[tuple(slice(a[i].read_start, a[i].read_stop) for a, i in zip(axes, index))]
                  for index in group]  # fmt: skip
        crops = [tuple(a[i].crop for a, i in zip(axes, index)) for index in group]
        key = f"cycledecon-deconvolve-batch-{number}-{token}"
        task = dask.delayed(_predict_kept, pure=True)(predictor, inputs, crops, dask_key_name=key)
        for k, index in enumerate(group):
            shape = tuple(a[i].stop - a[i].start for a, i in zip(axes, index))
            outputs[index] = da.from_delayed(task[k], shape, dtype=np.float32)
    return da.block(outputs.tolist())


def _predict_kept(
    predictor: BlockPredictor, inputs: Sequence[np.ndarray], crops: Sequence[tuple[slice, ...]]
) -> list[np.ndarray]:
    """G on one batch of blocks as read, each cut back to the region it keeps."""
    return [out[crop] for out, crop in zip(predictor(inputs), crops)]


def _batches(axes: Sequence[list[AxisBlock]], batch_size: int) -> list[list[tuple[int, ...]]]:
    """Block indices grouped by the shape G gets (one forward pass needs equal shapes), at most
    `batch_size` per group, in scan order so that a batch holds neighbours."""
    by_shape: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for index in np.ndindex(*(len(a) for a in axes)):
        by_shape.setdefault(tuple(a[i].extent for a, i in zip(axes, index)), []).append(index)
    return [members[i : i + batch_size] for members in by_shape.values() for i in range(0, len(members), batch_size)]


def reference_output(volume: np.ndarray, generator: nn.Module, face_padding: Sequence[int],
                     face_mode: FaceMode = DEFAULT_FACE_MODE) -> np.ndarray:
    """G in one pass on the whole volume padded by `face_padding` (`face_mode`), cropped: what
    blockwise output with that face padding equals."""
    padded = np.pad(volume.astype(np.float32), [(e, e) for e in face_padding], mode=face_mode)
    with torch.inference_mode():
        out = generator(torch.from_numpy(padded)[None, None])[0, 0].numpy()
    return out[tuple(slice(e, e + n) for e, n in zip(face_padding, volume.shape))]


# ------------------------------------------------------------------------------------------ device
@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Set torch's intra-op CPU threads for a block of work and restore them after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------- input checks
def open_input(
    path: str | Path, voxel_size: VoxelSize | None = None, channel: int | None = None
) -> tuple[da.Array, VoxelSize, dict[str, Any]]:
    """A stack as (lazy data, voxel size in µm, cycledecon attributes): an OME-Zarr store or a
    TIFF/OME-TIFF; `voxel_size` overrides the file's metadata."""
    path = Path(path)
    if path.is_dir():
        data, file_voxel_size, attrs = read_ome_zarr(path)
        return data, voxel_size or file_voxel_size, attrs
    stack = read_stack(path, channel=channel, voxel_size=voxel_size)
    return stack.data, stack.voxel_size, dict(stack.metadata)


#: File-name endings dropped from a stack's file name to name it (longest first).
STACK_SUFFIXES = (".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", ".tiff", ".tif")


def stack_name(path: str | Path) -> str:
    """A stack's name from its file name, without `STACK_SUFFIXES` (`wf_01.ome.tif` is `wf_01`)."""
    name = Path(path).name
    for suffix in STACK_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def input_name(path: Path, attrs: Mapping[str, Any]) -> str:
    """The name a deconvolved store inherits from its input, which viewers show: the sample its
    attributes record (the workflow's stores), else an OME-Zarr's own image name, else the file
    name (`stack_name`). So the output is named after the sample, not after its own file."""
    sample = attrs.get("sample")
    if isinstance(sample, str) and sample:
        return sample
    return image_name(path) if path.is_dir() else stack_name(path)


def check_channels(data: da.Array, metadata: Mapping[str, Any], path: Path) -> da.Array:
    """The (z, y, x) volume G expects; a stack whose channel count differs from the model's fails."""
    channels = 1 if data.ndim == 3 else data.shape[0]
    trained = int(metadata.get("channels", 1))
    if channels != trained:
        raise CycledeconError(
            f"{path}: stack has {channels} channel(s) but the model was trained on {trained}; "
            "deconvolve each channel with a model trained on that channel"
        )
    if trained != 1:
        raise CycledeconError(f"{path}: multi-channel models ({trained} channels) are not supported")
    return data if data.ndim == 3 else data[0]


def check_voxel_size(voxel_size: VoxelSize, metadata: Mapping[str, Any], path: Path) -> None:
    """Warn when the stack's voxels differ from the training data's by more than 10 % on an axis:
    G then deconvolves at the wrong physical scale (its learned blur has the wrong size)."""
    trained = metadata.get("voxel_size")
    if trained is None:
        return
    ratios = [v / t for v, t in zip(voxel_size.as_tuple(), trained)]
    if any(abs(r - 1) > VOXEL_SIZE_TOLERANCE for r in ratios):
        log.warning(
            "%s: voxel size %s µm differs from the model's training data %s µm by more than %d %%; "
            "the model will deconvolve at the wrong scale",
            path, list(voxel_size.as_tuple()), list(trained), round(100 * VOXEL_SIZE_TOLERANCE),
        )  # fmt: skip


def normalized_input(
    data: da.Array, voxel_size: VoxelSize, attrs: Mapping[str, Any], metadata: Mapping[str, Any]
) -> tuple[da.Array, dict[str, Any] | None]:
    """The stack as G saw its training data: a normalized store as is, a raw stack normalized
    lazily with the model's stored normalization. Returns the data and its normalization record."""
    stored, wanted = attrs.get("normalization"), metadata.get("normalization")
    if stored is not None:
        if wanted is not None and parse_normalize_config(stored) != parse_normalize_config(wanted):
            log.warning("input was normalized with %s but the model was trained with %s",
                        parse_normalize_config(stored), parse_normalize_config(wanted))  # fmt: skip
        return data, dict(stored)
    if wanted is None:
        log.info("the model records no normalization; feeding the stack as float32")
        return data.astype(np.float32), None
    log.info("raw input: applying the model's normalization %s", parse_normalize_config(wanted))
    return normalize_lazy(data, voxel_size, wanted)


# --------------------------------------------------------------------------------------- provenance
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def config_digest(config: Any) -> str:
    """sha256 of a JSON config with sorted keys: equal configs give equal digests."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def model_identity(path: Path, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies the model that produced an output, recorded in its attributes."""
    return {
        "model_path": str(path.resolve()),
        "model_sha256": file_sha256(path),
        "train_config_sha256": config_digest(metadata.get("config")),
        "campaign": metadata.get("campaign"),
        "trained_with": metadata.get("versions"),
        "cycledecon_version": cycledecon.__version__,
    }


# --------------------------------------------------------------------------------- intensity units
def output_units(
    requested: str, normalization: Mapping[str, Any] | None
) -> tuple[LinearInverse | None, dict[str, Any]]:
    """The inverse to apply to G's output for `requested` units, and the record of the units it gives.

    Returns
    -------
    (inverse, record): the inverse of the stack's normalization (None: the output stays as G
    gives it) and the `intensity` attributes: ``units`` (``input`` or ``normalized``, what the
    output is in), ``requested_units``, ``inverse`` (scale and offset, or None) and, where the
    output is not in the units requested or no normalization was applied, a ``note``.
    A CLAHE (or otherwise non-invertible) normalization leaves the output normalized, with one
    warning: it is a monotone but locally adaptive mapping that no pointwise inverse undoes.
    """
    record: dict[str, Any] = {"units": requested, "requested_units": requested, "inverse": None}
    if normalization is None:
        record.update(units="input", note="no normalization recorded: the network saw the stack's own values")
        return None, record
    if requested == "normalized":
        return None, record
    try:
        inverse = linear_inverse(normalization)
    except CycledeconError as reason:
        log.warning("deconvolve.units is input, but %s: the output stays in normalized units", reason)
        record.update(units="normalized", note=f"{reason}; the output stays in normalized units")
        return None, record
    record.update(inverse={"formula": "input = normalized * scale + offset", "scale": inverse.scale,
                           "offset": inverse.offset}, offset_convention=OFFSET_KEPT)  # fmt: skip
    return inverse, record


def uint16_scale(config: InferenceConfig, units: str, inverse: LinearInverse | None) -> float | None:
    """The uint16 scale of a run (None for float32): the config's, or the default of the output's
    units; warns when it leaves fewer than MIN_UINT16_LEVELS steps across the stack's range."""
    if config.output_dtype != "uint16":
        return None
    scale = config.uint16_scale or DEFAULT_UINT16_SCALE[units]
    if inverse is not None and inverse.scale * scale < MIN_UINT16_LEVELS:
        log.warning("uint16 output at uint16_scale %g keeps only %d levels between the stack's low and high "
                    "percentiles; set deconvolve.uint16_scale or use output_dtype float32",
                    scale, round(inverse.scale * scale))  # fmt: skip
    return scale


class ClipTally:
    """Voxels clipped while the output is computed, counted once per block and summed into `counts`.

    `counts` is a plain dict placed in the output's attributes: `write_ome_zarr` writes the
    attributes after the data, so it then holds the totals. A block computed twice (a pyramid level
    reading it again) replaces its own count instead of adding to it.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.counts: dict[str, int] = {name: 0 for name in names}
        self._blocks: dict[tuple[int, ...], dict[str, int]] = {}

    def add(self, block: tuple[int, ...], clipped: Mapping[str, int]) -> None:
        self._blocks[block] = dict(clipped)
        for name in self.counts:
            self.counts[name] = sum(b.get(name, 0) for b in self._blocks.values())

    def __dask_tokenize__(self) -> tuple[str, int]:
        return ("ClipTally", id(self))


def map_output_block(
    block: np.ndarray,
    inverse: LinearInverse | None,
    clip_negative: bool,
    scale: float | None,
    tally: ClipTally,
    block_info: dict | None = None,
) -> np.ndarray:
    """One block of G's output in the output's units and dtype, its clipped voxels told to `tally`.

    `inverse` (when given) maps it to the input's units; `clip_negative` sets values below 0 to 0;
    a `scale` stores round(value × scale) as uint16, clipped to [0, 65535].
    """
    out = inverse.apply(block) if inverse is not None else np.asarray(block, dtype=np.float32)
    negative = int(np.count_nonzero(out < 0)) if clip_negative else 0
    above = 0
    if clip_negative:
        out = np.maximum(out, np.float32(0))
    if scale is not None:
        out = np.rint(out * np.float32(scale))
        above = int(np.count_nonzero(out > UINT16_MAX))
        out = np.clip(out, 0, UINT16_MAX).astype(np.uint16)
    if block_info is not None:  # None: dask probing the output type, not a block of the volume
        location = tuple(start for start, _ in block_info[None]["array-location"])
        tally.add(location, {"negative": negative, "above_uint16": above})
    return out


def report_clipping(counts: Mapping[str, int], intensity: Mapping[str, Any]) -> None:
    """Log the clipped voxel counts; warn when uint16 saturated (information is lost there)."""
    log.info("output in %s units, %s: %d voxel(s) clipped at 0, %d above uint16", intensity["units"],
             intensity["dtype"], counts["negative"], counts["above_uint16"])  # fmt: skip
    if counts["above_uint16"]:
        log.warning("%d voxel(s) exceeded 65535 at uint16_scale %g and were clipped; use output_dtype float32 "
                    "or a smaller deconvolve.uint16_scale", counts["above_uint16"], intensity["uint16_scale"])


def to_output(
    volume: da.Array, inverse: LinearInverse | None, clip_negative: bool, scale: float | None, tally: ClipTally
) -> da.Array:
    """G's lazy float32 output in the output's units and dtype (`map_output_block` per block)."""
    dtype = np.uint16 if scale is not None else np.float32
    return volume.map_blocks(map_output_block, inverse, clip_negative, scale, tally, dtype=dtype,
                             meta=np.empty((0, 0, 0), dtype))  # fmt: skip


# -------------------------------------------------------------------------------------- entry point
@local_dask()
def deconvolve_file(
    input_path: str | Path,
    model_path: str | Path,
    output_path: str | Path,
    config: InferenceConfig | Mapping[str, Any] | None = None,
    *,
    voxel_size: VoxelSize | None = None,
    channel: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Deconvolve one stack with a trained model into an OME-Zarr, block by block.

    The input's values are checked first, as at ingest (NaN/Inf or a constant stack is one line
    naming the file): a single non-finite voxel would otherwise spread through G's receptive field.

    G works in normalized units; with ``units: input`` (the default) its output is mapped back
    through the inverse of the stack's percentile normalization and clipped at 0, so it lies in
    the raw stack's intensity units with the offset kept, beside the Richardson–Lucy baselines
    (`output_units`). The attributes' ``deconvolution.intensity`` record the units, the inverse
    applied, the dtype and uint16 scale, and how many voxels were clipped.

    Parameters
    ----------
    input_path : a normalized OME-Zarr (from the normalize rule), a raw OME-Zarr or a raw
        TIFF/OME-TIFF; raw stacks get the model's stored normalization first.
    model_path : model.pt from training.
    output_path : the OME-Zarr to write (atomically; same axes, voxel size and pyramid as ingest,
        NGFF `config.ngff_version`, named after the input's sample: `input_name`); never one of the
        inputs, and an existing path only if it is an earlier cycledecon store (anything, with
        `overwrite`).
    config : the `deconvolve:` section (see InferenceConfig).
    voxel_size : voxel size in µm, overriding the file's metadata.
    channel : channel to take from a multi-channel TIFF.
    threads : torch CPU threads when config.threads is unset (Snakemake: the rule's threads).
    progress : show a tqdm bar over blocks.
    overwrite : replace whatever is at `output_path` (never an input).
    """
    config = parse_inference_config(config)
    input_path, model_path = Path(input_path), Path(model_path)
    check_output(output_path, [input_path, model_path], overwrite=overwrite)
    device = resolve_device(config.device, "deconvolve.device")
    precision = resolve_precision(config.precision, device)
    generator, metadata = load_model(model_path, device)
    data, voxel_size, attrs = open_input(input_path, voxel_size, channel)
    data = check_channels(data, metadata, input_path)
    check_values(data, input_path)
    check_voxel_size(voxel_size, metadata, input_path)
    data, normalization = normalized_input(data, voxel_size, attrs, metadata)
    if parse_generator_config(metadata["generator"]).norm == "instance":
        log.warning("instance-norm model: each block is normalized by its own statistics; seams may show")

    halo = halo_voxels(metadata["generator"])
    face = face_padding_voxels(metadata["generator"], config.face_padding_voxels)
    block, chunks, budget = choose_block(config, data.shape, metadata["generator"], device, precision)
    peak = block_peak_bytes(block, data.shape, metadata["generator"], precision.bf16, config.batch_size, face)
    blocks = math.prod(-(-n // b) for n, b in zip(data.shape, block))
    log.info("deconvolving %s %s on %s (%s): %d blocks of %s (%s), halo %s, face padding %s, "
             "estimated peak %.2f GiB", input_path, data.shape, device, precision.name, blocks, block,
             "deconvolve.block_size" if budget is None else f"for a budget of {budget:.2f} GiB",
             halo, face, peak / GIB)  # fmt: skip
    inverse, intensity = output_units(config.units, normalization)
    scale = uint16_scale(config, intensity["units"], inverse)
    clip_negative = intensity["units"] == "input" or scale is not None
    tally = ClipTally(["negative", "above_uint16"])
    # tally.counts itself, filled in while the data are written (before the attributes are)
    intensity.update(dtype=config.output_dtype, clip_min=0.0 if clip_negative else None,
                     stored_as="round(value * uint16_scale)" if scale is not None else "value",
                     uint16_scale=scale, clipped_voxels=tally.counts)  # fmt: skip
    record = {
        **model_identity(model_path, metadata),
        "device": str(device), "precision": precision.name, "halo_voxels": list(halo),
        "face_padding_voxels": list(face), "block_size": list(block),
        "memory_gb": budget, "estimated_peak_gb": round(peak / GIB, 3),
        "boundary": config.face_padding_mode, "output_dtype": config.output_dtype, "uint16_scale": scale, "intensity": intensity,
    }  # fmt: skip
    out_attrs = {**attrs, "normalization": normalization, "deconvolution": record}
    with tqdm(total=blocks, unit="block", desc="deconvolve", disable=not progress) as bar, \
            torch_threads(config.threads or threads or torch.get_num_threads()), \
            dask.config.set(scheduler=dask.local.get_sync):  # fmt: skip
        predictor = BlockPredictor(generator, device, precision, on_batch=bar.update)
        lazy = deconvolve_lazy(data, predictor, block, config.batch_size, halo, face, config.face_padding_mode)
        volume = to_output(lazy, inverse, clip_negative, scale, tally)
        written = write_ome_zarr(volume, output_path, voxel_size, out_attrs, chunks, overwrite=overwrite,
                                 name=input_name(input_path, attrs), ngff_version=config.ngff_version)  # fmt: skip
    report_clipping(tally.counts, intensity)
    return written

"""The `deconvolve:` config section (see cycledecon.deconvolve for how a stack is deconvolved)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from cycledecon.config.devices import Device, PrecisionChoice
from cycledecon.config.parse import check_ranges, parse_section

#: deconvolve.units values (the CLI's --units choices).
Units = Literal["input", "normalized"]
UNITS: tuple[str, ...] = get_args(Units)
#: deconvolve.output_dtype values (the CLI's --output-dtype choices).
OutputDtype = Literal["float32", "uint16"]
OUTPUT_DTYPES: tuple[str, ...] = get_args(OutputDtype)
#: deconvolve.ngff_version values (the CLI's --ngff-version choices): the OME-Zarr version written,
#: cycledecon.io.NGFF_FORMATS spelled out so that parsing the config does not import zarr.
NgffVersion = Literal["0.5", "0.4"]
NGFF_VERSIONS: tuple[str, ...] = get_args(NgffVersion)
#: deconvolve.face_padding_mode values: numpy padding modes of the stack's outer faces.
FaceMode = Literal["reflect", "edge"]
#: deconvolve.face_padding_mode when unset: the face plane repeated, so haze from beyond a face
#: does not peak there as in-focus structure would.
DEFAULT_FACE_MODE: FaceMode = "edge"
#: deconvolve.uint16_scale when unset, per unit of the output: whole counts in the input's units
#: (the raw stack's own numbers); steps of 1e-4 up to 6.5 in normalized units, where the input
#: lies in [0, 1] and sharpening raises peaks above 1.
DEFAULT_UINT16_SCALE = {"input": 1.0, "normalized": 10000.0}
#: Earlier names of deconvolve.precision values.
PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16"}
#: The most GiB the default block budget takes (cycledecon.deconvolve.default_memory_gb).
MEMORY_CAP_GB = 16.0
#: deconvolve.face_padding_voxels when unset, (z, y, x) (cycledecon.deconvolve.face_padding_voxels):
#: per axis enough context for face blocks to score as with the full halo; axially more, where haze
#: from planes beyond the stack meets its faces.
DEFAULT_FACE_PADDING_VOXELS = (16, 8, 8)


@dataclass(frozen=True)
class InferenceConfig:
    """The `deconvolve:` config section.

    block_size: (z, y, x) output voxels per block, rounded up to a multiple of 2**depth and of
        the output's zarr chunks (the default chunks, or the block where that is smaller). Each
        block is computed with G's receptive field as halo on every side, so larger blocks waste
        less work but need more memory. Default (null): the largest block that fits `memory_gb`
        (`block_for_budget`); a block given here is used as is, whatever the budget.
    memory_gb: GiB that a batch of blocks may take (G's activations and the block's buffers, by
        `block_peak_bytes`), used to choose the block. Default (null): `default_memory_gb`, half
        the memory free on the device (host MemAvailable, or free GPU memory), at most
        MEMORY_CAP_GB.
    face_padding_voxels: (z, y, x) voxels of padding at the volume's outer faces, or one
        number for all three axes; rounded up to a multiple of 2**depth, at most the halo (more
        gives the same output). Blocks always read the full halo from each other; this only sets
        how much padded context G gets at the stack's faces, and face blocks cost G less work the
        smaller it is. Default (null): DEFAULT_FACE_PADDING_VOXELS.
    face_padding_mode: ``edge`` (the face plane repeated; DEFAULT_FACE_MODE) or ``reflect`` (the
        stack mirrored at its faces, the face plane not repeated). Haze from structure beyond a face rises towards it;
        mirrored, it peaks on the face plane as an in-focus structure would, repeated it does not.
        Train with the matching train.ring_at_faces (``mirror`` or ``edge``).
    batch_size: blocks of equal shape per forward pass (helps a GPU with small blocks).
    device: ``auto`` (CUDA, else Apple MPS, else the CPU; see cycledecon.precision), ``cpu``,
        ``cuda`` or ``mps``.
    precision: ``auto`` (bf16 autocast with channels-last where the CPU or GPU runs bf16
        natively, fp32 elsewhere; see cycledecon.precision), ``bf16`` or ``fp32``. The old names
        ``bfloat16`` and ``float32`` are accepted for ``bf16`` and ``fp32``.
    units: ``input`` (default): G's output mapped back through the inverse of the stack's linear
        percentile normalization into the raw stack's intensity units, offset kept as the
        Richardson–Lucy baselines keep it, and clipped at 0. ``normalized``: G's output as it
        comes (the low/high percentiles at 0/1, values may be negative). A CLAHE-normalized
        stack has no inverse: its output stays normalized, with a warning and the attributes
        saying so.
    output_dtype: ``float32``, or ``uint16`` storing round(value × uint16_scale), clipped to
        [0, 65535]; scale and clipped voxel counts are recorded in the attributes.
    uint16_scale: see output_dtype; default (null): DEFAULT_UINT16_SCALE of the output's units,
        1 in input units (whole counts), 10000 in normalized units.
    threads: torch CPU threads; default: the rule's threads (torch's own default from the CLI).
    ngff_version: OME-Zarr version of the output: ``"0.5"`` (zarr v3, the default) or ``"0.4"``
        (zarr v2) for viewers that cannot read zarr v3 yet. YAML reads an unquoted 0.4 as a number;
        it is taken as the version it spells.
    """

    block_size: tuple[int, int, int] | None = None
    memory_gb: float | None = None
    face_padding_voxels: tuple[int, int, int] | None = None
    face_padding_mode: FaceMode = DEFAULT_FACE_MODE
    batch_size: int = 1
    device: Device = "auto"
    precision: PrecisionChoice = "auto"
    units: Units = "input"
    output_dtype: OutputDtype = "float32"
    uint16_scale: float | None = None
    threads: int | None = None
    ngff_version: NgffVersion = "0.5"


def parse_inference_config(
    section: InferenceConfig | Mapping[str, Any] | None, prefix: str = "deconvolve"
) -> InferenceConfig:
    """An InferenceConfig from the plain `deconvolve:` dict; a bad key or value names its path."""
    if isinstance(section, InferenceConfig):
        return section
    section = dict(section or {})
    if isinstance(section.get("precision"), str) and section["precision"] in PRECISION_ALIASES:
        section["precision"] = PRECISION_ALIASES[section["precision"]]
    if isinstance(section.get("face_padding_voxels"), int) and not isinstance(section["face_padding_voxels"], bool):
        section["face_padding_voxels"] = [section["face_padding_voxels"]] * 3
    if isinstance(section.get("ngff_version"), float):
        section["ngff_version"] = str(section["ngff_version"])
    config = parse_section(InferenceConfig, section, prefix)
    checks = [
        ("block_size", config.block_size is None or all(b >= 1 for b in config.block_size)),
        ("memory_gb", config.memory_gb is None or config.memory_gb > 0),
        ("face_padding_voxels", config.face_padding_voxels is None or min(config.face_padding_voxels) >= 0),
        ("batch_size", config.batch_size >= 1),
        ("uint16_scale", config.uint16_scale is None or config.uint16_scale > 0),
        ("threads", config.threads is None or config.threads >= 1),
    ]
    check_ranges(config, prefix, checks)
    return config

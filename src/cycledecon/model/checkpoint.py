"""model.pt: writing it atomically and loading the generator back for inference.

model.pt is a torch file holding only plain data (loadable with ``weights_only=True``):
``format``/``format_version`` markers, ``generator_state`` (G's state dict), ``learned_psf``
(tensor or None) and ``metadata``: the training config, generator config, receptive field,
normalization, patch shape, channel count, voxel size (µm), campaign, library versions and the
learned PSF's sanity record ``psf_sanity`` (optional: a model without it loads as well).

A model file is untrusted input: `load_model` reads it weights-only, then checks the metadata it
uses against bounds and the state's tensors against the network the metadata describes, all before
G is allocated; anything else is one CycledeconError line naming the file and the field.
"""

from __future__ import annotations

import math
import re
import reprlib
import typing
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cycledecon.atomic import atomic_path
from cycledecon.config.normalize import NormalizeConfig, parse_normalize_config
from cycledecon.config.parse import parse_section
from cycledecon.config.train import GeneratorConfig
from cycledecon.errors import CycledeconError
from cycledecon.model.unet import UNet3d, rename_upsample_then_conv_keys

FORMAT = "cycledecon-model"
FORMAT_VERSION = 1
METADATA_KEYS = ("generator", "receptive_field", "patch_shape", "channels", "normalization",
                 "voxel_size")
#: Normalization methods inference applies to raw stacks (NormalizeConfig.method).
NORMALIZE_METHODS = typing.get_args(typing.get_type_hints(NormalizeConfig)["method"])
#: Deepest G a model file may declare: at depth 6 G's receptive-field radius is already about 500
#: voxels, so the inference halo alone is wider than the stacks G is tiled over; deeper is no model.
MAX_DEPTH = 6
#: Widest G a model file may declare at full resolution (channels double at each level below); far
#: beyond any G the pipeline trains, and with MAX_DEPTH it keeps the shapes computable.
MAX_BASE_CHANNELS = 256
#: Largest G, in parameters (1 GiB in float32), that a model file may describe.
MAX_PARAMETERS = 2**28
#: Largest learned PSF side, in voxels: kernels are blurs within training patches, never this large.
MAX_PSF_SIDE = 1025


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through `atomic_path`, so a crash never leaves a torn file and only a regular
    file is replaced."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_model(
    path: Path, generator: nn.Module, metadata: dict[str, Any], learned_psf: np.ndarray | None
) -> Path:
    """Write model.pt; `metadata` must hold at least METADATA_KEYS, as plain data."""
    missing = [k for k in METADATA_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"model metadata lacks {missing}")
    atomic_save(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "generator_state": generator.state_dict(),
            "learned_psf": None if learned_psf is None else torch.as_tensor(learned_psf),
            "metadata": metadata,
        },
        path,
    )
    return Path(path)


def load_model(path: Path | str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load G in eval mode on `device`, with its metadata (plus ``learned_psf`` as an array or None).

    Raises CycledeconError for a missing file, one that is not a cycledecon model, or one whose
    metadata, weights or learned PSF fail validation (checked before G is allocated).
    """
    path = Path(path)
    if not path.is_file():
        raise CycledeconError(f"{path}: no such model file")
    payload = read_payload(path)
    metadata = check_metadata(payload.get("metadata"), path)
    config = check_generator_config(metadata["generator"], path)
    state = check_generator_state(payload.get("generator_state"), config, path)
    metadata["learned_psf"] = check_learned_psf(payload.get("learned_psf"), path)
    generator = UNet3d(config)
    try:
        generator.load_state_dict(state)
    except RuntimeError as error:
        raise CycledeconError(f"{path}: generator_state: weights do not fit ({first_line(error)})") from None
    return generator.to(device).eval(), metadata


def read_payload(path: Path) -> dict[str, Any]:
    """The file's plain-data payload, loaded weights-only on the CPU, with its format checked."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles, naming weights_only
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign, truncated or hostile files
        raise CycledeconError(f"{path}: not a cycledecon model ({load_failure(error, path)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CycledeconError(f"{path}: not a cycledecon model (no '{FORMAT}' marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CycledeconError(
            f"{path}: model format version {short(payload.get('format_version'))} is not supported "
            f"(this cycledecon reads version {FORMAT_VERSION})"
        )
    return payload


def check_metadata(metadata: Any, path: Path) -> dict[str, Any]:
    """The metadata as a dict, with the fields inference uses checked; other keys pass as they are,
    since older models lack the newer ones and newer ones may add more."""
    if not isinstance(metadata, dict):
        raise CycledeconError(f"{path}: not a cycledecon model (metadata is {short(metadata)}, not a mapping)")
    missing = [k for k in METADATA_KEYS if k not in metadata]
    if missing:
        raise CycledeconError(f"{path}: not a cycledecon model (metadata lacks {', '.join(missing)})")
    checks = [
        ("receptive_field", is_triple(metadata["receptive_field"], lambda v: is_int(v) and v >= 0),
         "three voxel counts >= 0"),
        ("patch_shape", is_triple(metadata["patch_shape"], lambda v: is_int(v) and v >= 1), "three voxel counts >= 1"),
        ("channels", is_int(metadata["channels"]) and metadata["channels"] >= 1, "a channel count >= 1"),
        ("voxel_size", is_triple(metadata["voxel_size"], lambda v: is_number(v) and math.isfinite(v) and v > 0),
         "three finite sizes > 0 (µm)"),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise CycledeconError(f"{path}: metadata.{key}: expected {expected}, got {short(metadata[key])}")
    check_normalization(metadata["normalization"], path)
    check_psf_sanity(metadata.get("psf_sanity"), path)
    return dict(metadata)


def check_psf_sanity(record: Any, path: Path) -> None:
    """The learned PSF's sanity record (cycledecon.psf_sanity): absent, None, or a mapping whose
    ``warnings`` are a list of texts (what a reader of the model shows)."""
    if record is None:
        return
    if not isinstance(record, dict) or not all(isinstance(k, str) for k in record):
        raise CycledeconError(f"{path}: metadata.psf_sanity: expected a mapping, got {short(record)}")
    warnings = record.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise CycledeconError(f"{path}: metadata.psf_sanity.warnings: expected a list of texts, got {short(warnings)}")


def check_normalization(record: Any, path: Path) -> None:
    """The stored normalization: None or a mapping; one of the methods inference can apply to a raw
    stack (percentile, clahe) is parsed with its bounds, other records pass as written by the store."""
    if record is None:
        return
    if not isinstance(record, dict) or not all(isinstance(k, str) for k in record):
        raise CycledeconError(f"{path}: metadata.normalization: expected a mapping, got {short(record)}")
    if record.get("method") in NORMALIZE_METHODS:
        try:
            parse_normalize_config(record, "metadata.normalization")
        except CycledeconError as error:
            raise CycledeconError(f"{path}: {error}") from None


def check_generator_config(section: Any, path: Path) -> GeneratorConfig:
    """G's config from the metadata, bounded (MAX_DEPTH, MAX_BASE_CHANNELS, MAX_PARAMETERS) so that a
    forged file cannot make the network, or even its shapes, larger than any real model."""
    try:
        config = parse_section(GeneratorConfig, section, "metadata.generator")
    except CycledeconError as error:
        raise CycledeconError(f"{path}: {error}") from None
    for key, bound in (("depth", MAX_DEPTH), ("base_channels", MAX_BASE_CHANNELS)):
        if not 1 <= getattr(config, key) <= bound:
            raise CycledeconError(f"{path}: metadata.generator.{key}: expected 1 to {bound}, "
                                  f"got {getattr(config, key)}")
    parameters = sum(t.numel() for t in expected_state(config).values())
    if parameters > MAX_PARAMETERS:
        raise CycledeconError(f"{path}: metadata.generator: describes a network of {parameters} parameters, "
                              f"more than the {MAX_PARAMETERS} a model may have")
    return config


def expected_state(config: GeneratorConfig) -> dict[str, torch.Tensor]:
    """G's state dict on the meta device: names, shapes and dtypes without allocating any data."""
    with torch.device("meta"):
        return UNet3d(config).state_dict()


def check_generator_state(state: Any, config: GeneratorConfig, path: Path) -> dict[str, torch.Tensor]:
    """The weights, checked against the network `config` describes: same names and shapes, dense
    real tensors backed by the file's own data (no stride tricks claiming more), all finite."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):  # fmt: skip
        raise CycledeconError(f"{path}: generator_state: expected a mapping of names to tensors, got {short(state)}")
    state = dict(state)
    rename_upsample_then_conv_keys(state)
    expected = expected_state(config)
    names = sorted(set(expected) ^ set(state))
    if names:
        what = "missing" if names[0] in expected else "unexpected"
        raise CycledeconError(f"{path}: generator_state: does not fit metadata.generator ({what} {names[0]})")
    for name, tensor in state.items():
        want = expected[name]
        if tensor.shape != want.shape:
            raise CycledeconError(f"{path}: generator_state.{name}: shape {tuple(tensor.shape)} does not fit "
                                  f"metadata.generator (expected {tuple(want.shape)})")
        if tensor.layout != torch.strided or tensor.is_complex() or tensor.is_floating_point() != want.is_floating_point():
            raise CycledeconError(f"{path}: generator_state.{name}: expected a dense {want.dtype} tensor, "
                                  f"got {short(tensor)}")
    if not backed_by_data(list(state.values())):
        raise CycledeconError(f"{path}: generator_state: tensors claim more values than the file holds")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CycledeconError(f"{path}: generator_state.{name}: contains NaN or Inf values")
    return state


def check_learned_psf(psf: Any, path: Path) -> np.ndarray | None:
    """The learned PSF as an array, or None: a dense, finite 3D float kernel with odd sizes of at
    most MAX_PSF_SIDE voxels, as training writes it."""
    if psf is None:
        return None
    ok = (
        isinstance(psf, torch.Tensor) and psf.layout == torch.strided and psf.is_floating_point()
        and psf.ndim == 3 and all(n % 2 == 1 and n <= MAX_PSF_SIDE for n in psf.shape) and backed_by_data([psf])
    )  # fmt: skip
    if not ok:
        raise CycledeconError(f"{path}: learned_psf: expected a 3D float kernel with odd sizes of at most "
                              f"{MAX_PSF_SIDE} voxels, got {short(psf)}")
    if not bool(torch.isfinite(psf).all()):
        raise CycledeconError(f"{path}: learned_psf: contains NaN or Inf values")
    return psf.numpy() if psf.dtype in (torch.float32, torch.float64) else psf.float().numpy()


def backed_by_data(tensors: list[torch.Tensor]) -> bool:
    """Whether the tensors' values fit in their distinct storages, i.e. in data the file holds: a
    forged zero stride or shared storage could otherwise claim any size from a few bytes."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(t.numel() * t.element_size() for t in tensors) <= sum(storages.values())


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_triple(value: Any, ok: Any) -> bool:
    """Whether `value` is a list or tuple of three items that each pass `ok`."""
    return isinstance(value, (list, tuple)) and len(value) == 3 and all(ok(v) for v in value)


def short(value: Any) -> str:
    """A bounded one-line description of a (possibly forged, possibly huge) value for a message."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} {value.layout} tensor of shape {tuple(value.shape)}"
    return reprlib.repr(value).replace("\n", " ")


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (torch's run over several)."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def load_failure(error: BaseException, path: Path) -> str:
    """Why torch.load failed, in one line of our own words: torch's messages advise retrying with
    weights_only=False (which would run whatever the file holds), so no line of theirs that mentions
    weights_only, torch.load or trusting the file is passed on."""
    if not zipfile.is_zipfile(path):
        return "unreadable: not a PyTorch archive, or a truncated one; model.pt is written by cycledecon train"
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    if found:
        return f"it holds Python objects ({found.group(1)}) besides tensors and plain data; refused without loading them"
    advice = re.compile(r"weights.only|torch\.load|trust|safe_globals|file an issue", re.IGNORECASE)
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not advice.search(line)]
    return f"unreadable: {lines[0] if lines else type(error).__name__}"

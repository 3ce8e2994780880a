"""model.pt: writing it atomically and loading the generator back for inference.

model.pt is a torch file holding only plain data (loadable with ``weights_only=True``):
``format``/``format_version`` markers, ``generator_state`` (G's state dict), ``learned_psf``
(tensor or None) and ``metadata``: the training config, generator config, receptive field,
normalization, patch shape, channel count, voxel size (µm), campaign and library versions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cycledecon.errors import CycledeconError
from cycledecon.model.unet import UNet3d

FORMAT = "cycledecon-model"
FORMAT_VERSION = 1
METADATA_KEYS = ("generator", "receptive_field", "patch_shape", "channels", "normalization",
                 "voxel_size")


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary sibling, then rename, so a crash never leaves a torn file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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

    Raises CycledeconError for a missing file or one that is not a cycledecon model.
    """
    path = Path(path)
    if not path.is_file():
        raise CycledeconError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types for foreign or truncated files
        raise CycledeconError(f"{path}: not a cycledecon model (unreadable: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CycledeconError(f"{path}: not a cycledecon model (no '{FORMAT}' marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CycledeconError(
            f"{path}: model format version {payload.get('format_version')!r} is not supported "
            f"(this cycledecon reads version {FORMAT_VERSION})"
        )
    metadata = dict(payload.get("metadata") or {})
    missing = [k for k in METADATA_KEYS if k not in metadata]
    if missing:
        raise CycledeconError(f"{path}: not a cycledecon model (metadata lacks {', '.join(missing)})")
    generator = UNet3d(metadata["generator"])
    try:
        generator.load_state_dict(payload["generator_state"])
    except RuntimeError as error:
        raise CycledeconError(f"{path}: not a cycledecon model (weights do not fit: {error})") from None
    psf = payload.get("learned_psf")
    metadata["learned_psf"] = None if psf is None else psf.cpu().numpy()
    return generator.to(device).eval(), metadata

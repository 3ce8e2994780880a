"""The cycle-consistent deconvolution model: generator, PSF layer, discriminators, model files.

Names are imported on first use, so `cycledecon.model.config` (which the Snakefile parses with)
does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name → submodule that defines it.
EXPORTS = {
    "load_model": "checkpoint", "save_model": "checkpoint", "GeneratorConfig": "config",
    "TrainConfig": "config", "parse_config": "config", "CycleModel": "cyclegan", "build_model": "cyclegan",
    "PsfLayer": "psf_layer", "fft_convolve": "psf_layer", "UNet3d": "unet",
    "receptive_field": "unet",
}
__all__ = sorted(EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{EXPORTS[name]}"), name)

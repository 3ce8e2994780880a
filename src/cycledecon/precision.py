"""Where and how the networks run, for training and inference alike: the device, then the numeric
precision and memory layout on it.

Device (`resolve_device`): ``auto`` takes a CUDA GPU when torch sees one, else Apple MPS when
available, else the CPU; ``cuda`` or ``mps`` asked for explicitly must be available, ``cpu`` always is.

Precision (`resolve_precision`): ``auto`` picks bf16 autocast with channels-last on CUDA devices
that support bf16 and on CPUs with native bf16 instructions (x86 AVX-512 BF16 or AMX, Arm BF16);
an emulated bf16 path can be slower than float32, so other CPUs stay in float32, and so does MPS,
whose autocast depends on the torch and macOS release. ``bf16`` and ``fp32`` force the choice.
FFTs (the PSF layer) always run in float32 (see cycledecon.psf.layer).
"""

from __future__ import annotations

import contextlib
import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cycledecon.config.devices import DEVICES, PRECISIONS
from cycledecon.errors import CycledeconError

NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # /proc/cpuinfo flags (x86, Arm "Features")


def resolve_device(choice: str, setting: str = "device") -> torch.device:
    """The device for `choice` (one of DEVICES; rules in the module doc). `setting` names the
    config key, e.g. ``train.device``, in the error for a device this machine lacks."""
    if choice not in DEVICES:
        raise ValueError(f"{setting} must be one of {', '.join(DEVICES)}, got {choice!r}")
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if choice == "auto":
        choice = next(name for name in DEVICES[1:] if available[name])
    elif not available[choice]:
        raise CycledeconError(f"{setting}: {choice} is not available on this machine; use auto or cpu")
    return torch.device(choice)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU executes bf16 arithmetic in hardware (Linux: read from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.system() == "Darwin" and platform.machine() == "arm64"  # Apple M2 and later
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & NATIVE_BF16_FLAGS)


@dataclass(frozen=True)
class Precision:
    """How the networks run: autocast to bf16 (or not) and channels-last 3D memory layout."""

    bf16: bool

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context for a forward pass on `device` (a no-op for fp32)."""
        return torch.autocast(device.type, torch.bfloat16, enabled=self.bf16)

    def prepare(self, module: nn.Module) -> nn.Module:
        """Move a network's weights to the layout its inputs will have."""
        return module.to(memory_format=torch.channels_last_3d) if self.bf16 else module

    def layout(self, batch: torch.Tensor) -> torch.Tensor:
        """An (n, c, z, y, x) batch in the layout the network expects."""
        return batch.contiguous(memory_format=torch.channels_last_3d) if self.bf16 else batch


def resolve_precision(choice: str, device: torch.device) -> Precision:
    """The precision for `choice` on `device`; ``auto`` follows the hardware (module doc)."""
    if choice not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {choice!r}")
    if choice != "auto":
        return Precision(bf16=choice == "bf16")
    if device.type == "cuda":
        return Precision(bf16=torch.cuda.is_bf16_supported())
    return Precision(bf16=device.type == "cpu" and cpu_has_native_bf16())

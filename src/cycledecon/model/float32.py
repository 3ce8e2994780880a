"""Parts of a network that run in float32 under bf16 autocast while gradients are computed.

torch's CPU bf16 backward of a 3D convolution can return NaN for the U-Net's deepest level
(a few voxels per axis) and the discriminators; in float32 those small parts cost little. Without
gradients (inference) they stay in bf16: torch's float32 3D convolution has no fast kernel for the
channels-last layout bf16 runs in.
"""

from __future__ import annotations

import torch
from torch import nn


def run_in_float32(module: nn.Module, volume: torch.Tensor) -> torch.Tensor:
    """`module(volume)`, computed in float32 when autocast is on and gradients are enabled, as it
    is otherwise."""
    if not torch.is_autocast_enabled(volume.device.type) or not torch.is_grad_enabled():
        return module(volume)
    with torch.autocast(volume.device.type, enabled=False):
        return module(volume.float())

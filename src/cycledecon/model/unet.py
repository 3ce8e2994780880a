"""The generator: a 3D U-Net for single-channel volumes, and its receptive field for tiled inference.

Each level has two 3³ convolutions (norm, activation); levels are joined by 2× max pooling on the
way down and nearest-neighbour 2× upsampling followed by a 3³ convolution on the way up (a freely
learned stride-2 transposed convolution printed a 2-voxel checkerboard on the demo), with skip
connections. The output is residual (input + correction) when configured, so an untrained G is close
to the identity.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cycledecon.config.train import GeneratorConfig, parse_generator_config
from cycledecon.model.float32 import run_in_float32

KERNEL = 3
CONVS_PER_LEVEL = 2
#: Per axis, the taps of a 4-tap stride-2 transposed convolution from those of a 3-tap convolution
#: applied after nearest 2× upsampling: output 2m sums inputs m-1 (tap 3) and m (tap 1), output
#: 2m+1 sums inputs m (tap 2) and m+1 (tap 0), each input tap the sum of the 3-tap weights that
#: land on it.
FOLD = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    return nn.Identity()


def _activation(kind: str) -> nn.Module:
    # in place where torch allows it: no new full-size tensor per activation, in training or inference
    return {"leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True), "relu": lambda: nn.ReLU(inplace=True),
            "gelu": nn.GELU}[kind]()


def _conv_block(c_in: int, c_out: int, config: GeneratorConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(CONVS_PER_LEVEL):
        layers += [
            nn.Conv3d(c_in if i == 0 else c_out, c_out, KERNEL, padding=KERNEL // 2),
            _norm(config.norm, c_out),
            _activation(config.activation),
        ]
    return nn.Sequential(*layers)


class NearestUpConv3d(nn.Module):
    """Nearest-neighbour 2× upsampling followed by a 3³ convolution (zero padding 1), computed as one
    stride-2 transposed convolution with the 4³ kernel folded from the 3³ one (`FOLD` per axis):
    the same function, without the upsampled tensor and with 8 instead of 27 taps per output voxel."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, KERNEL, padding=KERNEL // 2)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        fold = FOLD.to(self.conv.weight)
        # (out, in, 3, 3, 3) -> (in, out, 4, 4, 4), the transposed convolution's weight layout
        weight = torch.einsum("ai,bj,ck,oxijk->xoabc", fold, fold, fold, self.conv.weight)
        return F.conv_transpose3d(volume, weight, self.conv.bias, stride=2, padding=1)


def max_pool_2x(volume: torch.Tensor) -> torch.Tensor:
    """2× max pooling of (n, c, z, y, x) with even sizes. Without gradients it is three pairwise
    maxima over strided views: the same values as max_pool3d at less cost on CPU;
    with gradients max_pool3d, whose backward sends a tied maximum's gradient to one voxel."""
    if torch.is_grad_enabled():
        return F.max_pool3d(volume, 2)
    pairs = volume.unflatten(2, (-1, 2)).unflatten(4, (-1, 2)).unflatten(6, (-1, 2))  # (n, c, z, 2, y, 2, x, 2)
    pairs = torch.maximum(pairs[:, :, :, 0], pairs[:, :, :, 1])
    pairs = torch.maximum(pairs[:, :, :, :, 0], pairs[:, :, :, :, 1])
    return torch.maximum(pairs[..., 0], pairs[..., 1])


#: The up-steps' weights as saved when each was nn.Sequential(Upsample, Conv3d).
_UPSAMPLE_THEN_CONV_KEY = re.compile(r"^up\.(\d+)\.1\.(weight|bias)$")


def rename_upsample_then_conv_keys(state: dict[str, Any], prefix: str = "") -> None:
    """Rename, in place, the keys of a G state dict (under `prefix`) saved with the earlier layout of
    the up-steps (`up.N.1.*`) to this one (`up.N.conv.*`): the weights are the same."""
    for key in [k for k in state if k.startswith(prefix)]:
        renamed = _UPSAMPLE_THEN_CONV_KEY.sub(r"up.\1.conv.\2", key[len(prefix):])
        if renamed != key[len(prefix):]:
            state[prefix + renamed] = state.pop(key)


def _rename_on_load(module: nn.Module, state: dict[str, Any], prefix: str, *_: Any) -> None:
    rename_upsample_then_conv_keys(state, prefix)


class UNet3d(nn.Module):
    """3D U-Net mapping (n, 1, z, y, x) to the same shape; any spatial size of at least 2**depth.

    Sizes that are not a multiple of 2**depth are reflect-padded at the high end and cropped back,
    so odd tiles need no special handling by the caller.
    """

    def __init__(self, config: GeneratorConfig | dict[str, Any]) -> None:
        super().__init__()
        config = parse_generator_config(config)
        self.config = config
        widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
        self.down = nn.ModuleList(
            _conv_block(1 if level == 0 else widths[level - 1], widths[level], config)
            for level in range(config.depth)
        )
        self.bottom = _conv_block(widths[-2], widths[-1], config)
        self.up = nn.ModuleList(NearestUpConv3d(widths[level + 1], widths[level]) for level in range(config.depth))
        self.merge = nn.ModuleList(
            _conv_block(2 * widths[level], widths[level], config) for level in range(config.depth)
        )
        self.head = nn.Conv3d(widths[0], 1, 1)
        self.register_load_state_dict_pre_hook(_rename_on_load)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        size = volume.shape[-3:]
        multiple = 2**self.config.depth
        pad = [(-n) % multiple for n in size]
        h = F.pad(volume, (0, pad[2], 0, pad[1], 0, pad[0]), mode="reflect") if any(pad) else volume
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = max_pool_2x(h)
        h = run_in_float32(self.bottom, h)  # see cycledecon.model.float32
        for level in reversed(range(self.config.depth)):
            h = torch.cat([self.up[level](h), skips.pop()], dim=1)
            for layer in self.merge[level]:  # one by one, so that each input is freed once used
                h = layer(h)
        out = self.head(h)[..., : size[0], : size[1], : size[2]]
        return volume + out if self.config.residual else out


def receptive_field(config: GeneratorConfig | dict[str, Any]) -> tuple[int, int, int]:
    """Radius (voxels, per axis z, y, x) of the input region that can affect one output voxel.

    Walks the deepest path of the U-Net: a k³ convolution at voxel spacing j adds (k-1)/2·j, a 2×
    pooling adds j (its window is one-sided) and doubles j; a nearest 2× upsampling halves j and
    adds nothing more (it maps back onto the same pair of voxels that pooling merged), and the 3³
    convolution after it adds (k-1)/2·j like any other. Inference uses this as its block halo. It is exact for
    `norm: batch` or `none`; with instance norm the tile statistics also reach further.
    """
    config = parse_generator_config(config)
    per_conv = (KERNEL - 1) // 2
    radius, spacing = 0, 1
    for _ in range(config.depth):
        radius += CONVS_PER_LEVEL * per_conv * spacing + spacing
        spacing *= 2
    radius += CONVS_PER_LEVEL * per_conv * spacing
    for _ in range(config.depth):
        spacing //= 2
        radius += (1 + CONVS_PER_LEVEL) * per_conv * spacing
    return (radius, radius, radius)

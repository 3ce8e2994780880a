"""Small 3D PatchGAN discriminator, scored with the least-squares GAN loss.

A PatchGAN judges local texture (here: how blurred or sharp a neighbourhood looks) rather than
global content, which is what separates the two domains of unpaired microscopy patches.
"""

from __future__ import annotations

import torch
from torch import nn

from cycledecon.config.train import DiscriminatorConfig
from cycledecon.model.float32 import run_in_float32


class PatchDiscriminator3d(nn.Module):
    """`layers` stride-2 4³ convolutions (instance norm after the first), then a 3³ score map."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i in range(config.layers):
            c_out = config.base_channels * 2**i
            layers.append(nn.Conv3d(c_in, c_out, 4, stride=2, padding=1))
            if i > 0:
                layers.append(nn.InstanceNorm3d(c_out, affine=True))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c_out
        layers.append(nn.Conv3d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return run_in_float32(self.net, volume)  # see cycledecon.model.float32


def lsgan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017): mean (score - 1)² for real, score² for fake."""
    return ((scores - float(real)) ** 2).mean()

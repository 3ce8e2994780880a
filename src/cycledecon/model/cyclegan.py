"""The cycle-consistent model: G deblurs (A → B), F blurs (B → A), one PatchGAN per domain.

F is the learnable PSF layer H (Lim & Ye 2020) or, for the ablation, a second U-Net (classic
CycleGAN); everything else is shared. A is the blurred widefield domain (y), B the sharp one (x).

Losses (weights from LossConfig):
  adversarial_a · LSGAN(D_A(F(x)))   — the blurred domain: this is what identifies the PSF
  adversarial_b · LSGAN(D_B(G(y)))
  cycle · (‖F(G(y)) − y‖₁ + ‖G(F(x)) − x‖₁)
  identity · ‖G(x) − x‖₁            — sharp input should stay as it is
  spectral · mean |log P(F(x)) − log P(y)| — batch power spectra of the blurred domain must agree;
      for a PSF, |OTF|² = P(y)/P(x), so this gives H a direct, low-variance signal that the
      discriminator only provides after it has learned to see blur
  psf_center · centre-of-mass offset², psf_smooth · relative roughness (PSF layer only)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cycledecon.model.config import LossConfig, TrainConfig
from cycledecon.model.discriminator import PatchDiscriminator3d, lsgan_loss
from cycledecon.model.psf_layer import SPATIAL, PsfLayer
from cycledecon.model.unet import UNet3d


class CycleModel(nn.Module):
    """G, F and the two discriminators, with the loss terms of one training step."""

    def __init__(self, g: nn.Module, f: nn.Module, d_a: nn.Module, d_b: nn.Module) -> None:
        super().__init__()
        self.g, self.f, self.d_a, self.d_b = g, f, d_a, d_b

    def generator_losses(
        self, y: torch.Tensor, x: torch.Tensor, weights: LossConfig
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Total G/F loss, its named terms, and the fakes (F(x), G(y)) for the discriminator step."""
        fake_a, fake_b = self.f(x), self.g(y)
        terms = {
            "adv_a": lsgan_loss(self.d_a(fake_a), real=True),
            "adv_b": lsgan_loss(self.d_b(fake_b), real=True),
            "cycle": F.l1_loss(self.f(fake_b), y) + F.l1_loss(self.g(fake_a), x),
        }
        if weights.identity > 0:
            terms["identity"] = F.l1_loss(self.g(x), x)
        if weights.spectral > 0:
            terms["spectral"] = spectral_loss(fake_a, y)
        terms |= self.psf_penalties(weights)
        scale = {"adv_a": weights.adversarial_a, "adv_b": weights.adversarial_b,
                 "cycle": weights.cycle, "identity": weights.identity,
                 "spectral": weights.spectral, "psf_center": weights.psf_center,
                 "psf_smooth": weights.psf_smooth}
        total = sum(scale[name] * value for name, value in terms.items())
        return total, terms, (fake_a, fake_b)

    def psf_penalties(self, weights: LossConfig) -> dict[str, torch.Tensor]:
        """PSF regularizers; empty for the two-generator ablation, which has no kernel."""
        if not isinstance(self.f, PsfLayer):
            return {}
        terms = {}
        if weights.psf_center > 0:
            terms["psf_center"] = self.f.center_penalty()
        if weights.psf_smooth > 0:
            terms["psf_smooth"] = self.f.smooth_penalty()
        return terms

    def discriminator_losses(
        self, y: torch.Tensor, x: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """LSGAN loss of both discriminators on real patches and detached fakes."""
        terms = {
            "d_a": 0.5 * (lsgan_loss(self.d_a(y), True) + lsgan_loss(self.d_a(fake_a.detach()), False)),
            "d_b": 0.5 * (lsgan_loss(self.d_b(x), True) + lsgan_loss(self.d_b(fake_b.detach()), False)),
        }
        return terms["d_a"] + terms["d_b"], terms

    @torch.no_grad()
    def after_step(self, ema_decay: float) -> None:
        """Per-step bookkeeping after the optimizers: the PSF layer's kernel average."""
        if isinstance(self.f, PsfLayer) and self.f.logits.requires_grad:
            self.f.update_ema(ema_decay)

    @torch.no_grad()
    def psf_estimate(self, shape: tuple[int, int, int]) -> torch.Tensor:
        """The PSF this model has learned, (z, y, x), unit sum.

        The PSF layer's (moving-average) kernel; for the two-generator ablation the impulse
        response of F, F(δ + c) − F(c) on a flat background c, clipped and normalized, so both
        variants can be compared in the same figures.
        """
        if isinstance(self.f, PsfLayer):
            return self.f.ema_kernel.clone()
        device = next(self.f.parameters()).device
        background = torch.full((1, 1, *[2 * n for n in shape]), 0.1, device=device)
        impulse = background.clone()
        impulse[0, 0, shape[0], shape[1], shape[2]] += 1.0
        was_training = self.f.training
        self.f.eval()
        response = (self.f(impulse) - self.f(background))[0, 0].float()
        self.f.train(was_training)
        centre = [slice(n - n // 2, n + n // 2 + 1) for n in shape]
        kernel = response[tuple(centre)].clamp_min(0)
        return kernel / kernel.sum().clamp_min(1e-12)

    @torch.no_grad()
    def cycle_loss(self, y: torch.Tensor, x: torch.Tensor) -> float:
        """Validation cycle loss ‖F(G(y)) − y‖₁ + ‖G(F(x)) − x‖₁."""
        return float(F.l1_loss(self.f(self.g(y)), y) + F.l1_loss(self.g(self.f(x)), x))


def power_spectrum(batch: torch.Tensor) -> torch.Tensor:
    """Batch-mean power spectrum of Hann-windowed, mean-free (n, 1, z, y, x) patches."""
    with torch.autocast(batch.device.type, enabled=False):
        batch = batch.float()
        window = 1.0
        for axis, n in zip(SPATIAL, batch.shape[-3:]):
            shape = [1] * batch.ndim
            shape[axis] = n
            window = window * torch.hann_window(n, periodic=False, device=batch.device).view(shape)
        centred = batch - batch.mean(dim=SPATIAL, keepdim=True)
        return (torch.fft.rfftn(centred * window, dim=SPATIAL).abs() ** 2).mean(dim=(0, 1))


def spectral_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean |log P(fake) − log P(real)| with a floor at the noise power of `real`.

    The floor (median power in the highest-frequency octant, where a blurred image holds only
    noise) makes frequencies lost in noise count as equal instead of pushing F to add detail.
    """
    p_fake, p_real = power_spectrum(fake), power_spectrum(real).detach()
    nz, ny = p_real.shape[0], p_real.shape[1]
    corner = p_real[nz // 4 : nz - nz // 4, ny // 4 : ny - ny // 4, p_real.shape[2] // 2 :]
    floor = corner.median() + 1e-6 * p_real.max()
    return (torch.log(p_fake + floor) - torch.log(p_real + floor)).abs().mean()


def build_model(config: TrainConfig, initial_psf: np.ndarray | None) -> CycleModel:
    """Assemble the model; `initial_psf` (odd (z, y, x)) is required for the PSF-layer variant."""
    if config.model == "psf_layer":
        if initial_psf is None:
            raise ValueError("the psf_layer model needs an initial PSF")
        f: nn.Module = PsfLayer(initial_psf, config.psf.learnable, config.psf.symmetric)
    else:
        f = UNet3d(config.generator)
    return CycleModel(
        UNet3d(config.generator), f,
        PatchDiscriminator3d(config.discriminator), PatchDiscriminator3d(config.discriminator),
    )

"""The cycle-consistent model: G deblurs (A → B), F blurs (B → A), one PatchGAN per domain.

F is the learnable PSF layer H (Lim & Ye 2020) or, for the ablation, a second U-Net (classic
CycleGAN); everything else is shared. A is the blurred widefield domain (y), B the sharp one (x).

F's fakes carry simulated widefield noise when the model has a noise model (ñ, cycledecon.noise):
real widefield patches are noisy, so without it D_A could tell fakes by texture and G would learn
to invert a noiseless blur.

Losses (weights from LossConfig):
  adversarial_a · LSGAN(D_A(F(x) + ñ))   — the blurred domain: this is what identifies the PSF
  adversarial_b · LSGAN(D_B(G(y)))
  cycle_blurred · ‖F(G(y)) − y‖₁ + cycle_sharp · ‖G(F(x) + ñ) − x‖₁
  identity · ‖G(x) − x‖₁            — sharp input should stay as it is
  psf_center · centre-of-mass offset², psf_smooth · relative roughness (PSF layer only)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cycledecon.model.config import LossConfig, OptimConfig, PsfConfig, TrainConfig
from cycledecon.model.discriminator import PatchDiscriminator3d, lsgan_loss
from cycledecon.model.psf_layer import PsfLayer
from cycledecon.model.unet import UNet3d
from cycledecon.noise import NoiseModel


class CycleModel(nn.Module):
    """G, F and the two discriminators, with the loss terms of one training step."""

    def __init__(self, g: nn.Module, f: nn.Module, d_a: nn.Module, d_b: nn.Module,
                 noise: NoiseModel | None = None, generator_ema: float = 0.0) -> None:
        super().__init__()
        self.g, self.f, self.d_a, self.d_b = g, f, d_a, d_b
        self.noise = noise
        # the average is written by update_parameters, never by an optimizer: no gradients for it
        self.g_average = (AveragedModel(g, multi_avg_fn=get_ema_multi_avg_fn(generator_ema),
                                        use_buffers=True).requires_grad_(False)
                          if generator_ema > 0 else None)

    @property
    def deblurrer(self) -> nn.Module:
        """The G that is validated and exported: its weight average when the model keeps one."""
        return self.g if self.g_average is None else self.g_average.module

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) plus, when the model has one, simulated widefield noise (see cycledecon.noise)."""
        blurred = self.f(x)
        return blurred if self.noise is None else self.noise.sample(blurred)

    def generator_losses(
        self, y: torch.Tensor, x: torch.Tensor, weights: LossConfig
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Total G/F loss, its named terms, and the fakes (F(x), G(y)) for the discriminator step."""
        fake_a, fake_b = self.blur(x), self.g(y)
        terms = {
            "adv_a": lsgan_loss(self.d_a(fake_a), real=True),
            "adv_b": lsgan_loss(self.d_b(fake_b), real=True),
            "cycle_blurred": F.l1_loss(self.f(fake_b), y),
            "cycle_sharp": F.l1_loss(self.g(fake_a), x),
        }
        if weights.identity > 0:
            terms["identity"] = F.l1_loss(self.g(x), x)
        terms |= self.psf_penalties(weights)
        scale = {"adv_a": weights.adversarial_a, "adv_b": weights.adversarial_b,
                 "cycle_blurred": weights.cycle_blurred, "cycle_sharp": weights.cycle_sharp,
                 "identity": weights.identity,
                 "psf_center": weights.psf_center,
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

    def f_param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        """Adam parameter groups of F: the PSF's widths at lr_psf and its free logits at
        lr_psf_free; F's U-Net (ablation) at lr_g. Frozen parameters are left out."""
        if isinstance(self.f, PsfLayer):
            groups = [([self.f.log_sigma], optim.lr_psf), ([self.f.logits], optim.lr_psf_free)]
        else:
            groups = [(list(self.f.parameters()), optim.lr_g)]
        return [{"params": [p for p in params if p.requires_grad], "lr": lr} for params, lr in groups]

    @torch.no_grad()
    def after_step(self, step: int, psf: PsfConfig) -> None:
        """Bookkeeping after optimizer step `step` (1-based): end of the PSF's Gaussian phase, its
        kernel average, and G's weight average."""
        if self.g_average is not None:
            self.g_average.update_parameters(self.g)
        if isinstance(self.f, PsfLayer) and self.f.logits.requires_grad:
            if step >= psf.gaussian_steps:
                self.f.release()
            self.f.update_ema(psf.ema)

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
        """Validation cycle loss ‖F(G(y)) − y‖₁ + ‖G(F(x)) − x‖₁, with the exported G."""
        g = self.deblurrer
        return float(F.l1_loss(self.f(g(y)), y) + F.l1_loss(g(self.f(x)), x))


def build_model(config: TrainConfig, initial_psf: np.ndarray | None,
                noise: NoiseModel | None = None) -> CycleModel:
    """Assemble the model; `initial_psf` (odd (z, y, x)) is required for the PSF-layer variant,
    `noise` is added to F's output in training."""
    if config.model == "psf_layer":
        if initial_psf is None:
            raise ValueError("the psf_layer model needs an initial PSF")
        f: nn.Module = PsfLayer(initial_psf, config.psf.learnable, config.psf.symmetric,
                                gaussian_phase=config.psf.gaussian_steps > 0
                                and config.psf.init == "gaussian" and config.psf.file is None)
    else:
        f = UNet3d(config.generator)
    return CycleModel(
        UNet3d(config.generator), f,
        PatchDiscriminator3d(config.discriminator), PatchDiscriminator3d(config.discriminator), noise,
        config.optim.generator_ema,
    )

"""The cycle-consistent model: G deblurs (A → B), F blurs (B → A), one PatchGAN per domain.

F is the learnable PSF layer H (Lim & Ye 2020) or, for the ablation, a second U-Net (classic
CycleGAN); everything else is shared. A is the blurred widefield domain (y), B the sharp one (x).

F's fakes carry simulated widefield noise when the model has a noise model (ñ, cycledecon.noise):
real widefield patches are noisy, so without it D_A could tell fakes by texture and G would learn
to invert a noiseless blur.

Patches may come with a *context margin* (`margin` voxels on each side): G, the discriminators and
every loss see only the centre; F sees the margin too, so light from outside the patch enters F(x)
as it does in the microscope. In the blurred cycle the margin around G(y) is the widefield stack
itself (G runs on the centre only, which keeps a step affordable): out-of-patch light reaches the
centre through the PSF's broad out-of-focus cone, which blurs the observed margin much as it would
its sharp version.

With a *generator context* (a ring inside the margin) G sees the patch plus that ring in training
and its output is cropped back to the patch: at inference G always runs with real context around
every voxel, so training it on bare patches leaves its deeper levels untrained on what they see
there. F(x) is then computed over the patch and the ring (the kernel must fit the margin less the
ring), so the sharp cycle's G gets the same context.

Losses (weights from LossConfig):
  adversarial_a · LSGAN(D_A(F(x) + ñ))   — the blurred domain: this is what identifies the PSF
  adversarial_b · LSGAN(D_B(G(y)))     — D_B is used (and trained) only when this weight is > 0
  cycle_blurred · ‖F(G(y)) − y‖₁ + cycle_sharp · ‖G(F(x) + ñ) − x‖₁ (or ‖·‖₂², cycle_sharp_distance)
  identity · ‖G(x) − x‖₁            — sharp input should stay as it is
  psf_center · centre-of-mass offset², psf_smooth · relative roughness (PSF layer only)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cycledecon.config.train import LossConfig, OptimConfig, PsfConfig, TrainConfig
from cycledecon.model.discriminator import PatchDiscriminator3d, lsgan_loss
from cycledecon.model.unet import UNet3d
from cycledecon.noise import NoiseModel
from cycledecon.psf.layer import NO_MARGIN, Margin, PsfLayer, crop_margin, with_centre
from cycledecon.psf.pupil import PupilPsf


SHARP_DISTANCE = {"l1": F.l1_loss, "l2": F.mse_loss}  # LossConfig.cycle_sharp_distance
#: torch padding mode of each TrainConfig.ring_at_faces fill, as numpy's reflect / edge / zeros at inference
FACE_FILL_MODE = {"mirror": "reflect", "edge": "replicate", "zero": "constant"}


class Faces(NamedTuple):
    """What G's ring holds past a stack's faces in training (TrainConfig.ring_at_faces) and each
    patch's room to its faces, (n, 3, 2), for the widefield (y) and the reference (x) batch."""

    fill: str
    y_room: torch.Tensor
    x_room: torch.Tensor


class CycleModel(nn.Module):
    """G, F and the two discriminators, with the loss terms of one training step."""

    def __init__(self, g: nn.Module, f: nn.Module, d_a: nn.Module, d_b: nn.Module,
                 noise: NoiseModel | None = None, generator_ema: float = 0.0,
                 margin: Margin = NO_MARGIN, ema_start: int = 0,
                 generator_context: Margin = NO_MARGIN) -> None:
        super().__init__()
        if any(c < 0 or c > m for c, m in zip(generator_context, margin)):
            raise ValueError(f"generator context {tuple(generator_context)} must lie within the "
                             f"context margin {tuple(margin)}")
        self.g, self.f, self.d_a, self.d_b = g, f, d_a, d_b
        self.noise = noise
        self.margin = tuple(margin)
        self.ring = tuple(generator_context)
        # what to crop from a patch with its margin to get the patch with G's ring
        self.g_margin = tuple(m - c for m, c in zip(margin, generator_context))
        self.ema_start = ema_start  # G's weight average takes the steps after this one
        # the average is written by update_parameters, never by an optimizer: no gradients for it
        self.g_average = (AveragedModel(g, multi_avg_fn=get_ema_multi_avg_fn(generator_ema),
                                        use_buffers=True).requires_grad_(False)
                          if generator_ema > 0 else None)

    @property
    def deblurrer(self) -> nn.Module:
        """The G that is validated and exported: its weight average once that has started."""
        if self.g_average is None or int(self.g_average.n_averaged) == 0:
            return self.g
        return self.g_average.module

    def centre(self, volume: torch.Tensor) -> torch.Tensor:
        """The patch without its context margin."""
        return crop_margin(volume, self.margin)

    def forward_blur(self, volume: torch.Tensor, margin: Margin | None = None,
                     centre: torch.Tensor | None = None) -> torch.Tensor:
        """F of patches with their margin, cropped by `margin` (default: the whole margin); with
        `centre`, of the patches whose centre it replaces (the PSF layer then carries gradients to
        `centre` only)."""
        margin = self.margin if margin is None else margin
        if isinstance(self.f, PsfLayer):
            return self.f(volume, margin, centre)
        return crop_margin(self.f(volume if centre is None else with_centre(volume, centre)), margin)

    def with_ring(self, volume: torch.Tensor) -> torch.Tensor:
        """The patch with G's context ring, from the patch with its whole margin."""
        return crop_margin(volume, self.g_margin)

    def deblur(self, g: nn.Module, volume: torch.Tensor) -> torch.Tensor:
        """`g` on a patch with G's ring, cropped to the patch."""
        return crop_margin(g(volume), self.ring)

    def noisy(self, blurred: torch.Tensor) -> torch.Tensor:
        """Simulated widefield noise added to F's output, when the model has a noise model."""
        return blurred if self.noise is None else self.noise.sample(blurred)

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) plus, when the model has one, simulated widefield noise (see cycledecon.noise)."""
        return self.noisy(self.forward_blur(x))

    def past_faces(self, volume: torch.Tensor, room: torch.Tensor, fill: str) -> torch.Tensor:
        """Patches with G's ring where the ring's part past the stack holds `fill`: ``mirror``, the
        inside reflected at the face (numpy ``reflect``), ``edge``, the face's voxels repeated
        (numpy ``edge``), as inference pads with deconvolve.face_padding_mode, or ``zero``, nothing
        (as inference without face padding); `room` (n, 3, 2) is each patch's distance to its
        stack's faces (z, y, x; before, after)."""
        mode = FACE_FILL_MODE[fill]
        out = []
        for sample, sample_room in zip(volume, room.tolist()):
            # ring voxels past each face, (z before, z after, y before, …), then cut and padded back
            past = [max(0, ring - side) for sides, ring in zip(sample_room, self.ring) for side in sides]
            inside = sample[..., past[0] : sample.shape[-3] - past[1], past[2] : sample.shape[-2] - past[3],
                            past[4] : sample.shape[-1] - past[5]]
            out.append(F.pad(inside[None], (past[4], past[5], past[2], past[3], past[0], past[1]), mode=mode)[0])
        return torch.stack(out)

    def generator_losses(
        self, y: torch.Tensor, x: torch.Tensor, weights: LossConfig, faces: Faces | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Total G/F loss, its named terms, and the fakes (F(x), G(y)) for the discriminator step.

        y and x carry the context margin; both of F's inputs go through it in one call, so the
        closed-form intensity map is computed once per step. With `faces` (see `past_faces`), G's
        ring around F(x) (``mirror``: widefield patches hold their stack mirrored already), or
        around both F(x) and y (``edge``, ``zero``), is refilled where it reaches past the stack."""
        y_centre, x_centre = self.centre(y), self.centre(x)
        y_ring = self.with_ring(y)
        if faces is not None and faces.fill != "mirror" and any(self.ring):
            y_ring = self.past_faces(y_ring, faces.y_room, faces.fill)
        fake_b = self.deblur(self.g, y_ring)
        # the sharp patches keep their own centre
        blurred = self.forward_blur(torch.cat([x, y]), self.g_margin, centre=torch.cat([x_centre, fake_b]))
        fake_a_ring = self.noisy(blurred[: len(x)])
        if faces is not None and any(self.ring):
            fake_a_ring = self.past_faces(fake_a_ring, faces.x_room, faces.fill)
        fake_a, cycled_a = crop_margin(fake_a_ring, self.ring), crop_margin(blurred[len(x) :], self.ring)
        terms = {
            "adv_a": lsgan_loss(self.d_a(fake_a), real=True),
            "cycle_blurred": F.l1_loss(cycled_a, y_centre),
            "cycle_sharp": SHARP_DISTANCE[weights.cycle_sharp_distance](self.deblur(self.g, fake_a_ring), x_centre),
        }
        if weights.adversarial_b > 0:
            terms["adv_b"] = lsgan_loss(self.d_b(fake_b), real=True)
        if weights.identity > 0:
            terms["identity"] = F.l1_loss(self.deblur(self.g, self.with_ring(x)), x_centre)
        terms |= self.psf_penalties(weights)
        scale = {"adv_a": weights.adversarial_a, "adv_b": weights.adversarial_b,
                 "cycle_blurred": weights.cycle_blurred, "cycle_sharp": weights.cycle_sharp,
                 "identity": weights.identity,
                 "psf_center": weights.psf_center,
                 "psf_smooth": weights.psf_smooth}
        total = sum(scale[name] * value for name, value in terms.items())
        return total, terms, (fake_a, fake_b)

    def psf_penalties(self, weights: LossConfig) -> dict[str, torch.Tensor]:
        """Regularizers of a free PSF kernel."""
        if not isinstance(self.f, PsfLayer) or self.f.pupil is not None:
            return {}  # the two-generator ablation has no kernel; a pupil's is centred by construction
        terms = {}
        if weights.psf_center > 0:
            terms["psf_center"] = self.f.center_penalty()
        if weights.psf_smooth > 0:
            terms["psf_smooth"] = self.f.smooth_penalty()
        return terms

    def discriminator_losses(
        self, y: torch.Tensor, x: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor, weights: LossConfig
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """LSGAN loss of the discriminators on real patches (y, x with their margin) and detached fakes.

        D_B is trained only when G's sharp-domain adversarial term uses it: an idle D_B costs a
        step's time for nothing, and a diverging one would turn G's total loss to NaN through 0 · NaN."""
        y, x = self.centre(y), self.centre(x)
        terms = {"d_a": 0.5 * (lsgan_loss(self.d_a(y), True) + lsgan_loss(self.d_a(fake_a.detach()), False))}
        if weights.adversarial_b > 0:
            terms["d_b"] = 0.5 * (lsgan_loss(self.d_b(x), True) + lsgan_loss(self.d_b(fake_b.detach()), False))
        return sum(terms.values()), terms

    def f_param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        """Adam parameter groups of F: a free PSF's widths at lr_psf and its logits at lr_psf_free,
        a pupil's parameters at lr_pupil; F's U-Net (ablation) at lr_g. Frozen ones are left out."""
        if isinstance(self.f, PsfLayer):
            widths, logits = self.f.free_parameters()
            first_rate = optim.lr_pupil if self.f.pupil is not None else optim.lr_psf
            groups = [(widths, first_rate), (logits, optim.lr_psf_free)]
        else:
            groups = [(list(self.f.parameters()), optim.lr_g)]
        return [{"params": [p for p in params if p.requires_grad], "lr": lr} for params, lr in groups]

    @torch.no_grad()
    def after_step(self, step: int, psf: PsfConfig) -> None:
        """Bookkeeping after optimizer step `step` (1-based): a pupil's NA bound, end of the PSF's
        Gaussian phase, its kernel average, and G's weight average."""
        if self.g_average is not None and step > self.ema_start:
            self.g_average.update_parameters(self.g)
        if isinstance(self.f, PsfLayer) and self.f.learnable:
            if self.f.pupil is not None:
                self.f.pupil.project()
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
        """Validation cycle loss ‖F(G(y)) − y‖₁ + ‖G(F(x)) − x‖₁ with the exported G (y, x with margin)."""
        g = self.deblurrer
        y_centre, x_centre = self.centre(y), self.centre(x)
        cycled = self.forward_blur(y, centre=self.deblur(g, self.with_ring(y)))
        sharp_cycled = self.deblur(g, self.forward_blur(x, self.g_margin))
        return float(F.l1_loss(cycled, y_centre) + F.l1_loss(sharp_cycled, x_centre))

def build_model(config: TrainConfig, initial_psf: np.ndarray | None,
                noise: NoiseModel | None = None, margin: Margin = NO_MARGIN,
                pupil: PupilPsf | None = None) -> CycleModel:
    """Assemble the model; `initial_psf` (odd (z, y, x)) is required for the PSF-layer variant,
    `noise` is added to F's output in training, `margin` is the patches' context margin and `pupil`
    the PSF model when `psf.parameterization` is ``pupil``."""
    if config.model == "psf_layer":
        if initial_psf is None:
            raise ValueError("the psf_layer model needs an initial PSF")
        f: nn.Module = PsfLayer(initial_psf, config.psf.learnable, config.psf.symmetric,
                                gaussian_phase=config.psf.gaussian_steps > 0
                                and config.psf.init == "gaussian" and config.psf.file is None,
                                pupil=pupil)
    else:
        f = UNet3d(config.generator)
    return CycleModel(
        UNet3d(config.generator), f,
        PatchDiscriminator3d(config.discriminator), PatchDiscriminator3d(config.discriminator), noise,
        config.optim.generator_ema, margin, config.optim.decay_begins, config.generator_context,
    )

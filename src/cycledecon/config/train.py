"""The `train:` config section as frozen dataclasses with defaults, parsed and validated from a dict.

The defaults are config/config.yaml's, which train the demo campaign on a CPU; an unknown key, a
wrong type or an out-of-range value raises CycledeconError naming the dotted key (e.g.
``train.optim.lr_g``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from cycledecon.config.devices import Device, PrecisionChoice
from cycledecon.config.parse import check_ranges, odd_sizes, parse_section, plain
from cycledecon.errors import CycledeconError


@dataclass(frozen=True)
class GeneratorConfig:
    """3D U-Net G (and F in the two-generator ablation).

    depth: number of 2× downsamplings; patches are padded internally to a multiple of 2**depth.
    base_channels: channels at full resolution, doubled at each level.
    norm: ``none`` (default) keeps G one pure convolution network in training and inference, so
        tiled inference with a receptive-field halo is seamless. ``batch`` is also seamless at
        inference, but its running statistics mix G's two kinds of input (real widefield patches
        and simulated F(x)), so G in eval mode differs from G in training. ``instance``
        normalizes each patch/tile by its own statistics (tiles then differ slightly).
    activation: ``leaky_relu`` | ``relu`` | ``gelu``.
    residual: output = input + correction; the network starts near the identity, which is a good
        deblurring prior and keeps early adversarial gradients meaningful.
    """

    depth: int = 3
    base_channels: int = 8
    norm: Literal["batch", "instance", "none"] = "none"
    activation: Literal["leaky_relu", "relu", "gelu"] = "leaky_relu"
    residual: bool = True


@dataclass(frozen=True)
class DiscriminatorConfig:
    """3D PatchGAN: `layers` stride-2 4³ convolutions starting at `base_channels`.

    Capacity matters for the PSF: a discriminator that falls to chance level early stops pulling
    the kernel towards the real blur, and the kernel drifts.
    """

    base_channels: int = 16
    layers: int = 3


@dataclass(frozen=True)
class PsfConfig:
    """Learnable PSF layer H.

    parameterization: ``free`` (one value per voxel, the paper's kernel) or ``pupil`` (the
        vectorial pupil model of cycledecon.psf.pupil, started from the campaign's optics, with
        `spherical_terms` spherical-aberration coefficients and the effective NA learned).
    shape_voxels: odd (z, y, x) kernel size; ignored when size_um or energy is given.
    size_um: (z, y, x) kernel extent in µm, converted with the patch store's voxel size (rounded up
        to odd voxel counts).
    energy: when set and the campaign's optics are known, the kernel is the smallest box holding
        this share of the theoretical PSF computed on the largest box the patches' context margin
        allows (see patches.context_um).
    init: ``gaussian`` (broad Gaussian, sigma = init_sigma_voxels or a sixth of the kernel size) or
        ``theoretical`` (cycledecon.psf.theory.widefield_psf from the store's optics).
    learnable: false freezes H (non-blind mode) at `file` (a TIFF) or at the initial kernel.
    symmetric: average the kernel with its x and y mirror images; widefield PSFs of an aligned
        system are mirror-symmetric laterally, and this halves the unknowns.
    gaussian_steps: for this many first steps H is an anisotropic Gaussian with three learnable
        widths, then free (see PsfLayer); 0 starts free.
    ema: decay of the exponential moving average of the kernel that is saved and evaluated
        (0 disables); it removes the step-to-step jitter of adversarial training.
    """

    parameterization: Literal["free", "pupil"] = "pupil"
    shape_voxels: tuple[int, int, int] = (9, 15, 15)
    size_um: tuple[float, float, float] | None = None
    energy: float | None = 0.95
    spherical_terms: int = 2
    init: Literal["gaussian", "theoretical"] = "gaussian"
    init_sigma_voxels: tuple[float, float, float] | None = None
    learnable: bool = True
    symmetric: bool = True
    gaussian_steps: int = 100
    ema: float = 0.95
    file: str | None = None


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (see cycledecon.model.cyclegan for the terms).

    cycle_blurred weighs ‖F(G(y)) − y‖₁ (data consistency on real stacks; 10 as in CycleGAN),
    cycle_sharp the distance of G(F(x)) to x (G learns to undo the simulated blur and noise on
    sharp references). Low cycle weights let the kernel drift from the true blur, so adversarial_a
    stays at 1: the blurred-domain GAN is what identifies the PSF. adversarial_b, the sharp-domain
    GAN, is off by default: it pushes G towards the look of the references, which trades fidelity
    (PSNR) for sharpness (SSIM); set it for the paper's full objective.
    cycle_sharp_distance: ``l1`` or ``l2`` (mean squared error) for the sharp cycle: an L1 fit of
    sparse references is satisfied by their median, which an unchanged input comes close to; L2
    fits their bright cores.
    identity (‖G(x) − x‖₁) is off by default; psf_center pins the kernel's centre of mass (only z
    is free when `psf.symmetric`); psf_smooth is an optional roughness penalty, off by default.
    """

    adversarial_a: float = 1.0
    adversarial_b: float = 0.0
    cycle_blurred: float = 10.0
    cycle_sharp: float = 300.0
    cycle_sharp_distance: Literal["l1", "l2"] = "l2"
    identity: float = 0.0
    psf_center: float = 1.0
    psf_smooth: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    """Adam settings; learning rates decay linearly to zero from `decay_start` (default: half way)
    to `steps`. lr_g 1e-3 rather than CycleGAN's 2e-4: a short CPU run needs the larger step.
    lr_psf is for the PSF's three widths in its Gaussian phase; lr_psf_free for its free logits
    after; lr_pupil for a pupil model's parameters (radians of aberration, log of the NA's scale): Adam
    moves a parameter by about lr per step, so a pupil driven by a noisy adversarial gradient
    drifts by about lr·√steps; 1e-3 keeps that drift small while a consistent pull still moves it.
    F's U-Net in the two-generator ablation uses lr_g.

    generator_ema: decay of the exponential moving average of G's weights that is validated and
    exported (0 exports the last G); it averages over about 1 / (1 − decay) steps. The average
    starts where the learning rates start to decay (`decay_begins`): a loss spike early in training, which throws G's
    weights far off before training recovers, would otherwise linger in it. An adversarially
    trained G swings from step to step; the average smooths that out.

    generator_grad_clip: largest L2 norm of G's gradient in one step (0: no clipping); F's gradient
    is scaled by the same factor. A single batch can send G's gradient norm up by orders of
    magnitude; unclipped, such a step can leave G (and the PSF) in a state it does not recover
    from. `grad_norm_g` in the training log is the norm before clipping, to see the spikes and
    choose a value."""

    lr_g: float = 1e-3
    lr_d: float = 2e-4
    lr_psf: float = 3e-2
    lr_psf_free: float = 3e-3
    lr_pupil: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    steps: int = 1200
    batch_size: int = 4
    decay_start: int | None = None
    generator_ema: float = 0.99
    generator_grad_clip: float = 10.0

    @property
    def decay_begins(self) -> int:
        """The step where the learning rates start to decay and G's weight average starts."""
        return self.steps // 2 if self.decay_start is None else self.decay_start


@dataclass(frozen=True)
class RefineConfig:
    """An optional second stage (off at steps 0): G trained afresh through the first, blind stage's
    learned PSF, frozen, on the sharp cycle alone — G(H(x) + ñ) against x by
    loss.cycle_sharp_distance, i.e. supervised on simulated pairs, without the sharp-domain GAN and
    the blurred cycle. It trades SSIM for PSNR and helps low-photon campaigns with a large G only,
    so it is not a default.

    steps: training steps of the second stage (0: no second stage).
    lr_g: G's learning rate there; smaller than the first stage's, which makes a large U-Net's
        gradient spike.
    """

    steps: int = 0
    lr_g: float = 2e-4


@dataclass(frozen=True)
class TrainConfig:
    """The whole `train:` section.

    noise: ``estimate`` fits a Poisson–Gaussian noise model to the widefield training patches and
        adds a draw of it to F(x) (see cycledecon.noise); ``none`` leaves F(x) noiseless.
    precision: ``auto`` (bf16 autocast with channels-last where the hardware runs bf16 natively,
        see cycledecon.precision), ``bf16`` or ``fp32``.
    augment: ``lateral`` flips each training patch in y and x and swaps them (square pixels) at
        random, which leaves a rotationally symmetric PSF unchanged (see cycledecon.augment);
        ``none`` uses the patches as cut.
    generator_context: (z, y, x) voxels of each patch's context margin that G sees around the
        patch in training (its losses stay on the patch), so that it learns to use the context it
        always has at inference. The PSF kernel must fit the margin less this ring.
    ring_at_faces: what G's ring holds where it reaches past its patch's stack: ``blur``, for a
        sharp patch F of the context cut there (the stack mirrored); ``mirror``, F(x) of the stack's
        inside mirrored at its face, which is what inference shows G at a widefield stack's faces
        with deconvolve.face_padding_mode ``reflect``; ``edge``, the face's voxels repeated, around
        widefield and sharp patches alike, as inference pads by default (``edge``); ``zero``,
        nothing, around both, which is what inference shows G without face padding
        (deconvolve.face_padding_voxels 0). All but ``blur`` need patch stores that record each
        patch's room to the faces.
    """

    model: Literal["psf_layer", "two_generators"] = "psf_layer"
    noise: Literal["estimate", "none"] = "estimate"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    psf: PsfConfig = field(default_factory=PsfConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    checkpoint_every: int = 100
    log_every: int = 10
    val_every: int = 50
    seed: int = 0
    device: Device = "auto"
    precision: PrecisionChoice = "auto"
    augment: Literal["lateral", "none"] = "none"
    generator_context: tuple[int, int, int] = (4, 8, 8)
    ring_at_faces: Literal["blur", "mirror", "edge", "zero"] = "edge"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), as stored in model.pt and accepted by parse."""
        return plain(self)


def parse_config(section: dict[str, Any] | None, prefix: str = "train") -> TrainConfig:
    """Build a TrainConfig from the plain `train:` dict, filling defaults and naming any bad key."""
    config = parse_section(TrainConfig, section or {}, prefix)
    _check_ranges(config, prefix)
    return config


def parse_generator_config(section: GeneratorConfig | dict[str, Any]) -> GeneratorConfig:
    """A GeneratorConfig from itself or from its plain dict (as stored in model.pt metadata)."""
    if isinstance(section, GeneratorConfig):
        return section
    return parse_section(GeneratorConfig, section, "train.generator")


def _check_ranges(config: TrainConfig, prefix: str) -> None:
    """Reject values that parse but cannot work, naming the key."""
    checks = [
        ("generator.depth", config.generator.depth >= 1),
        ("generator.base_channels", config.generator.base_channels >= 1),
        ("discriminator.base_channels", config.discriminator.base_channels >= 1),
        ("discriminator.layers", config.discriminator.layers >= 1),
        ("psf.shape_voxels", odd_sizes(config.psf.shape_voxels)),
        ("psf.size_um", config.psf.size_um is None or all(s > 0 for s in config.psf.size_um)),
        ("psf.energy", config.psf.energy is None or 0 < config.psf.energy < 1),
        ("psf.spherical_terms", 0 <= config.psf.spherical_terms <= 3),
        ("psf.init_sigma_voxels",
         config.psf.init_sigma_voxels is None or all(s > 0 for s in config.psf.init_sigma_voxels)),
        ("psf.ema", 0.0 <= config.psf.ema < 1.0),
        ("psf.gaussian_steps", config.psf.gaussian_steps >= 0),
        ("optim.steps", config.optim.steps >= 1),
        ("optim.batch_size", config.optim.batch_size >= 1),
        ("optim.decay_start",
         config.optim.decay_start is None or 0 <= config.optim.decay_start <= config.optim.steps),
        ("optim.generator_ema", 0.0 <= config.optim.generator_ema < 1.0),
        ("optim.generator_grad_clip", config.optim.generator_grad_clip >= 0),
        ("optim.lr_g", config.optim.lr_g > 0),
        ("optim.lr_d", config.optim.lr_d > 0),
        ("optim.lr_psf", config.optim.lr_psf > 0),
        ("optim.lr_psf_free", config.optim.lr_psf_free > 0),
        ("optim.lr_pupil", config.optim.lr_pupil > 0),
        ("optim.betas", all(0 <= b < 1 for b in config.optim.betas)),
        ("refine.steps", config.refine.steps >= 0),
        ("refine.lr_g", config.refine.lr_g > 0),
        ("checkpoint_every", config.checkpoint_every >= 1),
        ("log_every", config.log_every >= 1),
        ("val_every", config.val_every >= 1),
        ("generator_context", all(c >= 0 for c in config.generator_context)),
    ]
    checks += [(f"loss.{f.name}", getattr(config.loss, f.name) >= 0)
               for f in dataclasses.fields(LossConfig) if f.type == "float"]
    check_ranges(config, prefix, checks)
    if config.refine.steps and config.model != "psf_layer":
        raise CycledeconError(f"{prefix}.refine.steps: a second stage trains G through the learned PSF, "
                              f"so it needs model psf_layer, not {config.model}")

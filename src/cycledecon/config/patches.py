"""The `patches:` config section (see cycledecon.patches for how patches are cut)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cycledecon.config.parse import check_ranges, parse_section


@dataclass(frozen=True)
class PatchConfig:
    """The `patches:` config section.

    shape: (z, y, x) patch size in voxels.
    context_um: (z, y, x) margin cut around each patch, in µm, so that the PSF layer blurs light
        from outside the patch into it as the microscope does; it must reach the PSF's radius plus
        G's context ring (see train.generator_context).
    n_train, n_val: patches per domain for training and for validation (0 disables validation).
    val_fraction: share of each domain's stacks held out for validation, in (0, 1); with a single
        stack, the share of its y extent held out instead, at most 1 − patches.MIN_TRAIN_SHARE.
    val_samples: explicit validation sample names (overrides val_fraction for domains of ≥ 2 stacks).
    foreground: ``otsu`` (Otsu's threshold of the stack) or ``percentile`` (its
        `foreground_percentile`-th percentile) as the stack's foreground level. Sharp references
        are sparse (a thin filament fills well under 1 % of a patch), hence a high percentile and a
        small `min_foreground_fraction` by default.
    min_foreground_fraction: a patch is kept when at least this fraction of its voxels lie above
        the level.
    max_tries: random positions tried per requested patch before giving up.
    reference_units: ``widefield`` puts reference stacks on the widefield stacks' intensity scale
        (their widefield image through the theoretical PSF normalized as a real widefield stack is;
        needs the campaign's optics and a context margin), ``own`` keeps each reference's own
        normalization.
    reference_smoothing_voxels: σ of a Gaussian (in widefield voxels, 0 = off) applied to the
        references before patches are cut: G learns to give its output the references' fine
        texture, and on widefield stacks that texture is amplified noise; a little smoothing of the
        references trades some sharpness for a quieter background.
    reference_past_faces: how a reference patch's context is filled where it reaches past its
        stack: ``mirror`` (the stack mirrored at the face, like widefield patches) or ``wrap`` (the
        stack's far side), whose structure G cannot see in the patch, as a widefield stack's
        out-of-stack light comes from structure G cannot see.
    seed: seed of the split and of the positions; the same seed gives the same patches.
    """

    shape: tuple[int, int, int] = (16, 32, 32)
    context_um: tuple[float, float, float] = (5.0, 4.0, 4.0)
    n_train: int = 256
    n_val: int = 16
    val_fraction: float = 0.34
    val_samples: tuple[str, ...] | None = None
    foreground: Literal["otsu", "percentile"] = "percentile"
    foreground_percentile: float = 99.0
    min_foreground_fraction: float = 0.002
    max_tries: int = 50
    reference_units: Literal["widefield", "own"] = "widefield"
    reference_smoothing_voxels: float = 0.5
    reference_past_faces: Literal["mirror", "wrap"] = "wrap"
    seed: int = 0


def parse_patch_config(section: Mapping[str, Any] | PatchConfig | None, prefix: str = "patches") -> PatchConfig:
    """Build a PatchConfig from the plain `patches:` dict; a bad key or value names its dotted key."""
    if isinstance(section, PatchConfig):
        return section
    config = parse_section(PatchConfig, section or {}, prefix)
    checks = [
        ("shape", all(s >= 1 for s in config.shape)),
        ("context_um", all(c >= 0 for c in config.context_um)),
        ("n_train", config.n_train >= 1),
        ("n_val", config.n_val >= 0),
        ("val_fraction", 0.0 < config.val_fraction < 1.0),
        ("foreground_percentile", 0.0 <= config.foreground_percentile <= 100.0),
        ("min_foreground_fraction", 0.0 <= config.min_foreground_fraction <= 1.0),
        ("max_tries", config.max_tries >= 1),
        ("reference_smoothing_voxels", config.reference_smoothing_voxels >= 0.0),
    ]
    check_ranges(config, prefix, checks)
    return config

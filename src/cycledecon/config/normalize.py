"""The `normalize:` config section (see cycledecon.normalize for the methods)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cycledecon.config.parse import check_ranges, parse_section, plain

#: Key of the `normalization` record that holds values computed for one stack (not configuration).
APPLIED_KEY = "applied"
#: Grey levels CLAHE quantizes a stack to before equalizing (scikit-image's 14 bits).
CLAHE_GREY_LEVELS = 2**14


@dataclass(frozen=True)
class ClaheConfig:
    """CLAHE settings.

    kernel_um: (z, y, x) size of the contextual regions in µm; converted per stack to the nearest
        odd voxel count, at least 1 (so anisotropic voxels give an anisotropic kernel in voxels).
    clip_limit: skimage's normalized clip limit in (0, 1]; higher gives more contrast, 0 disables
        clipping (plain AHE, which amplifies background noise).
    nbins: number of histogram bins per contextual region.
    """

    kernel_um: tuple[float, float, float] = (2.0, 3.2, 3.2)
    clip_limit: float = 0.01
    nbins: int = 256


@dataclass(frozen=True)
class NormalizeConfig:
    """The `normalize:` config section.

    method: ``percentile`` (a linear rescale, so that blurred = PSF ⊛ sharp still holds for the PSF
        layer) or ``clahe`` (see cycledecon.normalize).
    percentiles: (low, high) percentiles in %, mapped to 0 and 1.
    clip: clip the percentile rescale to [0, 1] (percentile method only; CLAHE always clips).
        Off by default: clipping the brightest voxels breaks the linearity where it matters most.
    clahe: CLAHE settings.
    chunk_voxels: volumes with more voxels are equalized in blocks of at most this many voxels,
        halo included.
    percentile_sample_voxels: percentiles of larger volumes come from a strided subsample of at
        most this many voxels.
    """

    method: Literal["clahe", "percentile"] = "percentile"
    percentiles: tuple[float, float] = (0.1, 99.9)
    clip: bool = False
    clahe: ClaheConfig = field(default_factory=ClaheConfig)
    chunk_voxels: int = 2**24
    percentile_sample_voxels: int = 2**24

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), as accepted by parse_normalize_config."""
        return plain(self)


def parse_normalize_config(
    section: Mapping[str, Any] | NormalizeConfig | None, prefix: str = "normalize"
) -> NormalizeConfig:
    """Build a NormalizeConfig from the plain `normalize:` dict, or from a stored `normalization`
    record (its `applied` values are dropped: they belong to the stack they were computed on).

    Raises CycledeconError naming the dotted key of an unknown key, wrong type or bad value.
    """
    if isinstance(section, NormalizeConfig):
        return section
    values = {k: v for k, v in (section or {}).items() if k != APPLIED_KEY}
    config = parse_section(NormalizeConfig, values, prefix)
    low, high = config.percentiles
    checks = [
        ("percentiles", 0.0 <= low < high <= 100.0),
        ("clahe.kernel_um", all(k > 0 for k in config.clahe.kernel_um)),
        ("clahe.clip_limit", 0.0 <= config.clahe.clip_limit <= 1.0),
        ("clahe.nbins", 2 <= config.clahe.nbins <= CLAHE_GREY_LEVELS),
        ("chunk_voxels", config.chunk_voxels >= 1),
        ("percentile_sample_voxels", config.percentile_sample_voxels >= 1),
    ]
    check_ranges(config, prefix, checks)
    return config

"""Poisson–Gaussian noise of the widefield domain: estimated from its patches, simulated on H(x).

Why the blurred branch needs noise: real widefield patches carry shot and read noise, while H(x)
of a sharp patch is smooth. Without noise on H(x) the blurred-domain discriminator tells fakes from
reals by texture alone (on the demo it won within a few hundred steps, d_a → 0.005, and stopped
judging the blur), and the cycle G(H(x)) ≈ x teaches G to invert a *noiseless* blur, which
amplifies the noise of every real stack it is applied to.

Model (Foi et al. 2008, "Practical Poissonian-Gaussian noise modeling and fitting for single-image
raw-data"): var(v) = gain·v + floor in the normalized units training sees. Percentile normalization
is affine, so shot noise stays linear in the signal and read noise and offset go into `floor`.

The fit is hand-written: no maintained library fits this model to 3D stacks (scikit-image's
`estimate_sigma` gives one Gaussian σ per image and needs PyWavelets). Each patch is cut into
2×2×2 blocks; a block's Haar "ddd" detail coefficient (alternating signs over its eight voxels,
divided by √8) cancels every signal that is constant or linear along any axis, so for a stack
blurred by a PSF it is noise with the voxels' variance. Blocks are binned by their mean, each bin's
variance is taken robustly (MAD, so edges of bright structures do not inflate it) and a line is
fitted through (mean, variance) weighted by bin size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from cycledecon.errors import CycledeconError

MAD_TO_STD = 1.4826  # standard deviation of a normal variable per unit of median absolute deviation
MIN_BLOCKS_PER_BIN = 50


@dataclass(frozen=True)
class NoiseModel:
    """var(v) = gain·v + floor (clamped at zero), in normalized intensity units."""

    gain: float
    floor: float

    def variance(self, signal: torch.Tensor) -> torch.Tensor:
        return (self.gain * signal + self.floor).clamp_min(0)

    def std(self, signal: torch.Tensor) -> torch.Tensor:
        return self.variance(signal).sqrt()

    def sample(self, signal: torch.Tensor) -> torch.Tensor:
        """`signal` plus one draw of its noise (Gaussian approximation of the shot noise), from
        torch's global generator so that seeded training stays reproducible."""
        return signal + self.std(signal.detach()) * torch.randn_like(signal)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def haar_details(volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block means and Haar ddd detail coefficients of the 2×2×2 blocks of (..., z, y, x) volumes."""
    z, y, x = (n - n % 2 for n in volumes.shape[-3:])
    v = np.asarray(volumes[..., :z, :y, :x], dtype=np.float64)
    blocks = v.reshape(*v.shape[:-3], z // 2, 2, y // 2, 2, x // 2, 2)
    signs = np.array([1.0, -1.0])
    pattern = signs[:, None, None] * signs[None, :, None] * signs[None, None, :]
    pattern = pattern.reshape(2, 1, 2, 1, 2)
    details = (blocks * pattern).sum(axis=(-5, -3, -1)) / np.sqrt(8)
    means = blocks.mean(axis=(-5, -3, -1))
    return means.ravel(), details.ravel()


def estimate_noise(volumes: np.ndarray, bins: int = 16) -> NoiseModel:
    """Fit var = gain·mean + floor to the blocks of `volumes` (at least 2 voxels along each axis).

    Bins are quantiles of the block means, so bright and dark structures both get bins. gain is
    kept ≥ 0 (a variance cannot fall with the signal); floor may be negative when the normalized
    background sits above zero.
    """
    if any(n < 2 for n in np.shape(volumes)[-3:]):
        raise CycledeconError(f"noise estimation needs volumes of at least 2 voxels per axis, "
                              f"got {np.shape(volumes)}")
    means, details = haar_details(volumes)
    bins = max(1, min(bins, len(means) // MIN_BLOCKS_PER_BIN))
    order = np.argsort(means)
    centres, variances, weights = [], [], []
    for chunk in np.array_split(order, bins):
        mad = np.median(np.abs(details[chunk] - np.median(details[chunk])))
        centres.append(means[chunk].mean())
        variances.append((MAD_TO_STD * mad) ** 2)
        weights.append(len(chunk))
    centres, variances, weights = map(np.asarray, (centres, variances, weights))
    if bins == 1 or np.ptp(centres) == 0:
        return NoiseModel(0.0, float(variances.mean()))
    gain, floor = np.polyfit(centres, variances, 1, w=np.sqrt(weights))
    if gain < 0:
        return NoiseModel(0.0, float(np.average(variances, weights=weights)))
    return NoiseModel(float(gain), float(floor))

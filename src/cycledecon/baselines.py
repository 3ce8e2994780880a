"""Richardson–Lucy deconvolution, the classical baseline that cycledecon is compared with."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from skimage.restoration import richardson_lucy as _skimage_richardson_lucy

from cycledecon.metrics import match_intensity, psnr
from cycledecon.psf import normalize_psf


def richardson_lucy(image: np.ndarray, psf: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Richardson–Lucy deconvolution with a known PSF (scikit-image, ``clip=False``), float32.

    Richardson–Lucy assumes non-negative data without background. The image's minimum is
    therefore taken as a constant offset (camera offset plus background, noise-biased low so the
    rest stays non-negative) and subtracted, the remainder is scaled to [0, 1] for float32
    headroom, deconvolved, and mapped back: the result is in the input's intensity units with
    the offset added again. RL commutes with the scaling, so only the offset is a modelling
    choice.

    Parameters
    ----------
    image : (z, y, x) blurred volume, any real intensities.
    psf : (z, y, x) PSF on the same voxel grid; clipped to non-negative and normalized to unit sum.
    iterations : number of RL iterations (more sharpens, and amplifies noise).

    Returns
    -------
    deconvolved : float32 volume, same shape and units as ``image``.
    """
    if image.ndim != psf.ndim:
        raise ValueError(f"image and PSF must have the same dimensions, got {image.shape} and {psf.shape}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    image = np.asarray(image, dtype=np.float32)
    offset = float(image.min())
    scale = float(image.max()) - offset
    if scale == 0:
        return image.copy()
    positive = (image - offset) / scale
    # scikit-image convolves with zero padding, which darkens the borders and rings there; padding
    # by reflection (half the PSF per side) and cropping back keeps the borders as good as the middle.
    margin = [(min(k // 2, n - 1),) * 2 for k, n in zip(psf.shape, image.shape)]
    padded = np.pad(positive, margin, mode="reflect")
    restored = _skimage_richardson_lucy(padded, normalize_psf(psf), num_iter=iterations, clip=False)
    restored = restored[tuple(slice(m, m + n) for (m, _), n in zip(margin, image.shape))]
    return (restored * scale + offset).astype(np.float32)


def best_iterations(
    blurred: np.ndarray,
    psf: np.ndarray,
    truth: np.ndarray,
    candidates: Iterable[int] = (5, 10, 20, 40, 80),
) -> tuple[int, dict[int, float]]:
    """Oracle choice of the RL iteration count: the candidate with the best PSNR against the truth.

    Only possible with a ground truth (the synthetic benchmark); it gives RL its best case.

    Parameters
    ----------
    blurred : (z, y, x) input volume.
    psf : PSF used for deconvolution.
    truth : ground-truth volume, same shape as ``blurred``.
    candidates : iteration counts to try (each is run from scratch).

    Returns
    -------
    best : the iteration count with the highest PSNR (the smallest one on ties).
    psnr_db : PSNR in dB after `cycledecon.metrics.match_intensity`, for every candidate.
    """
    counts = sorted(set(int(n) for n in candidates))
    if not counts:
        raise ValueError("no candidate iteration counts given")
    psnr_db = {n: psnr(match_intensity(richardson_lucy(blurred, psf, n), truth), truth) for n in counts}
    return max(counts, key=lambda n: (psnr_db[n], -n)), psnr_db

"""Image-quality metrics: against a ground truth, and the checks that need none.

With a ground truth (the synthetic demo campaign), every metric is computed after one stated
intensity matching: the result is mapped onto the truth by the least-squares affine fit
``a * result + b`` (`match_intensity`). Deconvolution outputs and the truth need not share units
(a synthetic truth has its own scale; the network writes the input's units or normalized ones,
Richardson–Lucy the input's), so without this step PSNR would mostly measure a gain and an offset
rather than restoration quality.

With a ground truth the metrics also measure *false signal* (`false_signal`): light in the result
where the truth is empty, overall and at the stack's first and last planes, where light from
structures outside the measured planes arrives and a method that cannot place it there may invent
structure instead.

Without a ground truth: a lateral resolution estimate by one-image Fourier ring correlation
(`frc_resolution`) and the noise/artefact gain on background regions (`background_std_ratio`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.signal.windows import tukey
from skimage.metrics import normalized_root_mse, structural_similarity

from cycledecon.voxel import VoxelSize

#: `background_std_ratio` above this flags amplified noise or artefacts: the output's background
#: then fluctuates 50 % more than the raw input's noise, which a deconvolution that also denoises
#: should never do (a faithful result keeps or lowers the background fluctuation, ratio <= 1).
NOISE_GAIN_LIMIT = 1.5

#: Planes at each z face of a stack that `false_signal` also reports on their own.
FACE_PLANES = 3

#: A truth voxel is empty when no truth voxel within EMPTY_REACH (z, y, x voxels) exceeds its minimum
#: by more than EMPTY_LEVEL of its range: the reach keeps the blurred flanks of real structure, which
#: any finite resolution leaves, out of what counts as false.
EMPTY_REACH = (2, 5, 5)
EMPTY_LEVEL = 0.05

#: Conventional fixed FRC threshold (the "1/7 criterion", Rosenthal & Henderson 2003).
FRC_THRESHOLD = 1 / 7


def _check_same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {a.shape} and {b.shape}")


def match_intensity(result: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Map ``result`` onto ``truth`` by the least-squares affine fit ``a * result + b``.

    Parameters
    ----------
    result : array to rescale (any shape).
    truth : reference intensities, same shape.

    Returns
    -------
    fitted : float64 array, ``a * result + b`` with ``a, b`` minimizing ``sum((fitted - truth)**2)``.
        A constant ``result`` gives the constant ``mean(truth)``. Identical inputs give ``result``
        back exactly (``a == 1``, ``b == 0``), so PSNR can reach infinity.
    """
    _check_same_shape(result, truth, "result and truth")
    r = np.asarray(result, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    r_centred = (r - r.mean()).ravel()
    t_centred = (t - t.mean()).ravel()
    variance = np.dot(r_centred, r_centred)
    slope = np.dot(r_centred, t_centred) / variance if variance > 0 else 0.0
    return slope * r + (t.mean() - slope * r.mean())


def psnr(fitted: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) with the truth's range ``max - min`` as the peak."""
    _check_same_shape(fitted, truth, "fitted and truth")
    t = np.asarray(truth, dtype=np.float64)
    mse = np.mean((np.asarray(fitted, dtype=np.float64) - t) ** 2)
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(np.ptp(t) ** 2 / mse))


def compare_to_truth(result: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Full-reference quality of a restored volume, after `match_intensity`.

    Parameters
    ----------
    result : restored volume (z, y, x), any intensity units.
    truth : ground-truth volume, same shape; must not be constant.

    Returns
    -------
    dict with
        ``psnr_db`` : PSNR in dB, peak = range of the truth; ``inf`` for a perfect match.
        ``ssim`` : 3D SSIM (scikit-image, 7-voxel window, ``data_range`` = range of the truth).
        ``nrmse`` : ``||fitted - truth|| / ||truth||`` (scikit-image's "euclidean" normalization).
        ``pearson_r`` : Pearson correlation of the *unmatched* result with the truth; it is
            unchanged by an affine map with positive slope, and this way an anti-correlated
            result stays negative instead of being flipped by a negative fitted slope.
        ``false_signal_pct``, ``false_signal_faces_pct`` : `false_signal` of the fitted result.
    """
    _check_same_shape(result, truth, "result and truth")
    if result.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got {result.ndim} dimensions")
    t = np.asarray(truth, dtype=np.float64)
    data_range = float(np.ptp(t))
    if data_range == 0:
        raise ValueError("ground truth is constant: PSNR and SSIM are undefined")
    fitted = match_intensity(result, t)
    overall, faces = false_signal(fitted, t)
    return {
        "psnr_db": psnr(fitted, t),
        "ssim": float(structural_similarity(t, fitted, data_range=data_range)),
        "nrmse": float(normalized_root_mse(t, fitted, normalization="euclidean")),
        "pearson_r": float(np.corrcoef(np.asarray(result, dtype=np.float64).ravel(), t.ravel())[0, 1]),
        "false_signal_pct": overall,
        "false_signal_faces_pct": faces,
    }


def empty_mask(truth: np.ndarray) -> np.ndarray:
    """Voxels of a (z, y, x) truth with no structure within `EMPTY_REACH` (see `EMPTY_LEVEL`)."""
    t = np.asarray(truth, dtype=np.float64)
    nearby = ndi.maximum_filter(t, size=[2 * r + 1 for r in EMPTY_REACH], mode="nearest")
    return nearby <= t.min() + EMPTY_LEVEL * np.ptp(t)


def false_signal(fitted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Light where the truth is empty: the mean of ``max(fitted - truth, 0)`` over `empty_mask`, in %
    of the truth's range.

    Residual out-of-focus haze and invented structure both count; a result that only stays blurred
    near real structure does not (the mask keeps away from it). Pass a result already matched to the
    truth (`match_intensity`), so that gain and offset do not count.

    Returns
    -------
    (over the whole stack, over its first and last `FACE_PLANES` planes); NaN where no voxel is empty.
    """
    _check_same_shape(fitted, truth, "fitted and truth")
    t = np.asarray(truth, dtype=np.float64)
    excess = np.maximum(np.asarray(fitted, dtype=np.float64) - t, 0.0) * (100 / np.ptp(t))
    empty = empty_mask(t)
    faces = np.zeros_like(empty)
    faces[:FACE_PLANES] = faces[-FACE_PLANES:] = True
    return tuple(float(excess[m].mean()) if m.any() else float("nan") for m in (empty, empty & faces))


def frc_curve(volume: np.ndarray, voxel_size: VoxelSize) -> tuple[np.ndarray, np.ndarray]:
    """Lateral one-image Fourier ring correlation of a volume.

    Hand-written: no maintained package computes FRC on this stack (``frc`` pins numpy < 2;
    ``nanopyx`` is 2D only and pulls OpenCL and OpenCV; ``miplib`` is unmaintained).

    Every XY plane is split into two independent-noise sub-images by taking the (even, even)
    and the (odd, odd) pixels (Koho et al., Nat. Commun. 2019). The second sub-image sits half a
    sub-pixel further along y and x; that shift is undone by its Fourier phase ramp. Both are
    apodized with a Tukey window (kills the edge cross in the spectrum, which would correlate),
    and ring sums are accumulated over all planes, giving one curve for the volume.

    Parameters
    ----------
    volume : (z, y, x) volume with at least 8 pixels along y and x. The FRC measures signal
        against *noise*: a noise-free volume correlates perfectly at all frequencies.
    voxel_size : voxel size in µm; only y and x are used.

    Returns
    -------
    frequency : ring centres in cycles/µm, up to the sub-images' Nyquist ``1 / (4 dx)``.
    frc : correlation per ring, in [-1, 1].

    Notes
    -----
    Content above ``1 / (4 dx)`` aliases in the sub-images with opposite phase and lowers the
    curve, so strongly undersampled images read pessimistic. Use the curve to rank methods on
    the same data, not as an absolute resolution.
    """
    if volume.ndim != 3 or min(volume.shape[1:]) < 8:
        raise ValueError(f"FRC needs a (z, y, x) volume at least 8 pixels wide, got {volume.shape}")
    v = np.asarray(volume, dtype=np.float64)
    ny, nx = (v.shape[1] // 2, v.shape[2] // 2)
    a = v[:, 0 : 2 * ny : 2, 0 : 2 * nx : 2]
    b = v[:, 1 : 2 * ny : 2, 1 : 2 * nx : 2]
    window = np.outer(tukey(ny, 0.25), tukey(nx, 0.25))
    a = (a - a.mean(axis=(1, 2), keepdims=True)) * window
    b = (b - b.mean(axis=(1, 2), keepdims=True)) * window
    fy = np.fft.fftfreq(ny)[:, None]  # cycles per sub-image pixel
    fx = np.fft.rfftfreq(nx)[None, :]
    spec_a = np.fft.rfft2(a)
    spec_b = np.fft.rfft2(b) * np.exp(-1j * np.pi * (fy + fx))  # shift back by half a sub-pixel

    k = np.hypot(fy / (2 * voxel_size.y), fx / (2 * voxel_size.x))  # cycles/µm
    k_max = min(1 / (4 * voxel_size.y), 1 / (4 * voxel_size.x))
    n_rings = min(ny, nx) // 2
    ring = np.minimum((k / k_max * n_rings).astype(int), n_rings)  # n_rings: beyond, dropped

    def ring_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(ring.ravel(), values.sum(axis=0).ravel(), n_rings + 1)[:n_rings]

    cross = ring_sum((spec_a * spec_b.conj()).real)
    power = np.sqrt(ring_sum(np.abs(spec_a) ** 2) * ring_sum(np.abs(spec_b) ** 2))
    frc = np.divide(cross, power, out=np.zeros_like(cross), where=power > 0)
    frequency = (np.arange(n_rings) + 0.5) * k_max / n_rings
    return frequency, frc


def frc_resolution(volume: np.ndarray, voxel_size: VoxelSize, threshold: float = FRC_THRESHOLD) -> float:
    """Lateral resolution (µm) of a volume without ground truth, by one-image FRC.

    The resolution is ``1 / k``, with ``k`` the first frequency where `frc_curve` falls below
    ``threshold`` (linear interpolation between rings). Larger means blurrier. An axial value is
    not returned: splitting along z halves the usually few planes and sets a floor of ``4 dz``,
    coarser than a widefield axial resolution, so it would not tell methods apart.

    Parameters
    ----------
    volume : (z, y, x) volume with noise (see `frc_curve`).
    voxel_size : voxel size in µm.
    threshold : FRC threshold, 1/7 by default.

    Returns
    -------
    resolution : lateral resolution in µm. ``4 * max(dy, dx)`` (the finest measurable period)
        when the curve never falls below the threshold; ``inf`` when it starts below it (noise).
    """
    frequency, frc = frc_curve(volume, voxel_size)
    below = np.flatnonzero(frc < threshold)
    if below.size == 0:
        return 4 * max(voxel_size.y, voxel_size.x)
    i = below[0]
    if i == 0:
        return float("inf")
    fraction = (frc[i - 1] - threshold) / (frc[i - 1] - frc[i])
    return float(1 / (frequency[i - 1] + fraction * (frequency[i] - frequency[i - 1])))


def background_mask(volume: np.ndarray, percentile: float = 20.0, sigma: float = 2.0) -> np.ndarray:
    """Background voxels of a (raw) volume: the dimmest ``percentile`` % after Gaussian smoothing.

    Smoothing (``sigma`` in voxels) keeps noise dips inside structures out of the mask.
    """
    smooth = ndi.gaussian_filter(np.asarray(volume, dtype=np.float32), sigma)
    return smooth <= np.percentile(smooth, percentile)


def background_std_ratio(input: np.ndarray, output: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Noise/artefact gain: background fluctuation of the output relative to the input.

    Both volumes must be in the same intensity units: Richardson–Lucy conserves flux in its
    input's units, and the network's output convolved with its learned PSF reproduces its
    normalized input (`cycledecon.evaluate.in_units_of_given` brings an output written in another
    unit back to its input's). No intensity matching is done here on purpose: a
    least-squares fit (`match_intensity`) shrinks the output towards its mean precisely when
    the output has variance the input lacks, and would hide what this check looks for.

    A ratio above `NOISE_GAIN_LIMIT` (1.5) flags noise amplified or artefacts (speckle, ringing)
    added where the input has only background; a faithful (denoising) result gives a ratio at or
    below 1. It does not tell new structure from amplified noise.

    Parameters
    ----------
    input : raw (z, y, x) volume the output was computed from.
    output : restored volume, same shape and intensity units.
    mask : boolean background mask; by default `background_mask` of the *input*, so the output
        cannot choose where it is judged.

    Returns
    -------
    ratio : ``std(output[mask]) / std(input[mask])`` (dimensionless).
    """
    _check_same_shape(input, output, "input and output")
    mask = background_mask(input) if mask is None else np.asarray(mask, dtype=bool)
    _check_same_shape(input, mask, "input and mask")
    if mask.sum() < 2:
        raise ValueError("background mask selects fewer than two voxels")
    input_std = np.std(np.asarray(input, dtype=np.float64)[mask])
    if input_std == 0:
        raise ValueError("input background is perfectly flat: its noise level is zero")
    return float(np.std(np.asarray(output, dtype=np.float64)[mask]) / input_std)

"""PSF measurements: full width at half maximum and similarity between two PSFs."""

from __future__ import annotations

import numpy as np

from cycledecon.voxel import VoxelSize


def _half_max_width(profile: np.ndarray, peak: int) -> float:
    """Width (voxels) of a 1D profile at half its ``peak`` value.

    Each side is walked outwards from the peak to the first sample at or below half maximum, and
    the crossing is placed by linear interpolation between that sample and the previous one.
    """
    half = profile[peak] / 2
    edges = []
    for step in (-1, 1):
        i = peak
        while 0 <= i + step < profile.size and profile[i + step] > half:
            i += step
        if not 0 <= i + step < profile.size:
            raise ValueError("PSF does not fall to half maximum inside the array")
        inside, outside = profile[i], profile[i + step]
        edges.append(i + step * (inside - half) / (inside - outside))
    return edges[1] - edges[0]


def fwhm(psf: np.ndarray, voxel_size: VoxelSize) -> dict[str, float]:
    """Axial and lateral FWHM (µm) of a 3D PSF, along the axes through its brightest voxel.

    Measured by the half-maximum crossings with linear interpolation rather than by a Gaussian
    fit: a widefield PSF is not Gaussian along z (asymmetric, with side lobes), a crossing
    assumes no shape and cannot fail to converge, and for a peak at least 3 voxels wide the
    interpolation error is a few percent. Half maximum is half the peak value (PSFs are
    non-negative and background-free by convention), not half the height above the profile's
    minimum, which would silently measure a PSF cut short by its array as too narrow.

    Parameters
    ----------
    psf : (z, y, x) non-negative PSF, any scale; it must fall to half maximum on both sides of
        its peak along every axis.
    voxel_size : voxel size in µm.

    Returns
    -------
    dict with ``axial_um`` (along z) and ``lateral_um`` (mean of the y and x widths), in µm.
    """
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 3:
        raise ValueError(f"expected a (z, y, x) PSF, got {psf.ndim} dimensions")
    z, y, x = np.unravel_index(np.argmax(psf), psf.shape)
    width_z = _half_max_width(psf[:, y, x], z) * voxel_size.z
    width_y = _half_max_width(psf[z, :, x], y) * voxel_size.y
    width_x = _half_max_width(psf[z, y, :], x) * voxel_size.x
    return {"axial_um": float(width_z), "lateral_um": float((width_y + width_x) / 2)}


def _centre_on_peak(psf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Place ``psf`` in a zero array of ``shape`` with its brightest voxel at the centre."""
    out = np.zeros(shape, dtype=np.float64)
    peak = np.unravel_index(np.argmax(psf), psf.shape)
    offsets = [n // 2 - p for n, p in zip(shape, peak)]  # where psf index 0 lands in out
    src = tuple(slice(max(0, -o), min(m, n - o)) for o, m, n in zip(offsets, psf.shape, shape))
    dst = tuple(slice(s.start + o, s.stop + o) for s, o in zip(src, offsets))
    out[dst] = psf[src]
    return out


def psf_correlation(psf_a: np.ndarray, psf_b: np.ndarray) -> float:
    """How alike two 3D PSFs are in shape: Pearson's correlation with their brightest voxels aligned.

    Both are zero-padded to their common (per-axis largest) shape with the brightest voxel at the
    centre, then correlated over all voxels. Independent of scale, offset and where each PSF sits
    in its array (a learned kernel a voxel off-centre is still the same blur); 1 for the same shape.

    Parameters
    ----------
    psf_a, psf_b : (z, y, x) PSFs, possibly of different sizes and on the same voxel grid.

    Returns
    -------
    correlation in [-1, 1] (dimensionless).
    """
    psf_a, psf_b = np.asarray(psf_a, dtype=np.float64), np.asarray(psf_b, dtype=np.float64)
    if psf_a.ndim != 3 or psf_b.ndim != 3:
        raise ValueError(f"expected two (z, y, x) PSFs, got shapes {psf_a.shape} and {psf_b.shape}")
    shape = tuple(max(m, n) for m, n in zip(psf_a.shape, psf_b.shape))
    a = _centre_on_peak(psf_a, shape).ravel()
    b = _centre_on_peak(psf_b, shape).ravel()
    a -= a.mean()
    b -= b.mean()
    norm = np.sqrt(np.dot(a, a) * np.dot(b, b))
    if norm == 0:
        raise ValueError("a constant PSF has no correlation")
    return float(np.dot(a, b) / norm)


def energy_in_box(psf: np.ndarray, shape: tuple[int, ...]) -> float:
    """Share of a PSF's energy inside a centred box of `shape` voxels (clipped to the PSF's own
    extent): how much of that blur a kernel of this size can model."""
    centre = np.unravel_index(np.argmax(psf), psf.shape)
    box = tuple(slice(max(0, c - n // 2), c + n // 2 + 1) for c, n in zip(centre, shape))
    return float(psf[box].sum() / psf.sum())

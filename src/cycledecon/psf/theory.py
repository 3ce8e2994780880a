"""Theoretical PSFs: the widefield PSF of an objective (psfmodels), a Gaussian stand-in, and the
normalization every PSF gets.

All PSFs are float32 arrays in (z, y, x), centred, non-negative and summing to one, with odd sizes
so the centre is a voxel.
"""

from __future__ import annotations

import numpy as np

from cycledecon.config.parse import odd_sizes
from cycledecon.voxel import VoxelSize


def check_odd_shape(shape: tuple[int, ...]) -> None:
    """Refuse a PSF box that is not three odd sizes: the centre must be a voxel."""
    if len(shape) != 3 or not odd_sizes(shape):
        raise ValueError(f"PSF shape must be three odd sizes (z, y, x), got {shape}")


def normalize_psf(psf: np.ndarray) -> np.ndarray:
    """Clip negatives and scale to unit sum, so convolving with it preserves total intensity."""
    psf = np.clip(np.asarray(psf, dtype=np.float64), 0, None)
    total = psf.sum()
    if total <= 0:
        raise ValueError("PSF has no positive mass")
    return (psf / total).astype(np.float32)


def widefield_psf(
    shape: tuple[int, int, int],
    voxel_size: VoxelSize,
    na: float,
    wavelength_nm: float,
    immersion_ri: float,
    sample_ri: float | None = None,
    depth_um: float = 0.0,
) -> np.ndarray:
    """Theoretical widefield PSF (Gibson–Lanni vectorial model from psfmodels), unit sum.

    Parameters
    ----------
    shape : odd (z, y, x) size in voxels; psfmodels computes square planes, so a box with y ≠ x is
        the centre of the square one.
    voxel_size : voxel size in µm.
    na, wavelength_nm, immersion_ri : objective NA, emission wavelength (nm), immersion index.
    sample_ri : refractive index of the sample; defaults to the immersion index (no mismatch).
    depth_um : depth of the emitter below the coverslip (µm); with a sample/immersion index
        mismatch this produces depth-induced spherical aberration.
    """
    check_odd_shape(shape)
    nz, ny, nx = (int(s) for s in shape)
    lateral = max(ny, nx)
    import psfmodels  # here, not above: it loads scipy.signal, which deconvolving with a trained model never needs

    ni = float(immersion_ri)
    ns = ni if sample_ri is None else float(sample_ri)
    params = {"NA": float(na), "ni": ni, "ni0": ni, "ns": ns}

    def planes(centre_um: float) -> np.ndarray:
        # psfmodels measures focal planes from the coverslip, so they are placed around the emitter
        z_um = (np.arange(nz) - nz // 2) * voxel_size.z + centre_um
        return psfmodels.vectorial_psf(
            z_um, nx=lateral, dxy=voxel_size.x, pz=float(depth_um), wvl=wavelength_nm / 1000.0, params=params
        )

    psf = planes(depth_um)
    # an index mismatch shifts the best focus away from the emitter's depth: centre the kernel on
    # its peak, as a deconvolution kernel must be
    shift = int(np.argmax(psf.max(axis=(1, 2)))) - nz // 2
    if shift:
        psf = planes(depth_um + shift * voxel_size.z)
    y0, x0 = (lateral - ny) // 2, (lateral - nx) // 2
    return normalize_psf(psf[:, y0:y0 + ny, x0:x0 + nx])


def psf_from_optics(shape: tuple[int, int, int], voxel_size: VoxelSize, optics: dict) -> np.ndarray:
    """The widefield PSF of a sample sheet's optics record {na, wavelength_nm, immersion_ri}."""
    return widefield_psf(shape, voxel_size, optics["na"], optics["wavelength_nm"], optics["immersion_ri"])


def gaussian_psf(shape: tuple[int, int, int], sigma_voxels: tuple[float, float, float]) -> np.ndarray:
    """Separable anisotropic Gaussian PSF with the given sigmas (voxels), unit sum."""
    check_odd_shape(shape)
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    r2 = sum((g / s) ** 2 for g, s in zip(grids, sigma_voxels))
    return normalize_psf(np.exp(-0.5 * r2))

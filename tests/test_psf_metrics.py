"""PSF width and similarity."""

from __future__ import annotations

import numpy as np
import pytest

from cycledecon.psf.theory import gaussian_psf
from cycledecon.psf_metrics import fwhm, psf_correlation
from cycledecon.voxel import VoxelSize

VOXEL = VoxelSize(0.3, 0.1, 0.1)  # anisotropic, as in widefield stacks
FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))  # 2.3548


@pytest.mark.parametrize(("sigma_z_um", "sigma_xy_um"), [(0.6, 0.15), (0.45, 0.12), (0.9, 0.2)])
def test_fwhm_of_a_sampled_gaussian(sigma_z_um, sigma_xy_um):
    psf = gaussian_psf((21, 25, 25), VOXEL.to_voxels((sigma_z_um, sigma_xy_um, sigma_xy_um)))
    widths = fwhm(psf, VOXEL)
    # 5 %: linear interpolation between samples overestimates slightly; measured <= 2.8 % for
    # sigmas down to 1.2 voxels.
    assert widths["axial_um"] == pytest.approx(FWHM_PER_SIGMA * sigma_z_um, rel=0.05)
    assert widths["lateral_um"] == pytest.approx(FWHM_PER_SIGMA * sigma_xy_um, rel=0.05)


def test_fwhm_ignores_scale():
    psf = gaussian_psf((15, 21, 21), (2.0, 1.5, 1.5))
    assert fwhm(7 * psf, VOXEL) == pytest.approx(fwhm(psf, VOXEL), rel=1e-6)  # float32 rounding


def test_fwhm_finds_an_off_centre_peak():
    psf = gaussian_psf((15, 21, 21), (2.0, 1.5, 1.5))
    shifted = np.roll(psf, (2, -3, 4), axis=(0, 1, 2))
    assert fwhm(shifted, VOXEL) == pytest.approx(fwhm(psf, VOXEL), rel=1e-9)


def test_fwhm_rejects_a_psf_cut_before_half_maximum():
    wide = gaussian_psf((5, 21, 21), (10.0, 1.5, 1.5))
    with pytest.raises(ValueError, match="half maximum"):
        fwhm(wide, VOXEL)


def test_correlation_of_the_same_psf_on_different_grids_is_one():
    small = gaussian_psf((15, 21, 21), (2.0, 1.5, 1.5))
    large = gaussian_psf((21, 31, 31), (2.0, 1.5, 1.5))
    # Below 1 only by the tails that the smaller grid cuts off (< 1e-6 of the mass here).
    assert psf_correlation(small, large) == pytest.approx(1.0, abs=1e-6)
    assert psf_correlation(small, np.roll(small, 3, axis=2)) == pytest.approx(1.0, abs=1e-9)


def test_correlation_drops_for_a_wider_psf():
    psf = gaussian_psf((15, 21, 21), (2.0, 1.5, 1.5))
    slightly = psf_correlation(psf, gaussian_psf((15, 21, 21), (2.4, 1.8, 1.8)))
    much = psf_correlation(psf, gaussian_psf((15, 21, 21), (4.0, 3.0, 3.0)))
    assert 0 < much < slightly < 0.99


def test_correlation_rejects_a_2d_psf():
    with pytest.raises(ValueError, match="z, y, x"):
        psf_correlation(np.ones((5, 5)), np.ones((5, 5, 5)))

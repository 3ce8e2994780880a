"""The pupil PSF model against psfmodels' vectorial PSF, and its gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cycledecon.psf.pupil import PupilPsf, spherical_zernike
from cycledecon.psf.theory import widefield_psf
from cycledecon.psf_metrics import fwhm, psf_correlation
from cycledecon.voxel import VoxelSize

VOXEL = VoxelSize(0.25, 0.1, 0.1)


@pytest.mark.parametrize(("na", "immersion_ri"), [(1.4, 1.515), (0.8, 1.0)])
def test_pupil_model_is_the_theoretical_widefield_psf(na, immersion_ri):
    """Same physics as psfmodels (vectorial, aplanatic): the shapes correlate above 0.995 and the
    widths agree to 10 % (psfmodels integrates over the pixel, which widens its PSF a little); the
    per-plane energy, which says how far the out-of-focus light reaches, to 5 %."""
    shape = (33, 65, 65)
    truth = widefield_psf(shape, VOXEL, na, 520.0, immersion_ri)
    kernel = PupilPsf(shape, VOXEL.as_tuple(), na, 520.0, immersion_ri).numpy()
    assert kernel.shape == shape and kernel.min() >= 0
    assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-5)
    assert psf_correlation(kernel, truth) > 0.995
    for axis, width in fwhm(kernel, VOXEL).items():
        assert width == pytest.approx(fwhm(truth, VOXEL)[axis], rel=0.10), axis
    np.testing.assert_allclose(kernel.sum(axis=(1, 2)), truth.sum(axis=(1, 2)), rtol=0.05)
    assert np.unravel_index(kernel.argmax(), shape) == (16, 32, 32)


def test_pupil_parameters_change_the_psf_and_get_gradients():
    model = PupilPsf((9, 21, 21), VOXEL.as_tuple(), 1.2, 520.0, 1.33)
    kernel = model()
    # a loss that prefers a brighter peak: the NA must be pushed up, the aberrations must be seen
    (-kernel[4, 10, 10] - kernel[3, 10, 10]).backward()
    assert float(model.log_na_scale.grad) < 0
    assert model.spherical.grad is not None and float(model.spherical.grad.abs().sum()) > 0
    with torch.no_grad():
        model.spherical[0] = 1.5  # primary spherical aberration makes the PSF axially asymmetric
        aberrated = model()
    planes = aberrated.sum(dim=(1, 2))
    assert float((planes - planes.flip(0)).abs().max()) > 1e-3
    assert float((kernel.detach().sum(dim=(1, 2)) - kernel.detach().sum(dim=(1, 2)).flip(0)).abs().max()) < 1e-5


def test_spherical_zernike_is_orthonormal_on_the_disc():
    rho = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for order in (4, 6):
        z = spherical_zernike(order, rho)
        # ∫ Z² ρ dρ over [0, 1] is 1/2 for Noll normalization (π over the disc's area π)
        assert float(torch.trapezoid(z * z * rho, rho)) == pytest.approx(0.5, rel=1e-3)
    product = spherical_zernike(4, rho) * spherical_zernike(6, rho) * rho
    assert abs(float(torch.trapezoid(product, rho))) < 1e-3


def test_pupil_rejects_impossible_optics():
    with pytest.raises(ValueError, match="NA"):
        PupilPsf((5, 9, 9), VOXEL.as_tuple(), 1.6, 520.0, 1.515)
    with pytest.raises(ValueError, match="odd"):
        PupilPsf((4, 9, 9), VOXEL.as_tuple(), 1.2, 520.0, 1.515)


def test_effective_na_never_exceeds_the_nominal_one():
    model = PupilPsf((5, 9, 9), VOXEL.as_tuple(), 1.2, 520.0, 1.33)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    for sign in (-1.0, 1.0):  # pushed towards a wider pupil, then a narrower one
        for _ in range(3):
            optimizer.zero_grad()
            (sign * model()[2, 4, 4]).backward()
            optimizer.step()
            model.project()
            assert float(model.effective_na().detach()) <= 1.2
    assert float(model.effective_na().detach()) < 1.2  # the bound does not trap it: it can narrow again

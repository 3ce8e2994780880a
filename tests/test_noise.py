"""The widefield noise model: its fit recovers a known Poisson–Gaussian camera, and its draws have
the variance it claims."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cycledecon.errors import CycledeconError
from cycledecon.noise import NoiseModel, estimate_noise, haar_details


def camera_stack(rng, photons: float, read_noise: float, offset: float = 100.0):
    """A blurred, densely structured stack through a Poisson–Gaussian camera, percentile-normalized
    like the workflow does; returns it with the true model in its normalized units."""
    objects = ndimage.gaussian_filter(rng.random((16, 96, 96)) ** 8, (2.0, 1.2, 1.2))
    expected = photons * objects / objects.max() + 5.0  # 5 e⁻ of background light
    counts = rng.poisson(expected) + rng.normal(0.0, read_noise, expected.shape) + offset
    low, high = np.percentile(counts, [0.1, 99.9])
    scale = high - low
    # counts = scale·v + low and var(counts) = (counts − offset) + read_noise²
    truth = NoiseModel(gain=1.0 / scale, floor=(low - offset + read_noise**2) / scale**2)
    return ((counts - low) / scale).astype(np.float32), truth


@pytest.mark.parametrize(("photons", "read_noise"), [(1000.0, 2.0), (60.0, 2.0), (200.0, 8.0)])
def test_fit_recovers_a_known_poisson_gaussian_camera(rng, photons, read_noise):
    stack, truth = camera_stack(rng, photons, read_noise)
    fitted = estimate_noise(stack[None])
    # what training uses is the noise at the intensities that occur: compare standard deviations
    # over the stack's own range (median to 99.9th percentile). 10 %: the blur leaves a little
    # signal in the Haar details of the brightest blocks, and 150k blocks leave ~1 % sampling error.
    levels = torch.tensor(np.percentile(stack, [50, 90, 99, 99.9]), dtype=torch.float32)
    np.testing.assert_allclose(fitted.std(levels), truth.std(levels), rtol=0.10)


def test_haar_details_cancel_constant_and_linear_signal():
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in (6, 8, 10)), indexing="ij")
    ramp = 3.0 + 0.5 * z - 0.25 * y + 0.125 * x + 0.01 * z * y  # the z·y term varies along one axis at a time
    means, details = haar_details(ramp[None])
    assert means.shape == details.shape == (3 * 4 * 5,)
    assert np.abs(details).max() < 1e-12


def test_draws_have_the_models_variance():
    torch.manual_seed(0)
    model = NoiseModel(gain=0.02, floor=-0.001)
    signal = torch.tensor([0.0, 0.25, 1.0]).repeat_interleave(200_000)
    draws = model.sample(signal).view(3, -1)
    expected = torch.tensor([0.0, 0.02 * 0.25 - 0.001, 0.02 - 0.001])  # below zero variance is clamped
    np.testing.assert_allclose(draws.var(dim=1), expected, rtol=0.02, atol=1e-9)
    np.testing.assert_allclose(draws.mean(dim=1), [0.0, 0.25, 1.0], atol=1e-3)


def test_variance_is_the_model_clamped_at_zero():
    model = NoiseModel(gain=0.02, floor=-0.01)
    observed = torch.tensor([0.0, 1.0, 2.0, 3.0])  # variances 0 (clamped from -0.01), 0.01, 0.03, 0.05
    torch.testing.assert_close(model.variance(observed), torch.tensor([0.0, 0.01, 0.03, 0.05]))
    torch.testing.assert_close(model.std(observed), model.variance(observed).sqrt())


def test_constant_stack_has_no_noise():
    fitted = estimate_noise(np.full((1, 8, 16, 16), 0.3, dtype=np.float32))
    assert fitted.gain == 0.0 and fitted.floor == 0.0


def test_too_thin_volumes_are_refused():
    with pytest.raises(CycledeconError, match="at least 2 voxels"):
        estimate_noise(np.zeros((4, 1, 16, 16), dtype=np.float32))

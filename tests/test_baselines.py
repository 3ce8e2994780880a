"""Richardson–Lucy baseline."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cycledecon.baselines import best_iterations, richardson_lucy
from cycledecon.metrics import compare_to_truth
from cycledecon.psf import gaussian_psf

PSF = gaussian_psf((9, 11, 11), (1.5, 1.2, 1.2))


@pytest.fixture
def beads() -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth beads (peak 100) and their widefield image: blurred by PSF, Poisson noise."""
    rng = np.random.default_rng(0)
    shape = (16, 32, 32)
    truth = np.zeros(shape, dtype=np.float32)
    truth[tuple(rng.integers(2, s - 2, 30) for s in shape)] = 1
    truth = ndi.gaussian_filter(truth, 0.5)
    truth *= 100 / truth.max()
    blurred = ndi.convolve(truth, PSF, mode="constant")
    return truth, rng.poisson(50 * blurred + 10).astype(np.float32)  # ~500 photons peak, 10 offset


def test_rl_with_the_true_psf_beats_the_raw_input(beads):
    truth, raw = beads
    restored = richardson_lucy(raw, PSF, iterations=40)
    assert restored.dtype == np.float32 and restored.shape == raw.shape
    gain_db = compare_to_truth(restored, truth)["psnr_db"] - compare_to_truth(raw, truth)["psnr_db"]
    assert gain_db > 2.0  # measured +4.9 dB; 2 dB is well above seed-to-seed variation


def test_rl_returns_the_input_units(beads):
    _, raw = beads
    restored = richardson_lucy(raw, PSF, iterations=5)
    # RL conserves flux away from the borders; the offset is added back: totals agree to ~5 %.
    assert restored.sum() == pytest.approx(raw.sum(), rel=0.05)
    assert restored.min() >= raw.min() - 1e-3


def test_rl_accepts_negative_intensities(beads):
    _, raw = beads
    shifted = richardson_lucy(raw - 1000, PSF, iterations=5)
    # RL sees the same non-negative data either way, so only the offset differs (float32).
    np.testing.assert_allclose(shifted + 1000, richardson_lucy(raw, PSF, iterations=5), atol=1e-2)


def test_rl_rejects_a_mismatched_psf(beads):
    _, raw = beads
    with pytest.raises(ValueError, match="dimensions"):
        richardson_lucy(raw, PSF[4], iterations=5)


def test_best_iterations_is_the_psnr_argmax(beads):
    truth, raw = beads
    best, psnr_db = best_iterations(raw, PSF, truth, candidates=(40, 1, 10))
    assert sorted(psnr_db) == [1, 10, 40]
    assert best == max(psnr_db, key=psnr_db.get)
    assert best != 1  # one iteration barely deblurs


def test_richardson_lucy_keeps_borders_as_bright_as_the_middle():
    """Zero padding darkens the border of a bright ramp (to 0.37 of it, measured); reflection must not."""
    from cycledecon.psf import gaussian_psf

    ramp = np.broadcast_to(np.linspace(0.5, 1.5, 48, dtype=np.float32), (16, 48, 48)).copy()
    psf = gaussian_psf((9, 15, 15), (2.0, 2.0, 2.0))
    blurred = ndi.convolve(ramp, psf, mode="reflect")
    restored = richardson_lucy(blurred, psf, iterations=20)
    # a ramp is (nearly) its own blur: the border stays within 10 % of the data there
    assert restored[8, 24, -1] == pytest.approx(blurred[8, 24, -1], rel=0.10)

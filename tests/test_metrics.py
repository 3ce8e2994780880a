"""Ground-truth metrics, the FRC resolution estimate and the hallucination check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cycledecon.metrics import (
    NOISE_GAIN_LIMIT,
    background_std_ratio,
    compare_to_truth,
    frc_resolution,
    match_intensity,
)
from cycledecon.voxel import VoxelSize

VOXEL = VoxelSize(0.3, 0.1, 0.1)


def beads(rng: np.random.Generator, shape=(16, 32, 32), n=40, sigma=1.0) -> np.ndarray:
    """Point sources smoothed to ``sigma`` voxels, peak 1."""
    volume = np.zeros(shape)
    volume[tuple(rng.integers(0, s, n) for s in shape)] = 1
    volume = ndi.gaussian_filter(volume, sigma)
    return volume / volume.max()


def test_match_intensity_undoes_an_affine_map():
    truth = beads(np.random.default_rng(0))
    np.testing.assert_allclose(match_intensity(3.0 * truth - 7.0, truth), truth, atol=1e-12)


def test_match_intensity_of_a_constant_is_the_mean():
    truth = beads(np.random.default_rng(0))
    np.testing.assert_allclose(match_intensity(np.ones_like(truth), truth), truth.mean())


def test_identical_volumes_are_perfect():
    truth = beads(np.random.default_rng(1))
    scores = compare_to_truth(truth.copy(), truth)
    assert scores["psnr_db"] == np.inf
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-12)  # 1 up to float rounding
    assert scores["nrmse"] == 0.0
    assert scores["pearson_r"] == pytest.approx(1.0, abs=1e-12)
    assert scores["false_signal_pct"] == scores["false_signal_faces_pct"] == 0.0


def test_scores_ignore_gain_and_offset():
    truth = beads(np.random.default_rng(2))
    result = ndi.gaussian_filter(truth, 1.0)
    plain, scaled = compare_to_truth(result, truth), compare_to_truth(100 * result + 5, truth)
    for key in plain:
        assert scaled[key] == pytest.approx(plain[key], rel=1e-9)  # exact up to float rounding


def test_more_blur_scores_strictly_worse():
    truth = beads(np.random.default_rng(3))
    scores = [compare_to_truth(ndi.gaussian_filter(truth, s), truth) for s in (0.5, 1.0, 2.0, 3.0)]
    for better, worse in zip(scores, scores[1:]):
        assert worse["psnr_db"] < better["psnr_db"]
        assert worse["ssim"] < better["ssim"]
        assert worse["nrmse"] > better["nrmse"]
        assert worse["pearson_r"] < better["pearson_r"]


def interior_beads(rng: np.random.Generator) -> np.ndarray:
    """Beads on the middle planes only, so the first and last planes are empty."""
    truth = np.zeros((20, 32, 32))
    truth[7:13] = beads(rng, shape=(6, 32, 32), n=6)
    return truth


def test_false_signal_finds_a_structure_invented_on_the_first_plane():
    truth = interior_beads(np.random.default_rng(6))
    blurred = ndi.gaussian_filter(truth, 1.0)
    spot = np.zeros_like(truth)
    spot[0, 16, 16] = 1.0
    invented = blurred + 0.5 * blurred.max() * ndi.gaussian_filter(spot, 1.0) / ndi.gaussian_filter(spot, 1.0).max()
    with_spot, without = compare_to_truth(invented, truth), compare_to_truth(blurred, truth)
    # the same blur either way: only the spot separates them. Nearly all of it lies on the face
    # planes, 6 of the 20, so the faces' mean is well above the whole stack's (about 20/6 of it)
    assert with_spot["false_signal_faces_pct"] > 2 * with_spot["false_signal_pct"] > 0
    assert with_spot["false_signal_faces_pct"] > 20 * without["false_signal_faces_pct"]
    # blur alone stays near the beads, inside the reach the empty mask keeps away from
    assert without["false_signal_pct"] < 0.05


def test_anticorrelated_result_keeps_a_negative_pearson():
    truth = beads(np.random.default_rng(4))
    assert compare_to_truth(-truth, truth)["pearson_r"] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("result", "truth", "message"),
    [
        (np.zeros((8, 8, 8)), np.zeros((8, 8, 9)), "same shape"),
        (np.zeros((8, 8)), np.ones((8, 8)), "volume"),
        (np.zeros((8, 8, 8)), np.ones((8, 8, 8)), "constant"),
    ],
)
def test_compare_rejects_bad_input(result, truth, message):
    with pytest.raises(ValueError, match=message):
        compare_to_truth(result, truth)


def test_frc_ranks_a_blurred_volume_as_lower_resolution():
    rng = np.random.default_rng(5)
    sharp = 100 * beads(rng, shape=(16, 64, 64), n=80)
    blurred = ndi.gaussian_filter(sharp, (0, 3, 3))
    blurred *= sharp.max() / blurred.max()  # same peak signal, so only the blur differs
    # FRC measures signal against noise: both get the same Poisson noise model.
    sharp_um = frc_resolution(rng.poisson(sharp + 5).astype(float), VOXEL)
    blurred_um = frc_resolution(rng.poisson(blurred + 5).astype(float), VOXEL)
    # Measured 0.40 (the 4·dx floor) vs ~0.63 µm over seeds; 1.2x leaves room for noise.
    assert blurred_um > 1.2 * sharp_um
    assert 4 * VOXEL.x <= sharp_um < np.inf


def test_frc_of_pure_noise_has_no_resolution():
    noise = np.random.default_rng(6).normal(size=(8, 64, 64))
    assert frc_resolution(noise, VOXEL) > 1.0  # µm: far coarser than any structure here


def test_frc_rejects_a_tiny_volume():
    with pytest.raises(ValueError, match="8 pixels"):
        frc_resolution(np.ones((4, 6, 6)), VOXEL)


@pytest.fixture
def noisy_background() -> tuple[np.ndarray, np.ndarray]:
    """A raw volume (beads over a noisy flat background) and its noise-free version."""
    rng = np.random.default_rng(7)
    clean = 100 * beads(rng, n=10) + 10
    return rng.poisson(clean).astype(float), clean


def test_smoothed_copy_is_not_flagged(noisy_background):
    raw, _ = noisy_background
    assert background_std_ratio(raw, ndi.gaussian_filter(raw, 1.0)) < 1.0  # smoothing removes noise


def test_invented_background_structure_is_flagged(noisy_background):
    raw, clean = noisy_background
    z, y, x = np.indices(raw.shape)
    stripes = 20 * np.sin(2 * np.pi * x / 8) * np.sin(2 * np.pi * y / 8)  # std 10, ~3x raw noise
    assert background_std_ratio(raw, clean + stripes) > NOISE_GAIN_LIMIT


def test_background_ratio_judges_only_the_given_mask(noisy_background):
    raw, clean = noisy_background
    output = clean.copy()
    output[:, :8, :8] += np.random.default_rng(8).normal(0, 10, size=(raw.shape[0], 8, 8))
    invented, untouched = np.zeros(raw.shape, dtype=bool), np.zeros(raw.shape, dtype=bool)
    invented[:, :8, :8] = True
    untouched[:, -8:, -8:] = True
    assert background_std_ratio(raw, output, mask=invented) > NOISE_GAIN_LIMIT
    assert background_std_ratio(raw, output, mask=untouched) < 1.0


def test_background_ratio_rejects_a_noise_free_input():
    flat = np.ones((8, 16, 16))
    with pytest.raises(ValueError, match="flat"):
        background_std_ratio(flat, flat)

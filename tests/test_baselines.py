"""Richardson–Lucy baseline."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import signal
from skimage.restoration import richardson_lucy as skimage_richardson_lucy

from cycledecon.baselines import ExtendedBlur, best_iterations, richardson_lucy, richardson_lucy_series
from cycledecon.metrics import compare_to_truth, match_intensity, psnr
from cycledecon.psf.theory import gaussian_psf, normalize_psf, psf_from_optics
from cycledecon.voxel import VoxelSize

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
    # 2 dB: well above what noise alone moves PSNR here, and well below what 40 iterations with the true
    # PSF recover on isolated beads, so only an RL that stopped deblurring fails
    assert gain_db > 2.0


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


def test_rl_rejects_a_mismatched_psf_and_no_iterations(beads):
    _, raw = beads
    with pytest.raises(ValueError, match="dimensions"):
        richardson_lucy(raw, PSF[4], iterations=5)
    with pytest.raises(ValueError, match="at least 1"):
        richardson_lucy(raw, PSF, iterations=0)


def test_best_iterations_is_the_psnr_argmax(beads):
    truth, raw = beads
    best, psnr_db = best_iterations(raw, PSF, truth, candidates=(40, 1, 10))
    assert sorted(psnr_db) == [1, 10, 40]
    assert best == max(psnr_db, key=psnr_db.get)
    assert best != 1  # one iteration barely deblurs


def test_richardson_lucy_keeps_borders_as_bright_as_the_middle():
    """Zero padding darkens the border of a bright ramp; the extended domain must not."""
    ramp = np.broadcast_to(np.linspace(0.5, 1.5, 48, dtype=np.float32), (16, 48, 48)).copy()
    psf = gaussian_psf((9, 15, 15), (2.0, 2.0, 2.0))
    blurred = ndi.convolve(ramp, psf, mode="reflect")
    restored = richardson_lucy(blurred, psf, iterations=20)
    # a ramp is (nearly) its own blur: the border stays within 10 % of the data there
    assert restored[8, 24, -1] == pytest.approx(blurred[8, 24, -1], rel=0.10)


def test_series_equals_runs_from_scratch(beads):
    _, raw = beads
    series = richardson_lucy_series(raw, PSF, (7, 3))
    assert sorted(series) == [3, 7]
    for count, result in series.items():
        np.testing.assert_array_equal(result, richardson_lucy(raw, PSF, iterations=count))


@pytest.mark.parametrize("psf_shape", [(5, 7, 7), (4, 6, 5)])
def test_extended_blur_is_valid_convolution_and_its_adjoint(psf_shape):
    """Forward: linear convolution seen on the measured window only; adjoint: its transpose
    (<Ax, y> = <x, A^T y>); a point on the object's crop lands where 'same' convolution puts it."""
    rng = np.random.default_rng(0)
    psf = normalize_psf(rng.random(psf_shape))
    shape = (6, 9, 10)
    blur = ExtendedBlur.build(shape, psf)
    extended = tuple(n + k - 1 for n, k in zip(shape, psf_shape))
    obj = np.zeros(blur.grid, dtype=np.float32)
    obj[tuple(slice(0, m) for m in extended)] = rng.random(extended)
    valid = signal.fftconvolve(obj[tuple(slice(0, m) for m in extended)], psf, mode="valid")
    np.testing.assert_allclose(blur.forward(obj), valid, atol=1e-5)
    y = rng.random(shape).astype(np.float32)
    assert np.vdot(blur.forward(obj), y) == pytest.approx(np.vdot(obj, blur.adjoint(y)), rel=1e-5)
    point = np.zeros(shape, dtype=np.float32)
    point[3, 4, 5] = 1
    delta = np.zeros(blur.grid, dtype=np.float32)
    delta[blur.object_crop] = point
    np.testing.assert_allclose(blur.forward(delta), signal.fftconvolve(point, psf, mode="same"), atol=1e-5)


def reflect_padded_richardson_lucy(image: np.ndarray, psf: np.ndarray, iterations: int) -> np.ndarray:
    """RL without an extended domain, for comparison: the data reflected by the PSF's radius per
    side, scikit-image's RL, cropped back (with the library's offset and scale handling)."""
    offset, scale = float(image.min()), float(np.ptp(image))
    margin = [(min(k // 2, n - 1),) * 2 for k, n in zip(psf.shape, image.shape)]
    padded = np.pad((image - offset) / scale, margin, mode="reflect")
    restored = skimage_richardson_lucy(padded, normalize_psf(psf), num_iter=iterations, clip=False)
    return restored[tuple(slice(m, m + n) for (m, _), n in zip(margin, image.shape))] * scale + offset


def test_rl_handles_emitters_outside_a_stack_thinner_than_the_psf():
    """8 planes of 0.25 µm under a 15-plane widefield PSF (NA 0.9 air), point sources inside and
    1 to 3 planes beyond either end of the stack, 200 photons at the brightest voxel. Data reflected
    at the border explain the outside light by mirrored copies inside the stack; the extended
    domain puts it back outside. Margins in dB, after the intensity match: 0.5 over raw and 1.0
    over the reflected RL; both fail when the update is not normalized by the adjoint of the
    stack's mask."""
    rng = np.random.default_rng(0)
    shape, psf = (8, 24, 24), psf_from_optics((15, 17, 17), VoxelSize(0.25, 0.1, 0.1),
                                              {"na": 0.9, "wavelength_nm": 520, "immersion_ri": 1.0})
    margin = [k // 2 for k in psf.shape]
    scene = np.zeros([n + 2 * m for n, m in zip(shape, margin)], dtype=np.float32)
    for _ in range(12):  # inside the stack
        scene[tuple(rng.integers(m + 1, m + n - 1) for n, m in zip(shape, margin))] = 1
    for _ in range(12):  # 1 to 3 planes outside it, either side
        beyond = rng.integers(1, 4)
        z = margin[0] - beyond if rng.integers(2) == 0 else margin[0] + shape[0] - 1 + beyond
        scene[(z, *(rng.integers(m + 2, m + n - 2) for n, m in zip(shape[1:], margin[1:])))] = 1
    crop = tuple(slice(m, m + n) for n, m in zip(shape, margin))
    blurred = signal.fftconvolve(scene, psf, mode="same")[crop]
    raw = rng.poisson(200 * np.clip(blurred, 0, None) / blurred.max() + 10).astype(np.float32)
    truth = ndi.gaussian_filter(scene, 0.5)[crop]

    def score(result: np.ndarray) -> float:
        return psnr(match_intensity(result, truth), truth)

    extended = score(richardson_lucy(raw, psf, iterations=20))
    reflected = score(reflect_padded_richardson_lucy(raw, psf, iterations=20))
    assert extended > score(raw) + 0.5
    assert extended > reflected + 1.0


def test_baseline_store_records_psf_iterations_and_boundary(tmp_path, beads):
    from helpers import sha256
    from test_io import validate_ngff

    from cycledecon.baselines import load_psf, write_baseline
    from cycledecon.io import image_name, read_ome_zarr, write_ome_tiff, write_ome_zarr

    voxel = VoxelSize(0.25, 0.1, 0.1)
    raw = write_ome_zarr(beads[1], tmp_path / "wf_01.ome.zarr", voxel, attrs={"sample": "wf_01", "campaign": "c"})
    psf_file = write_ome_tiff(PSF, tmp_path / "learned_psf.ome.tif", voxel)
    learned = load_psf("learned", voxel, path=psf_file)
    out = write_baseline(raw, tmp_path / "rl_learned.ome.zarr", learned, iterations=3)
    validate_ngff(out, "0.5")
    data, voxel_size, attrs = read_ome_zarr(out)
    np.testing.assert_allclose(data.compute(), richardson_lucy(beads[1], PSF, iterations=3), rtol=1e-5, atol=1e-3)
    assert voxel_size == voxel and image_name(out) == "wf_01"
    assert attrs["method"] == "Richardson-Lucy, learned PSF" and attrs["iterations"] == 3
    assert attrs["sample"] == "wf_01" and attrs["input"] == str(raw.resolve())
    assert attrs["psf"] == {"source": "learned", "shape": [9, 11, 11], "voxel_size_um": [0.25, 0.1, 0.1],
                            "path": str(psf_file.resolve()), "sha256": sha256(psf_file)}  # fmt: skip
    assert attrs["boundary"]["handling"] == "extended domain"
    assert attrs["boundary"]["extension_voxels"] == [8, 10, 10]

    optics = {"na": 1.4, "wavelength_nm": 520.0, "immersion_ri": 1.515}
    theoretical = load_psf("theoretical", voxel, optics=optics, shape=(9, 11, 11))
    attrs = read_ome_zarr(write_baseline(raw, tmp_path / "rl_theoretical.ome.zarr", theoretical, 2))[2]
    assert attrs["psf"] == {"source": "theoretical", "shape": [9, 11, 11], "voxel_size_um": [0.25, 0.1, 0.1],
                            "optics": optics}  # fmt: skip
    assert attrs["method"] == "Richardson-Lucy, theoretical PSF" and attrs["iterations"] == 2


def test_baseline_psf_needs_its_source_and_inputs():
    from cycledecon.baselines import load_psf
    from cycledecon.errors import CycledeconError

    voxel = VoxelSize(0.25, 0.1, 0.1)
    with pytest.raises(CycledeconError, match="unknown PSF source 'measured'; choose one of theoretical, learned, true"):
        load_psf("measured", voxel)
    with pytest.raises(CycledeconError, match="the theoretical PSF needs the optics"):
        load_psf("theoretical", voxel)
    with pytest.raises(CycledeconError, match="the true PSF needs a file"):
        load_psf("true", voxel)


def test_baseline_can_be_written_as_ngff_04(tmp_path, beads):
    from test_io import validate_ngff

    from cycledecon.baselines import load_psf, write_baseline
    from cycledecon.io import read_ome_zarr, write_ome_zarr

    voxel = VoxelSize(0.25, 0.1, 0.1)
    raw = write_ome_zarr(beads[1], tmp_path / "wf_01.ome.zarr", voxel)
    psf = load_psf("theoretical", voxel, optics={"na": 1.4, "wavelength_nm": 520.0, "immersion_ri": 1.515}, shape=(5, 7, 7))
    out = write_baseline(raw, tmp_path / "rl.ome.zarr", psf, iterations=1, ngff_version="0.4")
    validate_ngff(out, "0.4")
    assert read_ome_zarr(out)[2]["psf"]["source"] == "theoretical"

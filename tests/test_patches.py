"""Unpaired patch extraction: domains, split by sample, determinism, foreground filter, errors."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import ndimage

from cycledecon.config.patches import parse_patch_config
from cycledecon.errors import CycledeconError
from cycledecon.io import read_ome_zarr, write_ome_zarr
from cycledecon.patches import ROOM_SUFFIX, SampleInput, extract_patches
from cycledecon.voxel import VoxelSize

VOXEL = VoxelSize(0.5, 0.2, 0.2)
SHAPE = (8, 24, 24)
NORMALIZATION = {"method": "clahe", "percentiles": [0.1, 99.9], "applied": {"percentile_values": [1.0, 9.0]}}
#: Each stack's foreground has a value of its own, so a patch's maximum names the stack it came from;
#: widefield values lie below 0.5, reference values above.
VALUES = {"wf0": 0.20, "wf1": 0.25, "wf2": 0.30, "ref0": 0.70, "ref1": 0.75}
#: Small patches of the striped stacks: no context margin, Otsu's foreground of dense stripes, a quarter
#: of the stacks for validation, references neither smoothed nor wrapped past their faces.
CONFIG = {"shape": [4, 8, 8], "n_train": 6, "n_val": 3, "seed": 7, "context_um": [0.0, 0.0, 0.0],
          "val_fraction": 0.25, "foreground": "otsu", "min_foreground_fraction": 0.1,
          "reference_smoothing_voxels": 0.0, "reference_past_faces": "mirror"}  # fmt: skip
OPTICS = {"na": 1.4, "wavelength_nm": 520.0, "immersion_ri": 1.515}


def _write(tmp_path: Path, name: str, role: str, volume: np.ndarray, voxel: VoxelSize = VOXEL) -> SampleInput:
    path = write_ome_zarr(volume, tmp_path / f"{name}.ome.zarr", voxel, attrs={"normalization": NORMALIZATION})
    return SampleInput(name=name, role=role, path=path)


def _striped(value: float) -> np.ndarray:
    """Foreground stripes 4 voxels wide along x at `value` on a zero background: half the voxels."""
    x = np.arange(SHAPE[2])
    return np.broadcast_to(np.where((x // 4) % 2 == 0, value, 0.0), SHAPE).astype(np.float32)


@pytest.fixture
def campaign(tmp_path) -> list[SampleInput]:
    return [_write(tmp_path, name, "widefield" if name.startswith("wf") else "reference", _striped(value))
            for name, value in VALUES.items()]


def outputs(folder: Path) -> tuple[Path, Path]:
    """The patch store and the manifest in `folder`, as the workflow names them."""
    return folder / "patches.zarr", folder / "manifest.csv"


def _read(patches: Path) -> tuple[zarr.Group, pd.DataFrame]:
    return zarr.open_group(str(patches), mode="r"), pd.read_csv(outputs(patches.parent)[1])


def test_patches_come_from_their_own_domain_and_position(campaign, tmp_path):
    path = extract_patches(campaign, *outputs(tmp_path / "out"), CONFIG, "c1", OPTICS)
    group, manifest = _read(path)
    for key in ("A_train", "A_val", "B_train", "B_val"):
        expected = (CONFIG["n_train"] if key.endswith("train") else CONFIG["n_val"], 4, 8, 8)
        assert group[key].shape == expected and group[key].dtype == np.float32
    assert set(manifest.loc[manifest.domain == "A", "sample"]) <= {"wf0", "wf1", "wf2"}
    assert set(manifest.loc[manifest.domain == "B", "sample"]) <= {"ref0", "ref1"}
    stacks = {s.name: read_ome_zarr(s.path)[0].compute() for s in campaign}
    for row in manifest.itertuples():
        patch = group[row.array][row.index]
        # By content: the maximum is the stack's foreground value, so A holds widefield data only.
        assert patch.max() == pytest.approx(VALUES[row.sample])
        assert (patch.max() < 0.5) == (row.domain == "A")
        # By position: the manifest origin reproduces the patch exactly.
        np.testing.assert_array_equal(patch, stacks[row.sample][row.z:row.z + 4, row.y:row.y + 8, row.x:row.x + 8])
        assert row.foreground_fraction >= 0.1
    assert dict(group.attrs)["voxel_size_um"] == [0.5, 0.2, 0.2]
    assert dict(group.attrs)["patch_shape"] == [4, 8, 8]
    assert dict(group.attrs)["campaign"] == "c1"
    assert dict(group.attrs)["optics"] == OPTICS
    assert dict(group.attrs)["normalization"] == {"method": "clahe", "percentiles": [0.1, 99.9]}


def test_validation_samples_never_in_training(campaign, tmp_path):
    path = extract_patches(campaign, *outputs(tmp_path / "out"), {**CONFIG, "val_samples": ["wf1", "ref0"]}, "c1", None)
    group, manifest = _read(path)
    by_split = manifest.groupby("split")["sample"].agg(set)
    assert by_split["val"] == {"wf1", "ref0"}
    assert by_split["train"] == {"wf0", "wf2", "ref1"}
    assert dict(group.attrs)["splits"]["A_val"] == ["wf1"]


def test_val_fraction_holds_out_whole_samples(campaign, tmp_path):
    _, manifest = _read(extract_patches(campaign, *outputs(tmp_path / "out"), CONFIG, "c1", None))
    for domain in "AB":
        rows = manifest[manifest.domain == domain]
        train, val = set(rows.loc[rows.split == "train", "sample"]), set(rows.loc[rows.split == "val", "sample"])
        assert train and val and not train & val


def test_same_seed_same_patches_other_seed_other_positions(campaign, tmp_path):
    first = extract_patches(campaign, *outputs(tmp_path / "one"), CONFIG, "c1", None)
    second = extract_patches(list(reversed(campaign)), *outputs(tmp_path / "two"), CONFIG, "c1", None)
    other = extract_patches(campaign, *outputs(tmp_path / "three"), {**CONFIG, "seed": 8}, "c1", None)
    (g1, m1), (g2, m2), (_, m3) = _read(first), _read(second), _read(other)
    pd.testing.assert_frame_equal(m1, m2)  # the order of the sample list does not matter either
    for key in ("A_train", "A_val", "B_train", "B_val"):
        np.testing.assert_array_equal(g1[key][:], g2[key][:])
    assert not m1[["sample", "z", "y", "x"]].equals(m3[["sample", "z", "y", "x"]])


def test_single_stack_domain_validates_on_a_held_out_y_slab_keeping_80_percent(campaign, tmp_path, caplog):
    """80 rows, val_fraction 0.34: 16 rows (⌊0.2 × 80⌋, not 27) are held out, 64 train (80 %)."""
    tall = np.broadcast_to(_striped(0.7)[:, :1, :], (8, 80, 24)).copy()
    one_reference = [s for s in campaign if s.role == "widefield"] + [_write(tmp_path, "tall", "reference", tall)]
    config = {**CONFIG, "val_fraction": 0.34}
    _, manifest = _read(extract_patches(one_reference, *outputs(tmp_path / "out"), config, "c1", None))
    ref = manifest[manifest["sample"] == "tall"]
    assert (ref[ref.split == "train"].y + 8 <= 64).all() and (ref[ref.split == "val"].y >= 64).all()
    assert "one reference stack (tall): training from its first 64 of 80 rows (80 %), validation from the last 16" \
        in caplog.text


def test_single_short_stack_trains_on_all_rows_and_says_validation_overlaps(campaign, tmp_path, caplog):
    """24 rows: ⌊0.2 × 24⌋ = 4 rows cannot hold an 8-row patch, so validation reuses the last 8 rows."""
    one_reference = [s for s in campaign if s.name != "ref1"]
    _, manifest = _read(extract_patches(one_reference, *outputs(tmp_path / "out"), CONFIG, "c1", None))
    ref = manifest[manifest["sample"] == "ref0"]
    assert (ref[ref.split == "val"].y >= SHAPE[1] - 8).all()
    assert "one reference stack (ref0): training from all 24 rows" in caplog.text
    assert "not independent" in caplog.text


def test_all_background_stack_is_a_clear_error(campaign, tmp_path):
    rng = np.random.default_rng(0)
    sparse = (rng.random(SHAPE) < 0.002).astype(np.float32)  # a few bright voxels, the rest background
    samples = [s for s in campaign if s.role == "widefield"] + [_write(tmp_path, "empty", "reference", sparse)]
    with pytest.raises(CycledeconError, match=r"campaign c1: sample empty \(reference, (train|val)\): only 0 of \d "
                                              r"patches have ≥ 0\.1 .* foreground level .* in \d+ tries"):
        extract_patches(samples, *outputs(tmp_path / "out"), CONFIG, "c1", None)
    assert not (tmp_path / "out" / "patches.zarr").exists()  # nothing half-written is left


def test_stack_smaller_than_the_patch_is_a_clear_error(campaign, tmp_path):
    small = _write(tmp_path, "tiny", "reference", _striped(0.9)[:3])
    samples = [s for s in campaign if s.role == "widefield"] + [small, campaign[-1]]
    with pytest.raises(CycledeconError, match=r"sample tiny .* region 3×24×24 is smaller than the patch 4×8×8"):
        extract_patches(samples, *outputs(tmp_path / "out"), {**CONFIG, "val_samples": ["wf0", "ref1"]}, "c1", None)


def test_campaign_without_references_is_an_error(campaign, tmp_path):
    widefield = [s for s in campaign if s.role == "widefield"]
    with pytest.raises(CycledeconError, match=r"campaign c1: no reference stack"):
        extract_patches(widefield, *outputs(tmp_path / "out"), CONFIG, "c1", None)


def test_widefield_stacks_of_other_voxel_sizes_are_an_error(campaign, tmp_path):
    other = _write(tmp_path, "wf9", "widefield", _striped(0.3), VoxelSize(0.3, 0.1, 0.1))
    with pytest.raises(CycledeconError, match=r"widefield samples wf0 and wf9 have different voxel sizes"):
        extract_patches([*campaign, other], *outputs(tmp_path / "out"), CONFIG, "c1", None)


def test_reference_of_another_voxel_size_is_resampled_to_the_widefield_grid(campaign, tmp_path, caplog):
    """A reference at 2× the widefield voxel size in z and 0.5× in y/x covers the same extent in
    4 × 48 × 48 voxels; its patches are those of the stack resized (anti-aliased) to 8 × 24 × 24,
    and the store and the manifest record its own voxel size. Coarser in z: one warning names z."""
    from skimage.transform import resize

    own = VoxelSize(1.0, 0.1, 0.1)
    x = np.arange(48)
    sharp = np.broadcast_to(np.where((x // 8) % 2 == 0, 0.9, 0.0), (4, 48, 48)).astype(np.float32)
    samples = [s for s in campaign if s.role == "widefield"] + [_write(tmp_path, "ref9", "reference", sharp, own)]
    path = extract_patches(samples, *outputs(tmp_path / "out"), {**CONFIG, "reference_units": "own"}, "c1", None)
    group, manifest = _read(path)
    assert dict(group.attrs)["voxel_size_um"] == [0.5, 0.2, 0.2]
    assert dict(group.attrs)["resampling"] == {"ref9": {
        "voxel_size_um": [1.0, 0.1, 0.1], "target_voxel_size_um": [0.5, 0.2, 0.2],
        "shape": [4, 48, 48], "resampled_shape": [8, 24, 24]}}  # fmt: skip
    expected = resize(sharp, (8, 24, 24), order=1, mode="reflect", anti_aliasing=True, preserve_range=True)
    rows = manifest[manifest["sample"] == "ref9"]
    assert len(rows) == CONFIG["n_train"] + CONFIG["n_val"]
    for row in rows.itertuples():
        assert (row.sample_dz_um, row.sample_dy_um, row.sample_dx_um) == (1.0, 0.1, 0.1)
        np.testing.assert_allclose(group[row.array][row.index],
                                   expected[row.z:row.z + 4, row.y:row.y + 8, row.x:row.x + 8], atol=1e-5)
    widefield = manifest[manifest.domain == "A"]
    assert (widefield[["sample_dz_um", "sample_dy_um", "sample_dx_um"]] == [0.5, 0.2, 0.2]).all().all()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "coarsely" in r.getMessage()]
    assert len(warnings) == 1 and "ref9" in warnings[0] and "z 1 vs 0.5 µm" in warnings[0] and " y " not in warnings[0]
    assert not list((tmp_path / "out").glob(".resampled-*"))  # the scratch copy is removed


def test_reference_of_the_same_voxel_size_is_not_resampled(campaign, tmp_path):
    group, _ = _read(extract_patches(campaign, *outputs(tmp_path / "out"), CONFIG, "c1", None))
    assert dict(group.attrs)["resampling"] == {}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"shape": [4, 8]}, r"patches\.shape: expected a list of 3"),
        ({"val_samples": "wf1"}, r"patches\.val_samples: expected a list of values"),
        ({"val_fraction": 1.0}, r"patches\.val_fraction: invalid value 1\.0"),
        ({"min_fg": 0.1}, r"patches\.min_fg: unknown key"),
    ],
)
def test_bad_config_names_the_key(section, message):
    with pytest.raises(CycledeconError, match=message):
        parse_patch_config(section)


def test_patches_carry_their_context_margin(campaign, tmp_path):
    """context_um 1.0 × 1.0 × 1.0 µm is 2 × 5 × 5 voxels here (0.5, 0.2, 0.2 µm, rounded up);
    beyond the stack's edges the margin is the stack mirrored there."""
    path = extract_patches(campaign, *outputs(tmp_path / "out"), CONFIG | {"context_um": [1.0, 1.0, 1.0], "n_val": 0},
                           "c1", OPTICS)
    group, manifest = _read(path)
    assert dict(group.attrs)["context_voxels"] == [2, 5, 5]
    assert group["A_train"].shape == (6, 8, 18, 18)
    stacks = {s.name: read_ome_zarr(s.path)[0].compute() for s in campaign}
    scaling = dict(group.attrs)["reference_scaling"]
    assert set(scaling) == {"ref0", "ref1"}  # references only, in widefield units (tested below)
    for row in manifest.itertuples():
        mirrored = np.pad(stacks[row.sample], [(2, 2), (5, 5), (5, 5)], mode="symmetric")
        expected = mirrored[row.z:row.z + 8, row.y:row.y + 18, row.x:row.x + 18]  # origin shifts by the pad
        if row.sample in scaling:
            expected = (expected - scaling[row.sample]["offset"]) / scaling[row.sample]["scale"]
        np.testing.assert_allclose(group[row.array][row.index], expected, rtol=1e-5, atol=1e-6)
    assert (manifest.z == 0).any() or (manifest.z == SHAPE[0] - 4).any()  # some patches at the edge


@pytest.mark.parametrize("fill", ["mirror", "wrap"])
def test_reference_context_past_the_stack_and_the_room_to_its_faces(tmp_path, fill):
    """References take `reference_past_faces` past their stack (wrap: the stack's far side, structure
    the patch does not show), widefield patches stay mirrored; every patch records its distance to
    its stack's faces, which its manifest origin gives."""
    rng = np.random.default_rng(4)
    stacks = {name: rng.random(SHAPE).astype(np.float32) * value for name, value in VALUES.items()}
    samples = [_write(tmp_path, name, "widefield" if name.startswith("wf") else "reference", volume)
               for name, volume in stacks.items()]
    config = CONFIG | {"context_um": [1.0, 1.0, 1.0], "n_val": 0, "min_foreground_fraction": 0.0,
                       "reference_units": "own", "reference_past_faces": fill}
    group, manifest = _read(extract_patches(samples, *outputs(tmp_path / "out"), config, "c1", OPTICS))
    for row in manifest.itertuples():
        mode = "wrap" if fill == "wrap" and row.domain == "B" else "symmetric"
        padded = np.pad(stacks[row.sample], [(2, 2), (5, 5), (5, 5)], mode=mode)
        expected = padded[row.z : row.z + 8, row.y : row.y + 18, row.x : row.x + 18]
        np.testing.assert_allclose(group[row.array][row.index], expected, rtol=1e-6)
        room = group[row.array + ROOM_SUFFIX][row.index]
        origin = (row.z, row.y, row.x)
        assert room.tolist() == [[o, n - o - p] for o, p, n in zip(origin, CONFIG["shape"], SHAPE)]
    assert (manifest.z == 0).any() and (manifest.domain == "B").any()


def test_context_wider_than_the_stack_mirrors_it(tmp_path):
    """A 3-voxel margin around a 4-plane patch in an 8-plane stack: every plane is still real data."""
    from cycledecon.patches import read_window
    stack = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((8, 6, 6), np.float32)
    window = read_window(da.from_array(stack), (0, 1, 1), (4, 4, 4), (3, 1, 1))
    np.testing.assert_array_equal(window[:, 2, 2], [2, 1, 0, 0, 1, 2, 3, 4, 5, 6])


def test_widefield_units_normalize_the_blurred_reference_as_a_widefield_stack():
    """Offset and scale are the normalization percentiles of the reference blurred by the PSF
    (computed here independently: mirrored edges, a direct FFT convolution of the whole stack);
    after rescaling, the blurred reference has those percentiles at 0 and 1. Tolerances: float32
    FFTs over ~10⁴ voxels."""
    from scipy.signal import fftconvolve

    from cycledecon.patches import widefield_units
    from cycledecon.psf.theory import gaussian_psf
    rng = np.random.default_rng(0)
    sharp = (rng.random((12, 20, 20)) > 0.97).astype(np.float32) * 5 + 0.3
    psf = gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)).astype(np.float32)
    blurred = fftconvolve(np.pad(sharp, [(2, 2), (3, 3), (3, 3)], mode="symmetric"), psf, mode="valid")
    low, high = np.percentile(blurred, [1, 99])
    offset, scale = widefield_units(da.from_array(sharp, chunks=(6, 10, 10)), psf, (1, 99))
    assert offset == pytest.approx(low, rel=1e-4) and scale == pytest.approx(high - low, rel=1e-4)
    rescaled = da.from_array((sharp - offset) / scale, chunks=(6, 10, 10))
    again = widefield_units(rescaled, psf, (1, 99))
    assert again == pytest.approx((0.0, 1.0), abs=1e-4)


def test_references_keep_their_own_scale_on_request_or_without_optics(campaign, tmp_path, caplog):
    config = CONFIG | {"context_um": [1.0, 1.0, 1.0], "n_val": 0}
    own = extract_patches(campaign, *outputs(tmp_path / "own"), config | {"reference_units": "own"}, "c1", OPTICS)
    no_optics = extract_patches(campaign, *outputs(tmp_path / "no_optics"), config, "c1", None)
    assert "need" in caplog.text and "optics" in caplog.text
    widefield = extract_patches(campaign, *outputs(tmp_path / "wf"), config, "c1", OPTICS)
    for path in (own, no_optics):
        group, manifest = _read(path)
        assert dict(group.attrs)["reference_scaling"] is None
        ref = manifest[manifest.domain == "B"].iloc[0]
        assert group[ref["array"]][ref["index"]].max() == pytest.approx(VALUES[ref["sample"]])  # the stack's own value
    group, manifest = _read(widefield)
    ref = manifest[manifest.domain == "B"].iloc[0]
    assert group[ref["array"]][ref["index"]].max() != pytest.approx(VALUES[ref["sample"]], rel=0.01)


def test_reference_smoothing_takes_the_noise_out_of_references_only(tmp_path):
    rng = np.random.default_rng(3)
    noisy = {name: (_striped(value) + rng.normal(0, 0.05, SHAPE)).astype(np.float32) for name, value in VALUES.items()}
    samples = [_write(tmp_path, name, "widefield" if name.startswith("wf") else "reference", volume)
               for name, volume in noisy.items()]
    config = CONFIG | {"n_val": 0, "min_foreground_fraction": 0.0}
    plain = extract_patches(samples, *outputs(tmp_path / "plain"), config, "c1", None)
    smoothing = config | {"reference_smoothing_voxels": 0.7}
    smooth = extract_patches(samples, *outputs(tmp_path / "smooth"), smoothing, "c1", None)
    (g_plain, m_plain), (g_smooth, m_smooth) = _read(plain), _read(smooth)
    positions = ["array", "index", "sample", "z", "y", "x"]
    pd.testing.assert_frame_equal(m_plain[positions], m_smooth[positions])  # only the values differ
    assert np.array_equal(g_plain["A_train"][...], g_smooth["A_train"][...])
    assert dict(g_smooth.attrs)["reference_smoothing_voxels"] == 0.7
    for row in m_smooth[m_smooth.domain == "B"].itertuples():
        z, y, x = row.z, row.y, row.x
        whole = ndimage.gaussian_filter(noisy[row.sample], 0.7)  # the whole stack: no seams between blocks
        np.testing.assert_allclose(g_smooth["B_train"][row.index], whole[z : z + 4, y : y + 8, x : x + 8], atol=1e-5)


def test_negative_reference_smoothing_names_the_key():
    with pytest.raises(CycledeconError, match="patches.reference_smoothing_voxels"):
        parse_patch_config({"reference_smoothing_voxels": -1.0})


def test_an_output_that_cannot_be_written_is_refused_before_any_patch_is_cut(campaign, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    store = tmp_path / "out" / "patches.zarr"
    with pytest.raises(CycledeconError, match="manifest.csv: cannot be written: .*a_file is a file"):
        extract_patches(campaign, store, tmp_path / "a_file" / "manifest.csv", CONFIG, "c1", None)
    assert not store.exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(CycledeconError, match="mine: already exists and is not a regular file"):
        extract_patches(campaign, tmp_path / "mine", tmp_path / "out" / "manifest.csv", CONFIG, "c1", None)
    assert (tmp_path / "mine").is_dir() and not (tmp_path / "out" / "manifest.csv").exists()

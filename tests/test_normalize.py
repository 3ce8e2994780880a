"""Normalization: CLAHE against scikit-image, its range and blockwise exactness, percentile linearity,
kernel in voxels, config."""

from __future__ import annotations

import ast
import inspect
import re

import numpy as np
import pytest
from skimage.exposure import equalize_adapthist

from cycledecon.config.normalize import CLAHE_GREY_LEVELS, parse_normalize_config
from cycledecon.errors import CycledeconError
from cycledecon.io import read_ome_zarr, write_ome_zarr
from cycledecon.normalize import (
    clahe,
    kernel_voxels,
    linear_inverse,
    normalize,
    normalize_array,
    rescale,
    strided_sample,
)
from cycledecon.voxel import VoxelSize

VOXEL = VoxelSize(0.5, 0.2, 0.2)
#: Kernel of (5, 9, 7) voxels at VOXEL: none of the volume's sides below is a multiple of it, so
#: the last block along every axis is partial and the end reflection is exercised.
CLAHE = {"method": "clahe", "clahe": {"kernel_um": [2.5, 1.8, 1.4]}}


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """Blurry-looking blobs on a sloped background with gamma noise; (23, 50, 40) voxels."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:23, :50, :40]
    blobs = sum(np.exp(-((z - cz) ** 2 / 8 + (y - cy) ** 2 / 30 + (x - cx) ** 2 / 30))
                for cz, cy, cx in rng.uniform((0, 0, 0), (23, 50, 40), size=(6, 3)))
    return (100 + 2 * y + 800 * blobs + rng.gamma(2.0, 10.0, z.shape)).astype(np.float32)


def test_clahe_chunked_store_equals_whole_and_lies_in_unit_range(volume, tmp_path):
    source = write_ome_zarr(volume, tmp_path / "raw.ome.zarr", VOXEL, attrs={"channel": 0})
    whole = normalize(source, tmp_path / "whole.ome.zarr", CLAHE)
    # 4000 voxels is below one minimal block (3 kernels per axis), so every block is one kernel wide:
    # the finest blocking there is, and the one most likely to expose a misaligned tile grid.
    chunked = normalize(source, tmp_path / "chunked.ome.zarr", {**CLAHE, "chunk_voxels": 4000})
    a, voxel, attrs_a = read_ome_zarr(whole)
    b, _, attrs_b = read_ome_zarr(chunked)
    a, b = a.compute(), b.compute()
    assert a.dtype == np.float32 and voxel == VOXEL
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert attrs_a["normalization"]["applied"]["chunked"] is False
    assert attrs_b["normalization"]["applied"]["chunked"] is True
    assert attrs_b["normalization"]["applied"]["block_shape"] == [5, 9, 7]
    assert attrs_b["channel"] == 0  # the input's attributes are kept
    # Tolerance 0: every tile a core voxel uses is complete in its block and identical to the global
    # tile, and the per-voxel arithmetic is the same, so the results are bit for bit equal.
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chunk_voxels", [12_000, 30_000])
def test_clahe_in_memory_blocks_equal_whole(volume, chunk_voxels):
    whole, _ = normalize_array(volume, VOXEL, CLAHE)
    blocked, record = normalize_array(volume, VOXEL, {**CLAHE, "chunk_voxels": chunk_voxels})
    assert record["applied"]["chunked"]
    np.testing.assert_array_equal(whole, blocked)  # exact: see the test above


def assert_same_levels(ours: np.ndarray, reference: np.ndarray) -> None:
    """`ours` (14-bit levels / (2¹⁴ − 1)) holds the same levels as skimage's `reference` output.

    equalize_adapthist ends by stretching its levels to [0, 1] by their own min and max, so ours are
    stretched the same way before comparing. atol 1e-3 on levels: a float32 quotient below 1 is
    within 2⁻²⁴ of exact, times 2¹⁴ levels. atol 1e-6 after the stretch: float32 rounding of
    skimage's stretch only, while a single differing level would move a voxel by at least
    1 / (2¹⁴ − 1) ≈ 6e-5; so this admits rounding, never a different level.
    """
    levels = ours.astype(np.float64) * (CLAHE_GREY_LEVELS - 1)
    np.testing.assert_allclose(levels, np.rint(levels), rtol=0, atol=1e-3)
    levels = np.rint(levels)
    stretched = (levels - levels.min()) / (levels.max() - levels.min())
    np.testing.assert_allclose(stretched, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("settings", [{}, {"clip_limit": 0.0}, {"clip_limit": 0.002, "nbins": 100}])
def test_blockwise_clahe_equals_skimage_on_the_whole_volume(volume, settings):
    """In blocks, with the stack's percentile rescale: equalize_adapthist on the whole rescaled volume."""
    params = {**CLAHE, "clahe": {**CLAHE["clahe"], **settings}, "chunk_voxels": 4000}
    out, record = normalize_array(volume, VOXEL, params)
    assert record["applied"]["chunked"]
    low, high = record["applied"]["percentile_values"]
    expected = equalize_adapthist(
        rescale(volume, low, high, clip=True),
        kernel_size=record["applied"]["kernel_voxels"],
        clip_limit=record["clahe"]["clip_limit"],
        nbins=record["clahe"]["nbins"],
    )
    assert_same_levels(out, expected)


@pytest.mark.parametrize(
    ("shape", "kernel", "clip_limit", "nbins"),
    [
        ((3, 20, 17), (9, 5, 5), 0.01, 100),  # an axis shorter than its kernel: the end reflection wraps
        ((4, 9, 10), (1, 1, 3), 0.05, 16),  # one-voxel kernels: no interpolation along z and y
        ((12, 30, 31), (5, 9, 9), 0.001, 256),  # a limit of 1 count: not all the excess fits back
        ((10, 16, 16), (4, 8, 6), 1.0, 64),  # even kernels, no clipping
    ],
)
def test_clahe_equals_skimage_on_edge_cases(shape, kernel, clip_limit, nbins):
    unit = np.clip(np.random.default_rng(0).gamma(2.0, 0.2, shape), 0.0, 1.0).astype(np.float32)
    unit.flat[:2] = 0.0, 1.0  # spans [0, 1], as a clipped percentile rescale does
    expected = equalize_adapthist(unit, kernel_size=kernel, clip_limit=clip_limit, nbins=nbins)
    assert_same_levels(clahe(unit, kernel, clip_limit, nbins), expected)


def test_no_private_names_of_dependencies_are_used():
    """Private modules and functions (a leading underscore) may change in any release."""
    source = inspect.getsource(inspect.getmodule(clahe))
    imported = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            imported += [f"{node.module}.{alias.name}" for alias in node.names]
    assert imported and not [name for name in imported if re.search(r"(^|\.)_", name)]
    assert not re.search(r"skimage(\.\w+)*\._", source)


def test_percentile_mode_is_linear(volume):
    params = {"method": "percentile", "percentiles": [1.0, 99.0], "clip": False}
    out, record = normalize_array(volume, VOXEL, params)
    scaled, _ = normalize_array(37.0 * volume + 500.0, VOXEL, params)
    # 1e-5: float32 rounding of values of order 1 after scaling by 37 and offsetting (eps ~ 1e-7 × 3e4
    # / range); percentiles interpolate linearly, so they scale exactly with the input.
    np.testing.assert_allclose(scaled, out, atol=1e-5)
    low, high = record["applied"]["percentile_values"]
    np.testing.assert_allclose(out, (volume - low) / (high - low), atol=1e-6)
    assert out.min() < 0.0 and out.max() > 1.0  # clip: false keeps the tails


def test_percentile_mode_clips_on_request(volume):
    out, _ = normalize_array(volume, VOXEL, {"method": "percentile", "clip": True})
    assert out.min() == 0.0 and out.max() == 1.0
    unclipped, _ = normalize_array(volume, VOXEL, {"method": "percentile"})
    assert unclipped.min() < 0.0 and unclipped.max() > 1.0


def test_kernel_in_voxels_follows_voxel_size():
    assert kernel_voxels((4.0, 8.0, 8.0), VoxelSize(0.5, 0.2, 0.1)) == (9, 41, 81)
    assert kernel_voxels((4.0, 8.0, 8.0), VoxelSize(1.0, 0.4, 0.4)) == (5, 21, 21)
    # Nearest odd integer, ties up, at least 1: 2.9 → 3, 2.0 → 3, 1.9 → 1, 0.1 → 1.
    assert kernel_voxels((2.9, 2.0, 1.9), VoxelSize(1.0, 1.0, 1.0)) == (3, 3, 1)
    assert kernel_voxels((0.1, 0.1, 0.1), VoxelSize(1.0, 1.0, 1.0)) == (1, 1, 1)


def test_stored_record_is_reapplied_with_fresh_percentiles(volume):
    _, record = normalize_array(volume, VOXEL, CLAHE)
    brighter, again = normalize_array(2.0 * volume, VoxelSize(1.0, 0.4, 0.4), record)
    assert again["applied"]["percentile_values"] == pytest.approx(
        [2.0 * v for v in record["applied"]["percentile_values"]], rel=1e-6
    )
    assert again["applied"]["kernel_voxels"] == [3, 5, 3]  # same µm, coarser voxels
    assert {k: v for k, v in again.items() if k != "applied"} == {
        k: v for k, v in record.items() if k != "applied"
    }


def test_percentiles_of_large_volumes_come_from_a_strided_sample():
    data = np.arange(40 * 30 * 20, dtype=np.float32).reshape(40, 30, 20)
    sample, step = strided_sample(data, 2999)
    assert step == 3 and sample.shape == (14, 10, 7)
    np.testing.assert_array_equal(sample, data[::3, ::3, ::3])
    assert strided_sample(data, 3000)[1] == 2  # 20 × 15 × 10 = 3000
    assert strided_sample(data, data.size)[1] == 1


def test_constant_volume_is_a_clear_error(tmp_path):
    source = write_ome_zarr(np.full((4, 8, 8), 7, np.uint16), tmp_path / "flat.ome.zarr", VOXEL)
    with pytest.raises(CycledeconError, match=r"flat\.ome\.zarr: .*both 7\.0.*constant"):
        normalize(source, tmp_path / "out.ome.zarr")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"clahe": {"kernel_size": [1, 2, 3]}}, r"normalize\.clahe\.kernel_size: unknown key"),
        ({"method": "zscore"}, r"normalize\.method: must be one of clahe, percentile"),
        ({"percentiles": [99.0, 1.0]}, r"normalize\.percentiles: invalid value"),
        ({"clahe": {"nbins": 256.5}}, r"normalize\.clahe\.nbins: expected an integer"),
        ({"chunk_voxels": 0}, r"normalize\.chunk_voxels: invalid value 0"),
    ],
)
def test_bad_config_names_the_key(section, message):
    with pytest.raises(CycledeconError, match=message):
        parse_normalize_config(section)


def test_config_defaults_round_trip():
    config = parse_normalize_config(None)
    assert config.method == "percentile" and config.percentiles == (0.1, 99.9)
    assert parse_normalize_config(config.to_dict()) == config


def test_percentile_inverse_gives_back_the_raw_intensities(volume):
    """Unclipped percentile normalization is undone exactly (to float32 rounding), offset included."""
    normalized, record = normalize_array(volume, VOXEL, {"method": "percentile", "clip": False})
    inverse = linear_inverse(record)
    low, high = record["applied"]["percentile_values"]
    assert (inverse.offset, inverse.scale) == (low, high - low)
    np.testing.assert_allclose(inverse.apply(normalized), volume, rtol=0, atol=1e-3 * (high - low))
    np.testing.assert_allclose(inverse.undo(inverse.apply(normalized)), normalized, rtol=0, atol=1e-5)


@pytest.mark.parametrize("record, reason", [
    ({"method": "clahe", "applied": {"percentile_values": [1.0, 2.0]}}, "CLAHE normalization is non-linear"),
    ({"method": "percentile"}, "holds no usable percentile values"),
    ({"method": "percentile", "applied": {"percentile_values": [3.0, 3.0]}}, "holds no usable percentile values"),
    ({"method": "percentile", "applied": {"percentile_values": ["a", None]}}, "holds no usable percentile values"),
    ({"method": "fixed", "scale": 2.0}, "method 'fixed' records no inverse"),
])  # fmt: skip
def test_records_without_an_inverse_say_why_in_one_line(record, reason):
    with pytest.raises(CycledeconError, match=reason) as info:
        linear_inverse(record)
    assert "\n" not in str(info.value)

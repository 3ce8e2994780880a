"""Resampling to another voxel size: the same physical extent, anti-aliased, block by block."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from skimage.transform import resize

from cycledecon.resample import coarser_axes, resample, resampled_shape, same_voxel_size, store
from cycledecon.voxel import VoxelSize


def test_shape_covers_the_same_extent():
    assert resampled_shape((4, 48, 48), VoxelSize(1.0, 0.1, 0.1), VoxelSize(0.5, 0.2, 0.2)) == (8, 24, 24)
    assert resampled_shape((1, 5, 5), VoxelSize(0.1, 0.1, 0.1), VoxelSize(1.0, 1.0, 1.0)) == (1, 1, 1)


def test_coarser_axes_and_round_off():
    assert coarser_axes(VoxelSize(1.0, 0.1, 0.1), VoxelSize(0.5, 0.2, 0.2)) == ["z"]
    assert same_voxel_size(VoxelSize(0.1, 0.1, 0.1), VoxelSize(0.1 * (1 + 1e-9), 0.1, 0.1))


def test_blockwise_resampling_equals_resizing_the_whole_stack():
    """Axis by axis in small chunks gives what one anti-aliased resize of the whole array gives."""
    rng = np.random.default_rng(0)
    volume = rng.random((6, 40, 36)).astype(np.float32)
    source, target = VoxelSize(1.0, 0.1, 0.1), VoxelSize(0.5, 0.2, 0.3)
    lazy = resample(da.from_array(volume, chunks=(2, 8, 8)), source, target)
    expected = resize(volume, (12, 20, 12), order=1, mode="reflect", anti_aliasing=True, preserve_range=True)
    assert lazy.shape == (12, 20, 12) and lazy.dtype == np.float32 and lazy.chunksize == (2, 8, 8)
    np.testing.assert_allclose(lazy.compute(), expected, atol=1e-5)


def test_downsampling_averages_instead_of_aliasing():
    """A one-voxel checkerboard along x halved: the anti-aliased result is its mean, not one phase."""
    volume = np.broadcast_to(np.arange(64) % 2, (2, 4, 64)).astype(np.float32)
    out = resample(da.from_array(volume), VoxelSize(1, 1, 0.1), VoxelSize(1, 1, 0.2)).compute()
    assert out[..., 4:-4] == pytest.approx(0.5, abs=0.05)


def test_store_writes_and_reopens_lazily(tmp_path):
    data = da.from_array(np.arange(60, dtype=np.float32).reshape(3, 4, 5), chunks=(1, 2, 5))
    stored = store(data, tmp_path / "a.zarr")
    assert stored.chunksize == (1, 2, 5)
    np.testing.assert_array_equal(stored.compute(), data.compute())


def _gaussian(shape, sigma_voxels):
    from cycledecon.psf.theory import gaussian_psf

    return gaussian_psf(shape, sigma_voxels).astype(np.float32)


def test_psf_without_voxel_size_is_taken_on_the_grid(tmp_path):
    import tifffile

    from cycledecon.resample import read_psf_on_grid

    psf = _gaussian((9, 15, 15), (1.5, 2.0, 2.0)) * 7
    tifffile.imwrite(tmp_path / "psf.tif", psf)  # no voxel size in the file
    out = read_psf_on_grid(tmp_path / "psf.tif", VoxelSize(0.25, 0.1, 0.1))
    np.testing.assert_allclose(out, psf / psf.sum(), rtol=1e-5)


def test_psf_of_another_voxel_size_is_resampled_to_the_grid(tmp_path):
    """The same Gaussian (σ 0.5 µm axially, 0.2 µm laterally) sampled at 0.25 × 0.1 × 0.1 µm and at
    0.5 × 0.05 × 0.05 µm: either file, stated by its metadata or by the config, gives the first."""
    import tifffile

    from cycledecon.resample import read_psf_on_grid
    from helpers import write_ome

    grid = VoxelSize(0.25, 0.1, 0.1)
    fine = _gaussian((9, 31, 31), (1.0, 4.0, 4.0))
    write_ome(tmp_path / "fine.ome.tif", fine, (0.5, 0.05, 0.05))
    tifffile.imwrite(tmp_path / "bare.tif", fine)
    expected = _gaussian((17, 15, 15), (2.0, 2.0, 2.0))  # the extent of `fine`, on the grid, odd
    for out in (read_psf_on_grid(tmp_path / "fine.ome.tif", grid),
                read_psf_on_grid(tmp_path / "bare.tif", grid, VoxelSize(0.5, 0.05, 0.05))):
        assert out.shape == (17, 15, 15) and out.sum() == pytest.approx(1.0, rel=1e-5)
        assert np.unravel_index(out.argmax(), out.shape) == (8, 7, 7)
        assert np.abs(out - expected).max() < 0.1 * expected.max()

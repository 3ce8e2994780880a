"""Theoretical PSFs: unit sum, centred on the voxel grid, deep emitters included."""

from __future__ import annotations

import numpy as np
import pytest

from cycledecon.psf.theory import widefield_psf
from cycledecon.voxel import VoxelSize

VOXEL = VoxelSize(0.25, 0.1, 0.1)


@pytest.mark.parametrize(("sample_ri", "depth_um"), [(None, 0.0), (1.33, 5.0)])
def test_widefield_psf_is_centred_with_unit_sum(sample_ri, depth_um):
    psf = widefield_psf((33, 33, 33), VOXEL, 1.4, 520, 1.515, sample_ri=sample_ri, depth_um=depth_um)
    assert psf.sum() == pytest.approx(1.0, rel=1e-5)
    # a 5 µm deep emitter in water under oil focuses ~0.5 µm off its depth (2 planes): the kernel
    # must still peak on the central plane, or deconvolution shifts the image
    assert np.unravel_index(psf.argmax(), psf.shape) == (16, 16, 16)


def test_index_mismatch_lengthens_the_psf_axially():
    matched = widefield_psf((33, 33, 33), VOXEL, 1.4, 520, 1.515)
    deep = widefield_psf((33, 33, 33), VOXEL, 1.4, 520, 1.515, sample_ri=1.33, depth_um=5.0)
    axial = [p.sum(axis=(1, 2)) for p in (matched, deep)]
    above_half = [int((a >= a.max() / 2).sum()) for a in axial]
    assert above_half[1] > above_half[0]  # spherical aberration spreads the focus along z


def test_a_box_with_unequal_lateral_sizes_is_the_centre_of_the_square_one():
    """psfmodels computes square planes: a (z, 33, 21) box is the (z, 33, 33) PSF's centre, renormalized."""
    square = widefield_psf((17, 33, 33), VOXEL, 1.4, 520, 1.515)
    narrow = widefield_psf((17, 33, 21), VOXEL, 1.4, 520, 1.515)
    centre = square[:, :, 6:27]
    assert narrow.shape == (17, 33, 21)
    np.testing.assert_allclose(narrow, centre / centre.sum(), rtol=1e-5, atol=1e-9)  # float32 rounding

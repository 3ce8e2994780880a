"""The kernel training starts from: its box (energy share, context room) and its start."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cycledecon.config.train import parse_config
from cycledecon.errors import CycledeconError
from cycledecon.psf.kernel import energy_box, kernel_room, starting_kernel
from cycledecon.psf.theory import widefield_psf
from cycledecon.voxel import VoxelSize
from helpers import FREE_KERNEL_TRAIN, deep_update

VOXEL = VoxelSize(0.25, 0.1, 0.1)


@dataclass
class Geometry:
    """A patch store's geometry without its patches: all the kernel reads of a store."""

    voxel_size: VoxelSize
    patch_shape: tuple[int, int, int]
    margin: tuple[int, int, int]
    optics: dict[str, float] | None


def test_energy_box_holds_the_share_and_no_smaller_box_does():
    psf = widefield_psf((33, 65, 65), VOXEL, 1.4, 520.0, 1.515)
    box = energy_box(psf, 0.9)
    centre = [n // 2 for n in psf.shape]

    def share(shape):
        return float(psf[tuple(slice(c - n // 2, c + n // 2 + 1) for c, n in zip(centre, shape))].sum())

    assert share(box) >= 0.9
    # the box before it in the family energy_box grows (half-sizes in proportion to the PSF's box)
    step, steps = box[2] // 2, max(centre)
    previous = tuple(2 * round(c * (step - 1) / steps) + 1 for c in centre)
    assert all(p <= n for p, n in zip(previous, box)) and previous != box
    assert share(previous) < 0.9
    assert energy_box(psf, 0.999999) == psf.shape


def test_free_kernel_starts_as_a_gaussian_of_its_configured_shape_inside_the_room():
    cfg = parse_config(deep_update(FREE_KERNEL_TRAIN, {"psf": {"shape_voxels": [3, 5, 5]},
                                                       "generator_context": [1, 2, 2]}))
    store = Geometry(VOXEL, (8, 16, 16), (3, 6, 6), None)
    room = kernel_room(cfg, store)
    initial, pupil = starting_kernel(cfg.psf, store, room)
    assert room == (2, 4, 4) and pupil is None
    assert initial.shape == (3, 5, 5) and initial.sum() == pytest.approx(1.0, abs=1e-6)
    wide = parse_config(deep_update(FREE_KERNEL_TRAIN, {"psf": {"shape_voxels": [7, 5, 5]}}))
    with pytest.raises(CycledeconError, match=r"train\.psf\.shape_voxels: kernel \(7, 5, 5\).*less train\.generator_context"):
        starting_kernel(wide.psf, store, room)

"""The shipped configuration models the whole widefield PSF: checks on config/config.yaml itself."""

from __future__ import annotations

import numpy as np
import yaml

from cycledecon.config.patches import parse_patch_config
from cycledecon.config.train import parse_config
from cycledecon.model.unet import receptive_field
from cycledecon.patches import context_voxels
from cycledecon.psf.kernel import kernel_room, kernel_shape
from cycledecon.psf.theory import widefield_psf
from cycledecon.psf_metrics import energy_in_box
from cycledecon.train_state import PatchStore
from cycledecon.voxel import VoxelSize
from helpers import REPO

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
DEMO = CONFIG["demo"]
VOXEL = VoxelSize(*DEMO["voxel_size_um"])


def default_kernel_shape() -> tuple[int, int, int]:
    """The kernel the default config trains on the demo campaign (optics from the sheet)."""
    margin = context_voxels(parse_patch_config(CONFIG["patches"]), VOXEL)
    store = PatchStore({}, {}, VOXEL, tuple(CONFIG["patches"]["shape"]), margin, "demo", {}, DEMO["optics"])
    train = parse_config(CONFIG["train"])
    return kernel_shape(train.psf, store, kernel_room(train, store))


def test_default_kernel_holds_nine_tenths_of_the_true_psf():
    """The demo's true PSF spreads light over all its planes: a box holding < 90 % of it models
    a different blur."""
    optics = DEMO["optics"]
    truth = widefield_psf(tuple(DEMO["psf_shape"]), VOXEL, optics["na"], optics["wavelength_nm"],
                          optics["immersion_ri"])
    assert energy_in_box(truth, default_kernel_shape()) >= 0.9


def test_default_generator_sees_as_far_as_the_psf_spreads_light():
    reach = np.array(receptive_field(parse_config(CONFIG["train"]).generator))
    radius = np.array(default_kernel_shape()) // 2
    assert (reach >= radius).all(), f"receptive field {reach} voxels, PSF radius {radius}"


def test_demo_stacks_hold_the_psf():
    assert DEMO["shape"][0] >= DEMO["psf_shape"][0]


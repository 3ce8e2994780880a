"""PSF sanity: a collapsed or sub-diffraction kernel is flagged with what to try, the theoretical
PSF is not, and model files with or without the sanity record load."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch

from cycledecon.errors import CycledeconError
from cycledecon.model import UNet3d, load_model, save_model
from cycledecon.psf.theory import gaussian_psf, psf_from_optics
from cycledecon.progress import echo_warnings
from cycledecon.psf_sanity import (
    COLLAPSE_SHARE,
    diffraction_limits_um,
    log_psf_sanity,
    plane_energy,
    psf_sanity,
)
from cycledecon.voxel import VoxelSize

VOXEL = VoxelSize(0.25, 0.1, 0.1)
OIL = {"na": 1.4, "wavelength_nm": 520.0, "immersion_ri": 1.515}


def point(shape: tuple[int, int, int] = (5, 7, 7)) -> np.ndarray:
    """A kernel collapsed onto its centre voxel."""
    kernel = np.zeros(shape, np.float32)
    kernel[tuple(n // 2 for n in shape)] = 1
    return kernel


def test_diffraction_limits_follow_the_stated_formulas():
    limits = diffraction_limits_um(OIL)
    assert limits["lateral_um"] == pytest.approx(0.51 * 0.52 / 1.4)
    assert limits["axial_um"] == pytest.approx(0.88 * 0.52 / (1.515 - np.sqrt(1.515**2 - 1.4**2)))
    low = diffraction_limits_um({"na": 0.1, "wavelength_nm": 520.0, "immersion_ri": 1.0})
    assert low["axial_um"] == pytest.approx(1.77 * 0.52 / 0.1**2, rel=0.01)  # the paraxial form
    with pytest.raises(ValueError, match="below the immersion index"):
        diffraction_limits_um(OIL | {"na": 1.6})


def test_theoretical_psf_passes():
    record = psf_sanity(psf_from_optics((17, 33, 33), VOXEL, OIL), VOXEL, OIL)
    assert record["warnings"] == []
    assert record["lateral_fwhm_um"] == pytest.approx(record["theoretical_lateral_fwhm_um"], rel=1e-6)
    assert record["lateral_fwhm_um"] > record["lateral_limit_um"]
    assert record["axial_fwhm_um"] > record["axial_limit_um"]
    assert record["peak_share"] < COLLAPSE_SHARE
    assert record["optics"] == OIL


def test_single_voxel_kernel_is_collapsed_and_sub_diffraction():
    record = psf_sanity(point(), VOXEL, OIL)
    assert record["peak_share"] == 1.0 and record["plane_energy"] == [0, 0, 1, 0, 0]
    collapsed, narrow = record["warnings"]
    assert "collapsed" in collapsed and "100%" in collapsed and "above 20%" in collapsed
    assert "0.51·λ/NA = 0.189 µm" in narrow and "lateral FWHM 0.1 µm" in narrow
    assert "axial FWHM 0.25 µm < 0.88·λ/(n − √(n² − NA²)) = 0.489 µm" in narrow
    for warning in record["warnings"]:  # each says what to try
        assert "sample sheet" in warning and "train.psf.energy" in warning and "train.optim.steps" in warning


def test_narrow_kernel_is_flagged_on_its_narrow_axis_only():
    kernel = gaussian_psf((9, 11, 11), (1.0, 0.7, 0.7))  # FWHM 0.59 µm axially, 0.165 µm laterally
    record = psf_sanity(kernel, VOXEL, OIL)
    assert record["peak_share"] < COLLAPSE_SHARE
    (warning,) = record["warnings"]
    assert "narrower than the diffraction limit" in warning and "lateral FWHM 0.1" in warning
    assert "axial FWHM" not in warning


def test_kernel_just_below_the_limit_is_within_measurement_error():
    sigma_xy = 0.97 * diffraction_limits_um(OIL)["lateral_um"] / 2.3548 / VOXEL.y
    record = psf_sanity(gaussian_psf((9, 15, 15), (1.2, sigma_xy, sigma_xy)), VOXEL, OIL)
    assert record["lateral_fwhm_um"] < record["lateral_limit_um"] and record["warnings"] == []


def test_without_optics_only_the_collapse_is_checked():
    record = psf_sanity(point(), VOXEL, None)
    assert record["lateral_limit_um"] is None and record["theoretical_peak_share"] is None
    (warning,) = record["warnings"]
    assert "collapsed" in warning
    assert psf_sanity(gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)), VOXEL, None)["warnings"] == []


def test_kernel_cut_short_by_its_support_is_flagged():
    record = psf_sanity(np.ones((3, 5, 5)), VOXEL, None)
    assert record["lateral_fwhm_um"] is None and record["axial_fwhm_um"] is None
    (warning,) = record["warnings"]
    assert "does not fall to half its maximum" in warning and "lateral and axial" in warning
    wide = np.ones((3, 5, 5)) * gaussian_psf((1, 5, 5), (1, 1.0, 1.0))  # flat along z only
    assert psf_sanity(wide, VOXEL, None)["lateral_fwhm_um"] is not None


def test_plane_energy_is_each_planes_share():
    kernel = gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5))
    energy = plane_energy(kernel * 3)
    assert len(energy) == 5 and sum(energy) == pytest.approx(1.0)
    assert energy[2] == max(energy) and energy[0] == pytest.approx(energy[4], rel=1e-5)


def test_warnings_are_logged_and_echoed(caplog):
    stream = io.StringIO()
    handler = echo_warnings("demo", logging.getLogger("cycledecon.psf_sanity"), stream)
    try:
        with caplog.at_level(logging.WARNING, logger="cycledecon.psf_sanity"):
            log_psf_sanity(psf_sanity(point(), VOXEL, None), "model/learned_psf.ome.tif")
    finally:
        logging.getLogger("cycledecon.psf_sanity").removeHandler(handler)
    assert any("model/learned_psf.ome.tif: The learned PSF has collapsed" in r.message for r in caplog.records)
    assert stream.getvalue().startswith("[demo] WARNING: model/learned_psf.ome.tif: The learned PSF has collapsed")


METADATA = {
    "generator": {"depth": 1, "base_channels": 2}, "receptive_field": [6, 6, 6], "patch_shape": [8, 16, 16],
    "channels": 1, "normalization": None, "voxel_size": [0.25, 0.1, 0.1],
}  # fmt: skip


def saved(path, **extra) -> dict:
    """Save a tiny model with METADATA plus `extra` and load its metadata back."""
    save_model(path, UNet3d(METADATA["generator"]), METADATA | extra, point())
    return load_model(path)[1]


def test_model_files_with_and_without_the_record_load(tmp_path):
    record = psf_sanity(point(), VOXEL, OIL)
    assert saved(tmp_path / "new.pt", psf_sanity=record)["psf_sanity"] == record
    assert "psf_sanity" not in saved(tmp_path / "old.pt")


@pytest.mark.parametrize(("record", "field"), [(["collapsed"], "psf_sanity"),
                                               ({"warnings": "collapsed"}, "psf_sanity.warnings"),
                                               ({"warnings": [torch.ones(2)]}, "psf_sanity.warnings")])
def test_a_forged_record_is_refused(tmp_path, record, field):
    with pytest.raises(CycledeconError, match=f"metadata.{field}: expected"):
        saved(tmp_path / "model.pt", psf_sanity=record)

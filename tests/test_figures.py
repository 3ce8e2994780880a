"""Figures: each writes a readable PNG of a sensible size and rejects bad input clearly."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from PIL import Image

from cycledecon.figures import (
    band_pass,
    display_margin,
    display_point,
    line_profile,
    loss_curves,
    orthoslice_panel,
    psf_panel,
)
from cycledecon.psf.theory import gaussian_psf
from cycledecon.voxel import VoxelSize

VOXEL = VoxelSize(0.3, 0.1, 0.1)


@pytest.fixture
def volumes() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    truth = np.zeros((16, 32, 32), dtype=np.float32)
    truth[tuple(rng.integers(2, s - 2, 20) for s in truth.shape)] = 1
    truth = ndi.gaussian_filter(truth, 0.7)
    raw = rng.poisson(1000 * ndi.gaussian_filter(truth, (3, 2, 2)) + 10).astype(np.float32)
    return {"raw": raw, "RL": ndi.gaussian_filter(raw, 0.5), "ground truth": truth}


def assert_png(path, min_px: int, max_px: int) -> None:
    """A PNG that matplotlib reads back, with both sides within [min_px, max_px] pixels."""
    assert path.stat().st_size > 0
    height, width = matplotlib.image.imread(path).shape[:2]
    assert min_px <= height <= max_px and min_px <= width <= max_px, (height, width)
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary sibling left behind


def test_orthoslice_panel(volumes, tmp_path):
    path = orthoslice_panel(volumes, VOXEL, tmp_path / "ortho.png", "demo", reference="ground truth")
    assert path == tmp_path / "ortho.png"
    assert_png(path, 300, 2500)  # 3 columns x 4 rows of ~290-px panels at 120 dpi


def test_line_profile(volumes, tmp_path):
    assert_png(line_profile(volumes, VOXEL, tmp_path / "sub" / "line.png"), 300, 1200)


def edge_heavy_volume() -> np.ndarray:
    """Filaments in plane 8 of 16, and a brighter bead in the first plane (where deconvolution's
    boundary artefacts live): the brightest single structure sits on the boundary."""
    volume = np.zeros((16, 40, 40), dtype=np.float32)
    volume[8, 10, 5:35] = volume[8, 5:35, 20] = volume[8, 30, 5:35] = 1.0
    volume[0, 20, 30] = 30.0
    return ndi.gaussian_filter(volume, 0.8)


def test_display_point_is_the_interior_plane_with_the_most_signal():
    volume = edge_heavy_volume()
    brightest = np.unravel_index(np.argmax(band_pass(volume)), volume.shape)
    assert brightest[0] == 0  # choosing the single brightest structure would show the boundary plane
    margin = display_margin(volume.shape, VOXEL, None)
    assert margin == (2, 5, 5)  # an eighth of each axis
    z, y, x = display_point(volume, margin)
    assert z == 8 and 5 <= y < 35 and 5 <= x < 35
    assert display_point(volume)[0] == 8  # the filaments hold more signal than the bead even unmasked
    volume[0] *= 3  # now the boundary plane holds the most signal: only the margin keeps it out
    assert display_point(volume)[0] == 0 and display_point(volume, margin)[0] == 8


def test_display_margin_in_um_never_swallows_the_volume():
    assert display_margin((16, 40, 40), VOXEL, (0.9, 0.25, 0.25)) == (3, 3, 3)  # µm rounded up to voxels
    assert display_margin((16, 40, 40), VOXEL, (10.0, 0.0, 0.0)) == (7, 0, 0)  # one plane is left
    assert display_margin((1, 40, 40), VOXEL, None) == (0, 5, 5)


def test_slices_and_profile_name_the_plane_they_show(tmp_path):
    volume = edge_heavy_volume()
    volume[0] *= 3
    volumes = {"raw": ndi.gaussian_filter(volume, (2, 1, 1)), "ground truth": volume}
    for draw in (orthoslice_panel, line_profile):
        path = draw(volumes, VOXEL, tmp_path / f"{draw.__name__}.png", reference="ground truth")
        text = Image.open(path).text
        assert text["display_voxel_zyx"].split()[0] == "8", text
        assert text["volume_shape_zyx"] == "16 40 40" and text["display_margin_zyx"] == "2 5 5"


def test_psf_panel_with_different_sizes(tmp_path):
    psfs = {
        "learned": gaussian_psf((15, 21, 21), (2.2, 1.6, 1.6)),
        "theoretical": gaussian_psf((21, 25, 25), (2.0, 1.5, 1.5)),
        "cut short": gaussian_psf((3, 21, 21), (9.0, 1.5, 1.5)),  # no axial FWHM: shown as n/a
    }
    assert_png(psf_panel(psfs, VOXEL, tmp_path / "psf.png"), 300, 1500)


def test_loss_curves(tmp_path):
    steps = np.arange(0, 200, 10)
    log = pd.DataFrame(
        {
            "step": steps,
            "cycle": 1.0 / (1 + steps),
            "adversarial": np.sin(steps / 20.0),  # crosses zero: linear axis
            "psf_reg": np.where(steps % 20 == 0, 0.1, np.nan),  # logged every other step
            "phase": "train",  # not numeric: skipped
        }
    )
    assert_png(loss_curves(log, tmp_path / "loss.png"), 300, 1500)


def test_loss_curves_group_training_log_columns_under_plain_names(tmp_path):
    from cycledecon.figures import _loss_panels

    steps = np.arange(10, 110, 10, dtype=float)
    log = pd.DataFrame({"step": steps, **{c: 1.0 / steps for c in ("loss_g", "adv_a", "adv_b", "cycle_blurred",
                        "cycle_sharp", "d_a", "d_b", "grad_norm_g", "val_cycle", "psf_correlation", "extra")}})
    log.loc[::2, "val_cycle"] = np.nan
    panels = _loss_panels(log)
    assert len(panels) == 5  # cycle, adversarial, generator, PSF, the unnamed column
    named = [name for names in panels.values() for name in names.values()]
    assert "d_b" not in named and "discriminator, sharp domain" in named and "extra" in named
    assert_png(loss_curves(log, tmp_path / "loss.png"), 300, 1500)


@pytest.mark.parametrize(
    ("draw", "message"),
    [
        (lambda p: orthoslice_panel({}, VOXEL, p, "t"), "no volumes"),
        (
            lambda p: orthoslice_panel({"a": np.ones((4, 8, 8)), "b": np.ones((4, 8, 9))}, VOXEL, p),
            "same shape",
        ),
        (lambda p: line_profile({"a": np.ones((8, 8))}, VOXEL, p), r"\(z, y, x\)"),
        (lambda p: line_profile({"a": np.ones((4, 8, 8))}, VOXEL, p, reference="truth"), "reference"),
        (lambda p: psf_panel({}, VOXEL, p), "no PSFs"),
        (lambda p: loss_curves(pd.DataFrame({"loss": [1.0]}), p), "step"),
        (lambda p: loss_curves(pd.DataFrame({"step": [], "loss": []}), p), "no rows"),
    ],
)
def test_bad_input_is_rejected_before_writing(draw, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        draw(tmp_path / "bad.png")
    assert not list(tmp_path.iterdir())


def test_figures_get_the_same_file_mode_as_other_outputs(tmp_path):
    """Figures, like every other output (zarr, TIFF, CSV, model.pt), are 0666 less the umask."""
    import os

    from cycledecon.atomic import atomic_path

    previous = os.umask(0o022)
    try:
        figure = loss_curves(pd.DataFrame({"step": [1, 2], "cycle": [1.0, 0.5]}), tmp_path / "loss.png")
        with atomic_path(tmp_path / "table.csv") as tmp:
            tmp.write_text("a\n1\n")
    finally:
        os.umask(previous)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (figure, tmp_path / "table.csv")}
    assert modes == {"loss.png": "0o644", "table.csv": "0o644"}

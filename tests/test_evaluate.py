"""Evaluation: scoring a campaign's methods and writing the text summary."""

from __future__ import annotations

import numpy as np
import pytest
import pandas as pd
from scipy import ndimage

from cycledecon.evaluate import Method, psf_rows, score_sample, write_csv
from cycledecon.io import write_ome_zarr
from cycledecon.psf import gaussian_psf
from cycledecon.report import write_summary
from cycledecon.voxel import VoxelSize

VOXEL = VoxelSize(0.25, 0.1, 0.1)


def beads(rng, shape=(12, 48, 48), n=30) -> np.ndarray:
    volume = np.zeros(shape, np.float32)
    volume[tuple(rng.integers(2, np.array(shape) - 2, (n, 3)).T)] = 1.0
    return ndimage.gaussian_filter(volume, 0.7)


def test_score_sample_ranks_sharper_result_higher(tmp_path, rng):
    truth = beads(rng)
    blurred = ndimage.gaussian_filter(truth, (1.5, 3, 3)) + rng.normal(0, 1e-3, truth.shape).astype(np.float32)
    paths = {}
    for name, volume in {"truth": truth, "blurred": blurred, "sharp": truth + 0.01}.items():
        paths[name] = write_ome_zarr(volume, tmp_path / f"{name}.ome.zarr", VOXEL)
    rows = score_sample(
        "s1",
        [Method("raw", paths["blurred"], paths["blurred"]), Method("good", paths["sharp"], paths["blurred"])],
        paths["truth"],
    )
    by_method = {r["method"]: r for r in rows}
    assert by_method["good"]["psnr_db"] > by_method["raw"]["psnr_db"] + 10  # affine fit undoes the +0.01
    assert by_method["good"]["ssim"] > 0.99
    assert by_method["good"]["frc_resolution_um"] <= by_method["raw"]["frc_resolution_um"]


def test_psf_rows_report_fwhm_and_ncc():
    true = gaussian_psf((9, 15, 15), (1.5, 2.0, 2.0))
    wide = gaussian_psf((9, 15, 15), (2.5, 3.0, 3.0))
    table = psf_rows(wide, VOXEL, None, true).set_index("psf")
    assert list(table.index) == ["learned", "true"]
    # FWHM = 2.3548 σ; half-maximum crossings are within a few % on these samplings
    np.testing.assert_allclose(table.loc["true", "lateral_fwhm_um"], 2.3548 * 2.0 * 0.1, rtol=0.05)
    assert table.loc["true", "ncc_to_true"] > 0.999 > table.loc["learned", "ncc_to_true"]
    assert table.loc["learned", "true_energy_in_box"] == pytest.approx(1.0)  # same box as the truth
    small = psf_rows(gaussian_psf((3, 5, 5), (0.5, 0.8, 0.8)), VOXEL, None, true).set_index("psf")
    inner = true[3:6, 5:10, 5:10].sum() / true.sum()  # the true PSF inside a centred 3×5×5 box
    assert small.loc["learned", "true_energy_in_box"] == pytest.approx(inner, rel=1e-6) and inner < 0.6


def test_summary_has_a_table_per_campaign(tmp_path):
    metrics = pd.DataFrame(
        {"sample": ["a", "a", "b", "b"], "method": ["raw", "cycledecon"] * 2, "psnr_db": [20.0, 30.0, 22.0, 32.0]}
    )
    psf = pd.DataFrame({"psf": ["learned"], "lateral_fwhm_um": [0.25], "axial_fwhm_um": [0.8], "ncc_to_true": [0.9],
                        "true_energy_in_box": [0.985]})
    out = write_summary(
        [write_csv(metrics, tmp_path / "demo.csv")], [write_csv(psf, tmp_path / "demo_psf.csv")], tmp_path / "s.md"
    )
    text = out.read_text()
    assert "## Campaign demo" in text and "Mean over 2 widefield sample(s)" in text
    assert "| raw | 21 |" in text and "| cycledecon | 31 |" in text
    assert "| learned | 0.25 | 0.8 | 0.9 | 0.985 |" in text

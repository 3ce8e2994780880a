"""The summary: FRC floors marked as bounds, the noise/artefact gain named as such, a warning for a
learned PSF narrower than the diffraction limit, and an HTML page with the tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cycledecon.io import write_ome_tiff
from cycledecon.report import (
    CampaignSummary,
    lateral_diffraction_limit_um,
    mean_table,
    psf_warnings,
    sample_table,
    write_summary,
)
from cycledecon.voxel import VoxelSize

VOXEL = VoxelSize(0.25, 0.1, 0.1)
OPTICS = {"na": 1.4, "wavelength_nm": 520.0, "immersion_ri": 1.515}


def metrics() -> pd.DataFrame:
    return pd.DataFrame({
        "sample": ["a", "a", "b", "b"],
        "method": ["raw", "RL", "raw", "RL"],
        "psnr_db": [20.0, 30.0, 22.0, 32.0],
        "frc_resolution_um": [0.55, 0.4, 0.45, 0.52],  # RL on the floor (4 · 0.1 µm) in sample a
        "background_std_ratio": [1.0, 2.6, 1.0, 2.4],
    })  # fmt: skip


def psf(lateral_um: float) -> pd.DataFrame:
    return pd.DataFrame({"psf": ["learned", "theoretical"], "lateral_fwhm_um": [lateral_um, 0.226],
                         "axial_fwhm_um": [0.5, 0.52]})  # fmt: skip


def test_frc_on_its_floor_is_a_bound():
    campaign = CampaignSummary("demo", metrics(), psf(0.21), VOXEL, OPTICS)
    mean = mean_table(campaign).set_index("method")
    assert mean.loc["raw", "FRC resolution (µm)"] == "0.5"
    assert mean.loc["RL", "FRC resolution (µm)"] == "≤ 0.46"  # one sample is a bound: so is the mean
    per_sample = sample_table(campaign)
    assert list(per_sample["FRC resolution (µm)"]) == ["0.55", "≤ 0.4", "0.45", "0.52"]
    unknown = mean_table(CampaignSummary("demo", metrics(), psf(0.21))).set_index("method")
    assert unknown.loc["RL", "FRC resolution (µm)"] == "0.46"  # no voxel size: no floor to compare with


def test_background_measure_is_named_noise_or_artefact_gain():
    columns = list(mean_table(CampaignSummary("demo", metrics(), psf(0.21))).columns)
    assert "noise/artefact gain (background std ratio)" in columns
    assert not any("hallucination" in c.lower() for c in columns)


def test_learned_psf_below_the_diffraction_limit_is_flagged():
    limit = lateral_diffraction_limit_um(OPTICS)
    assert limit == pytest.approx(0.51 * 0.52 / 1.4)
    assert psf_warnings(psf(0.21), OPTICS) == []
    (warning,) = psf_warnings(psf(0.15), OPTICS)
    assert "0.15 µm" in warning and "0.51·λ/NA = 0.189 µm" in warning
    assert psf_warnings(psf(0.15), None) == []  # optics unknown: nothing to compare with


def test_summary_page_shows_warning_and_tables(tmp_path):
    metrics().to_csv(tmp_path / "demo.csv", index=False)
    psf(0.15).to_csv(tmp_path / "demo_psf.csv", index=False)
    learned = write_ome_tiff(np.ones((3, 5, 5), np.float32) / 75, tmp_path / "learned_psf.ome.tif", VOXEL)
    write_summary([tmp_path / "demo.csv"], [tmp_path / "demo_psf.csv"], tmp_path / "summary.md",
                  learned_psfs=[learned], optics=[OPTICS], page=tmp_path / "summary.html")  # fmt: skip
    page = (tmp_path / "summary.html").read_text()
    assert page.count("<table") == 3  # means, PSF, per sample
    assert '<div class="warning">' in page and "narrower than the diffraction limit" in page
    assert "<td>≤ 0.46</td>" in page and "FRC floor (4·dx) at this voxel size: 0.4 µm." in page
    text = (tmp_path / "summary.md").read_text()
    assert "**Warning (demo):**" in text and "| RL | 31 | ≤ 0.46 | 2.5 |" in text

"""The summary: FRC floors marked as bounds, the noise/artefact gain named as such, warnings at the
top for a learned PSF that fails its sanity checks and for a network above the noise gain limit, and
an HTML page with the tables."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cycledecon.io import write_ome_tiff
from cycledecon.psf.theory import gaussian_psf, psf_from_optics
from cycledecon.summary import CampaignSummary, mean_table, noise_gain_warnings, sample_table, write_summary
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


def with_network(gains: list[float]) -> pd.DataFrame:
    """metrics() plus the network's rows for samples a and b with these noise/artefact gains."""
    network = pd.DataFrame({"sample": ["a", "b"], "method": ["cycledecon"] * 2, "psnr_db": [33.0, 34.0],
                            "frc_resolution_um": [0.42, 0.43], "background_std_ratio": gains})  # fmt: skip
    return pd.concat([metrics(), network], ignore_index=True)


def point() -> np.ndarray:
    """A learned PSF collapsed onto one voxel."""
    kernel = np.zeros((5, 7, 7), np.float32)
    kernel[2, 3, 3] = 1
    return kernel


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


def campaign(learned: np.ndarray | None, optics: dict | None = OPTICS, gains=(1.0, 1.2)) -> CampaignSummary:
    return CampaignSummary("demo", with_network(list(gains)), psf(0.21), VOXEL, optics, learned_psf=learned)


def test_learned_psf_below_the_diffraction_limit_is_flagged():
    assert campaign(psf_from_optics((9, 15, 15), VOXEL, OPTICS)).warnings == []
    (warning,) = campaign(gaussian_psf((9, 11, 11), (1.0, 0.7, 0.7))).warnings
    assert "lateral FWHM 0.1" in warning and "0.51·λ/NA = 0.189 µm" in warning
    assert "axial FWHM" not in warning  # the axial width is within the limit
    assert campaign(gaussian_psf((9, 11, 11), (1.0, 0.7, 0.7)), None).warnings == []  # no optics: no limit
    assert campaign(None).warnings == []  # no learned PSF: nothing to check


def test_collapsed_learned_psf_is_flagged_with_what_to_try():
    collapsed, narrow = campaign(point()).warnings
    assert "collapsed towards a point" in collapsed and "100%" in collapsed
    assert "axial FWHM 0.25 µm < 0.88·λ/(n − √(n² − NA²)) = 0.489 µm" in narrow
    for warning in (collapsed, narrow):
        assert "sample sheet" in warning and "train.psf.energy" in warning and "train.optim.steps" in warning
    (alone,) = campaign(point(), None).warnings  # without optics the collapse is still seen
    assert "collapsed" in alone


def test_network_above_the_noise_gain_limit_is_flagged():
    assert noise_gain_warnings(metrics()) == []  # RL above the limit: expected of it, not flagged
    assert noise_gain_warnings(with_network([1.2, 1.5])) == []
    (warning,) = noise_gain_warnings(with_network([1.58, 1.2]))
    assert "above 1.5 (sample a: 1.58)" in warning and "train.noise" in warning


def test_summary_page_shows_warning_and_tables(tmp_path):
    with_network([1.58, 1.2]).to_csv(tmp_path / "demo.csv", index=False)
    psf(0.1).to_csv(tmp_path / "demo_psf.csv", index=False)
    learned = write_ome_tiff(point(), tmp_path / "learned_psf.ome.tif", VOXEL)
    write_summary([tmp_path / "demo.csv"], [tmp_path / "demo_psf.csv"], tmp_path / "summary.md",
                  learned_psfs=[learned], optics=[OPTICS], page=tmp_path / "summary.html")  # fmt: skip
    page = (tmp_path / "summary.html").read_text()
    assert page.count("<table") == 3  # means, PSF, per sample
    top = page.split("<h2>")[0]  # the warnings come before the first campaign
    assert top.count('<div class="warning">') == 3
    for warning in ("collapsed towards a point", "narrower than the diffraction limit", "noise/artefact gain"):
        assert warning in top
    assert "<td>≤ 0.46</td>" in page and "FRC floor (4·dx) at this voxel size: 0.4 µm." in page
    assert "its brightest voxel holds 100.0%" in page and "axial 0.88·λ/(n − √(n² − NA²)) = 0.489 µm" in page
    text = (tmp_path / "summary.md").read_text()
    top = text.split("## Campaign")[0]
    assert top.count("**Warning (demo):**") == 3 and "collapsed towards a point" in top
    assert "| RL | 31 | ≤ 0.46 | 2.5 |" in text


def test_summary_warnings_are_logged(tmp_path, caplog):
    """The rule's log holds the summary's warnings too, not only the page; no warning, nothing logged."""
    for name, gains in (("calm", [1.2, 1.1]), ("noisy", [1.58, 1.2])):
        with_network(gains).to_csv(tmp_path / f"{name}.csv", index=False)
        psf(0.226).to_csv(tmp_path / f"{name}_psf.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="cycledecon.summary"):
        write_summary([tmp_path / "calm.csv", tmp_path / "noisy.csv"],
                      [tmp_path / "calm_psf.csv", tmp_path / "noisy_psf.csv"], tmp_path / "summary.md")  # fmt: skip
    (logged,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert logged.startswith("campaign noisy: The network's noise/artefact gain") and "sample a: 1.58" in logged

"""Evaluation: scoring a campaign's methods and writing the text summary."""

from __future__ import annotations

import numpy as np
import pytest
import pandas as pd
from scipy import ndimage

from cycledecon.errors import CycledeconError
from cycledecon.evaluate import Method, in_units_of_given, psf_rows, score_sample, write_csv
from cycledecon.io import write_ome_zarr
from cycledecon.psf.theory import gaussian_psf
from cycledecon.summary import write_summary
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


def deconvolution_attrs(units: str, scale: float, offset: float, uint16_scale: float | None = None) -> dict:
    """The attributes `cycledecon.deconvolve.deconvolve_file` writes about intensity units."""
    inverse = {"scale": scale, "offset": offset} if units == "input" else None
    dtype = "uint16" if uint16_scale else "float32"
    return {"normalization": {"method": "percentile", "applied": {"percentile_values": [offset, offset + scale]}},
            "deconvolution": {"output_dtype": dtype, "uint16_scale": uint16_scale,
                              "intensity": {"units": units, "inverse": inverse}}}  # fmt: skip


def test_scores_do_not_depend_on_the_networks_output_units(tmp_path, rng):
    """One network result written in normalized units, in camera units (× 2500 + 90) and as uint16
    half-counts scores the same: PSNR and SSIM through the affine fit, the background check (which
    would read 2500 times too high unconverted) through the recorded units, against the normalized
    stack the network was given."""
    truth = beads(rng)
    blurred = ndimage.gaussian_filter(truth, (1.5, 3, 3)) + rng.normal(0, 1e-3, truth.shape).astype(np.float32)
    offset, scale = float(blurred.min()), float(np.ptp(blurred))
    normalized = (blurred - offset) / scale
    result = ndimage.gaussian_filter(truth, 0.5) / scale + rng.normal(0, 2e-3, truth.shape).astype(np.float32)
    counts_offset, counts_scale = 90.0, 2500.0
    in_counts = result * counts_scale + counts_offset
    record = deconvolution_attrs("input", counts_scale, counts_offset)["normalization"]
    given = write_ome_zarr(normalized, tmp_path / "given.ome.zarr", VOXEL, attrs={"normalization": record})
    stores = {
        "normalized": write_ome_zarr(result, tmp_path / "n.ome.zarr", VOXEL,
                                     attrs=deconvolution_attrs("normalized", counts_scale, counts_offset)),
        "input": write_ome_zarr(in_counts, tmp_path / "i.ome.zarr", VOXEL,
                                attrs=deconvolution_attrs("input", counts_scale, counts_offset)),
        "uint16": write_ome_zarr(np.rint(in_counts * 2).astype(np.uint16), tmp_path / "u.ome.zarr", VOXEL,
                                 attrs=deconvolution_attrs("input", counts_scale, counts_offset, uint16_scale=2.0)),
    }  # fmt: skip
    truth_path = write_ome_zarr(truth, tmp_path / "truth.ome.zarr", VOXEL)
    rows = score_sample("s1", [Method(name, path, given) for name, path in stores.items()], truth_path)
    scores = pd.DataFrame(rows).set_index("method")
    for name in ("input", "uint16"):
        for column in ("psnr_db", "ssim", "pearson_r", "frc_resolution_um", "background_std_ratio"):
            assert scores.loc[name, column] == pytest.approx(scores.loc["normalized", column], rel=1e-3), column
    assert in_counts.max() * 2 < 65535  # the uint16 store holds the result unclipped


def test_output_units_against_a_raw_input(tmp_path):
    """A normalized output computed from a raw stack is brought to the raw units; after CLAHE it
    cannot be, which is one clear error rather than a ratio off by the stack's range."""
    values = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    attrs = deconvolution_attrs("normalized", 2000.0, 100.0)
    np.testing.assert_allclose(in_units_of_given(values, attrs, {}), values * 2000 + 100, rtol=1e-6)
    np.testing.assert_array_equal(in_units_of_given(values, {}, {}), values)  # raw, Richardson–Lucy
    clahe = {**attrs, "normalization": {"method": "clahe"}}
    with pytest.raises(CycledeconError, match="cannot be compared with its raw input: CLAHE"):
        in_units_of_given(values, clahe, {})
    legacy = {"normalization": attrs["normalization"], "deconvolution": {"output_dtype": "float32"}}
    np.testing.assert_array_equal(in_units_of_given(values, legacy, {"normalization": {}}), values)


def test_psf_rows_report_fwhm_and_correlation():
    true = gaussian_psf((9, 15, 15), (1.5, 2.0, 2.0))
    wide = gaussian_psf((9, 15, 15), (2.5, 3.0, 3.0))
    table = psf_rows(wide, VOXEL, None, true).set_index("psf")
    assert list(table.index) == ["learned", "true"]
    # FWHM = 2.3548 σ; half-maximum crossings are within a few % on these samplings
    np.testing.assert_allclose(table.loc["true", "lateral_fwhm_um"], 2.3548 * 2.0 * 0.1, rtol=0.05)
    assert table.loc["true", "correlation_to_true"] > 0.999 > table.loc["learned", "correlation_to_true"]
    assert table.loc["learned", "true_energy_in_box"] == pytest.approx(1.0)  # same box as the truth
    small = psf_rows(gaussian_psf((3, 5, 5), (0.5, 0.8, 0.8)), VOXEL, None, true).set_index("psf")
    inner = true[3:6, 5:10, 5:10].sum() / true.sum()  # the true PSF inside a centred 3×5×5 box
    assert small.loc["learned", "true_energy_in_box"] == pytest.approx(inner, rel=1e-6) and inner < 0.6


def test_summary_has_a_table_per_campaign(tmp_path):
    metrics = pd.DataFrame(
        {"sample": ["a", "a", "b", "b"], "method": ["raw", "cycledecon"] * 2, "psnr_db": [20.0, 30.0, 22.0, 32.0]}
    )
    psf = pd.DataFrame({"psf": ["learned"], "lateral_fwhm_um": [0.25], "axial_fwhm_um": [0.8], "correlation_to_true": [0.9],
                        "true_energy_in_box": [0.985]})
    out = write_summary(
        [write_csv(metrics, tmp_path / "demo.csv")], [write_csv(psf, tmp_path / "demo_psf.csv")], tmp_path / "s.md"
    )
    text = out.read_text()
    assert "## Campaign demo" in text and "Mean over 2 widefield sample(s)" in text
    assert "| raw | 21 |" in text and "| cycledecon | 31 |" in text
    assert "| learned | 0.25 | 0.8 | 0.9 | 0.985 |" in text

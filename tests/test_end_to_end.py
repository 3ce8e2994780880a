"""The whole workflow on the tiny demo config, then `snakemake --report`: what `make demo` does, small."""

from __future__ import annotations

import base64
import re
from io import StringIO

import pandas as pd
import pytest

from helpers import make_workdir, run_snakemake
from cycledecon.evaluate import CYCLEDECON, RAW, RL_LEARNED, RL_THEORETICAL
from cycledecon.io import read_ome_zarr, read_stack
from test_io import read_with_ome_zarr

WIDEFIELD = ("wf_01", "wf_02", "wf_03")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A workdir in which the whole pipeline and the report have run (once for this module)."""
    work = make_workdir(tmp_path_factory.mktemp("e2e"))
    result = run_snakemake(work)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = run_snakemake(work, "--report", "results/report.html")
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    return work


def embedded_csv(html: str, name: str) -> pd.DataFrame:
    """A table the report embeds as a base64 data URI."""
    match = re.search(re.escape(f'"{name}": {{') + r'.*?"data_uri": "data:text/csv;[^"]*?base64,([^"]+)"', html)
    assert match, f"{name} is not embedded in the report"
    return pd.read_csv(StringIO(base64.b64decode(match.group(1)).decode()))


def test_every_widefield_sample_is_deconvolved_with_its_voxel_size(finished):
    for sample in WIDEFIELD:
        data, scale, axes, _ = read_with_ome_zarr(finished / "results" / "deconvolved" / f"{sample}.ome.zarr")
        assert data[0].shape == (16, 48, 48) and scale == [0.25, 0.1, 0.1] and axes == ["z", "y", "x"]
        _, _, attrs = read_ome_zarr(finished / "results" / "deconvolved" / f"{sample}.ome.zarr")
        assert attrs["normalization"]["method"] == "percentile"


def test_learned_psf_is_exported_with_voxel_size(finished):
    psf = read_stack(finished / "results" / "models" / "demo" / "learned_psf.ome.tif")
    assert psf.voxel_size.as_tuple() == pytest.approx((0.25, 0.1, 0.1))
    assert float(psf.data.sum().compute()) == pytest.approx(1.0, rel=1e-4)  # a PSF has unit sum


def test_report_holds_metrics_table_and_figures(finished):
    html = (finished / "results" / "report.html").read_text()
    metrics = embedded_csv(html, "results/metrics/demo.csv")
    assert set(metrics["method"]) == {RAW, RL_THEORETICAL, RL_LEARNED, CYCLEDECON}
    assert set(metrics["sample"]) == set(WIDEFIELD)
    assert {"psnr_db", "ssim", "frc_resolution_um", "background_std_ratio"} <= set(metrics.columns)
    psf = embedded_csv(html, "results/metrics/demo_psf.csv")
    assert list(psf["psf"]) == ["learned", "theoretical", "true"]
    for sample in WIDEFIELD:
        for kind in ("slices", "profile"):
            assert f'"results/figures/{sample}_{kind}.png": {{' in html
    assert '"results/models/demo/psf.png": {' in html and '"results/models/demo/loss_curves.png": {' in html


def test_summary_matches_metrics_file(finished):
    summary = (finished / "results" / "summary.md").read_text()
    metrics = pd.read_csv(finished / "results" / "metrics" / "demo.csv")
    raw_psnr = metrics[metrics["method"] == RAW]["psnr_db"].mean()
    assert f"| {RAW} | {raw_psnr:.3g} |" in summary


def test_rerun_has_nothing_to_do(finished):
    result = run_snakemake(finished, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr

"""The whole workflow on the tiny demo config, then `snakemake --report`: what `make demo` does, small."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from io import BytesIO, StringIO

import pandas as pd
import pytest
from PIL import Image

from helpers import make_workdir, run_snakemake
from cycledecon.methods import CYCLEDECON, RAW, RL_LEARNED, RL_THEORETICAL
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


def report_results(html: str) -> dict:
    """The results the report embeds (path → name, labels, mime_type, data_uri …)."""
    match = re.search(r"var results = (\{.*\});\s*\n", html)
    assert match, "no results in the report"
    return json.loads(match.group(1))


def embedded(html: str, name: str) -> tuple[str, bytes]:
    """The MIME type under which the report shows a result, and the result's bytes."""
    result = report_results(html).get(name)
    assert result, f"{name} is not embedded in the report"
    return result["mime_type"], base64.b64decode(result["data_uri"].split("base64,", 1)[1])


class TableReader(HTMLParser):
    """The text of every <table> in a page, as lists of rows of cell strings (no lxml needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None


def html_tables(page: str) -> list[pd.DataFrame]:
    """Every table of an HTML page as a frame of strings, its first row the header."""
    reader = TableReader()
    reader.feed(page)
    return [pd.DataFrame(rows[1:], columns=rows[0]) for rows in reader.tables]


def embedded_csv(html: str, name: str) -> pd.DataFrame:
    """A table the report embeds as a CSV download."""
    return pd.read_csv(StringIO(embedded(html, name)[1].decode()))


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


def test_report_shows_the_metrics_table_inline(finished):
    """The report shows text/html results in the page itself (CSV only as downloads): the summary
    page must be one, and hold the metrics and PSF tables."""
    html = (finished / "results" / "report.html").read_text()
    mime, page = embedded(html, "results/summary.html")
    assert mime == "text/html"
    tables = html_tables(page.decode())
    assert len(tables) == 3, "the summary page should hold the mean, PSF and per-sample tables"
    metrics = pd.read_csv(finished / "results" / "metrics" / "demo.csv")
    mean = tables[0].set_index("method")
    assert list(mean.index) == [RAW, RL_THEORETICAL, RL_LEARNED, CYCLEDECON]
    for method in mean.index:
        assert mean.loc[method, "PSNR (dB)"] == f"{metrics[metrics['method'] == method]['psnr_db'].mean():.3g}"
    assert "noise/artefact gain (background std ratio)" in mean.columns
    assert list(tables[1]["PSF"]) == ["learned", "theoretical", "true"]
    assert set(tables[2]["sample"]) == set(WIDEFIELD)  # per sample


def test_slices_and_profiles_show_an_interior_plane(finished):
    """The figures name the voxel they show; its plane must keep the margin from the first and last plane."""
    html = (finished / "results" / "report.html").read_text()
    for sample in WIDEFIELD:
        for kind in ("slices", "profile"):
            mime, png = embedded(html, f"results/figures/{sample}_{kind}.png")
            text = Image.open(BytesIO(png)).text
            z = int(text["display_voxel_zyx"].split()[0])
            nz, margin = int(text["volume_shape_zyx"].split()[0]), int(text["display_margin_zyx"].split()[0])
            assert mime == "image/png" and nz == 16 and margin == 2
            assert margin <= z < nz - margin, (sample, kind, z)


def test_summary_matches_metrics_file(finished):
    summary = (finished / "results" / "summary.md").read_text()
    metrics = pd.read_csv(finished / "results" / "metrics" / "demo.csv")
    raw_psnr = metrics[metrics["method"] == RAW]["psnr_db"].mean()
    assert f"| {RAW} | {raw_psnr:.3g} |" in summary


def test_rerun_has_nothing_to_do(finished):
    result = run_snakemake(finished, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr

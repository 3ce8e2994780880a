"""The workflow as a user runs it: dry runs, lint, formatting, config/sheet validation, a tiny real run."""

from __future__ import annotations

import subprocess

import numpy as np
import tifffile

from helpers import REPO, SNAKEMAKE, make_workdir, run_snakemake, write_ome
from cycledecon.io import read_ome_zarr
from test_io import read_with_ome_zarr


def test_dry_run_default_config(tmp_path):
    result = run_snakemake(make_workdir(tmp_path), "-n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo_campaign" in result.stdout and "ingest" in result.stdout


def test_dry_run_slurm_profile(tmp_path):
    result = run_snakemake(make_workdir(tmp_path), "-n", "--profile", "profiles/slurm")
    assert result.returncode == 0, result.stderr + result.stdout


def test_lint_reports_nothing():
    result = subprocess.run([SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "Lints for" not in result.stdout + result.stderr, result.stdout


def test_snakefmt_check_passes():
    snakefmt = SNAKEMAKE.replace("snakemake", "snakefmt")
    result = subprocess.run([snakefmt, "--check", "Snakefile", "workflow"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_key_of_wrong_type_is_named(tmp_path):
    work = make_workdir(tmp_path, {"demo": {"seed": "zero"}})
    result = run_snakemake(work, "-n")
    assert result.returncode != 0
    assert "seed" in result.stdout + result.stderr and "'zero' is not of type 'integer'" in result.stdout + result.stderr


def test_unknown_config_key_is_named(tmp_path):
    work = make_workdir(tmp_path, {"ingest": {"chunk": [1, 2, 3]}})
    result = run_snakemake(work, "-n")
    assert result.returncode != 0 and "'chunk' was unexpected" in result.stdout + result.stderr


def test_duplicate_sample_names_fail_before_any_job(tmp_path):
    sheet = "sample\tpath\trole\tcampaign\nx\ta.tif\twidefield\tc\nx\tb.tif\treference\tc\n"
    work = make_workdir(tmp_path, sheet=sheet)
    result = run_snakemake(work, "-n")
    assert result.returncode != 0 and "config/samples.tsv: duplicate sample name(s) x" in result.stdout + result.stderr


def test_bad_raw_file_fails_with_one_line_and_no_store(tmp_path):
    raw = tmp_path / "flat.ome.tif"
    write_ome(raw, np.full((4, 8, 8), 5, np.uint16))
    sheet = f"sample\tpath\trole\tcampaign\nflat\t{raw}\twidefield\tc\nref\t{raw}\treference\tc\n"
    work = make_workdir(tmp_path, sheet=sheet)
    result = run_snakemake(work, "results/zarr/flat.ome.zarr")
    assert result.returncode != 0
    assert f"error: {raw}: every voxel has the same value (5); nothing to deconvolve" in result.stdout + result.stderr
    assert not (work / "results" / "zarr" / "flat.ome.zarr").exists()


def test_demo_campaign_is_ingested_with_generator_metadata(tmp_path):
    work = make_workdir(tmp_path)
    result = run_snakemake(work, *[f"results/zarr/{s}.ome.zarr" for s in ("wf_01", "ref_01")])
    assert result.returncode == 0, result.stderr[-3000:]
    for sample in ("wf_01", "ref_01"):
        raw = tifffile.imread(work / "resources" / "demo" / f"{sample}.ome.tif")
        data, scale, axes, _ = read_with_ome_zarr(work / "results" / "zarr" / f"{sample}.ome.zarr")
        assert data[0].shape == raw.shape == (16, 48, 48)
        assert data[0].dtype == raw.dtype == np.uint16
        assert axes == ["z", "y", "x"] and scale == [0.25, 0.1, 0.1]
        _, _, attrs = read_ome_zarr(work / "results" / "zarr" / f"{sample}.ome.zarr")
        assert attrs["sample"] == sample and attrs["voxel_size_source"] == "OME metadata"

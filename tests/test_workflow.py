"""The workflow as a user runs it: dry runs, lint, formatting, config/sheet validation, a tiny real run."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import tifffile
import yaml
import zarr

from helpers import REPO, SNAKEMAKE, make_workdir, run_snakemake, write_ome
from cycledecon.io import image_name, is_cycledecon_image, read_ome_zarr
from test_io import read_with_ome_zarr, validate_ngff


def test_dry_run_default_config(tmp_path):
    result = run_snakemake(make_workdir(tmp_path), "-n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rule demo:" in result.stdout and "rule ingest:" in result.stdout


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
    assert "demo.seed: expected an integer, got 'zero'" in result.stdout + result.stderr


def test_unknown_config_key_is_named(tmp_path):
    work = make_workdir(tmp_path, {"ingest": {"chunk": [1, 2, 3]}})
    result = run_snakemake(work, "-n")
    assert result.returncode != 0 and "ingest.chunk: unknown key" in result.stdout + result.stderr


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
        store = work / "results" / "zarr" / f"{sample}.ome.zarr"
        assert not (store / ".snakemake_timestamp").exists() and is_cycledecon_image(store)
        validate_ngff(store, "0.5")
        assert image_name(store) == sample
    again = run_snakemake(work, *[f"results/zarr/{s}.ome.zarr" for s in ("wf_01", "ref_01")])
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stderr[-3000:]


def _external_campaign(tmp_path, reference_voxel=(0.5, 0.05, 0.05)) -> str:
    """A sheet of one campaign outside the demo: one widefield stack at 0.25 × 0.1 × 0.1 µm and one
    sharp reference from another instrument at `reference_voxel` µm (same field of view)."""
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    def puncta(shape, sigma):
        points = (rng.random(shape) > 0.995).astype(np.float32) * 3000
        return (gaussian_filter(points, sigma) * 20 + 100 + rng.poisson(5, shape)).astype(np.uint16)

    widefield = write_ome(tmp_path / "wf.ome.tif", puncta((16, 48, 48), (2.0, 2.0, 2.0)), (0.25, 0.1, 0.1))
    shape = tuple(round(n * v / r) for n, v, r in zip((16, 48, 48), (0.25, 0.1, 0.1), reference_voxel))
    reference = write_ome(tmp_path / "ref.ome.tif", puncta(shape, (0.5, 1.0, 1.0)), reference_voxel)
    optics = "1.4\t520\t1.515"
    return ("sample\tpath\trole\tcampaign\tna\twavelength_nm\timmersion_ri\n"
            f"wf\t{widefield}\twidefield\text\t{optics}\nref\t{reference}\treference\text\t{optics}\n")


def _without_demo(work) -> None:
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    del config["demo"]
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def test_config_without_demo_section_plans_a_sheet_without_demo_rows(tmp_path):
    work = make_workdir(tmp_path, sheet=_external_campaign(tmp_path))
    _without_demo(work)
    result = run_snakemake(work, "-n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rule demo:" not in result.stdout and "rule patches:" in result.stdout


def test_demo_rows_without_demo_section_are_named(tmp_path):
    work = make_workdir(tmp_path)
    _without_demo(work)
    result = run_snakemake(work, "-n")
    assert result.returncode != 0
    assert ("config/samples.tsv: sample(s) wf_01, wf_02, wf_03, ref_01, ref_02, ref_03 lie under resources/demo/"
            in result.stdout + result.stderr)


def test_reference_at_another_voxel_size_is_resampled_through_training(tmp_path):
    """Reference at 2× the widefield voxel in z and 0.5× in y/x: ingest, normalize and patches run,
    the store records the resampling, and a few training steps run on the patches. The campaign's
    true PSF is a TIFF without voxel size: it is taken on the widefield grid."""
    from cycledecon.psf.theory import gaussian_psf

    tifffile.imwrite(tmp_path / "psf.tif", gaussian_psf((9, 15, 15), (2.0, 2.0, 2.0)).astype(np.float32))
    overrides = {"true_psf": {"ext": str(tmp_path / "psf.tif")}}
    work = make_workdir(tmp_path, overrides, sheet=_external_campaign(tmp_path))
    _without_demo(work)
    result = run_snakemake(work, "results/models/ext/model.pt")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    group = zarr.open_group(str(work / "results" / "patches" / "ext" / "patches.zarr"), mode="r")
    assert group.attrs["voxel_size_um"] == [0.25, 0.1, 0.1]
    assert group.attrs["resampling"] == {"ref": {"voxel_size_um": [0.5, 0.05, 0.05],
                                                 "target_voxel_size_um": [0.25, 0.1, 0.1],
                                                 "shape": [8, 96, 96], "resampled_shape": [16, 48, 48]}}
    manifest = pd.read_csv(work / "results" / "patches" / "ext" / "manifest.csv")
    ref = manifest[manifest["sample"] == "ref"]
    assert (ref[["sample_dz_um", "sample_dy_um", "sample_dx_um"]] == [0.5, 0.05, 0.05]).all().all()
    log = (work / "logs" / "patches" / "ext.log").read_text()
    assert "sampled more coarsely than the widefield stacks (z 0.5 vs 0.25 µm)" in log
    assert "one widefield stack (wf): training from all 48 rows" in log

"""`cycledecon train --widefield … --reference …`: the workflow's chain from raw TIFFs to a model
without Snakemake, resumable, then `cycledecon deconvolve` with that model; and `cycledecon evaluate`."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
import yaml
from scipy import ndimage

from helpers import REPO, deep_update, sha256, write_ome
from test_cli import cycledecon

VOXEL = (0.25, 0.1, 0.1)
SHAPE = (16, 48, 48)
OPTICS = ["--na", "1.4", "--wavelength-nm", "520", "--immersion-ri", "1.515"]


def texture(seed: int, sigma: tuple[float, float, float], shape=SHAPE) -> np.ndarray:
    """Smoothed noise with sparse bright structures, in camera-like counts."""
    rng = np.random.default_rng(seed)
    sparse = (rng.random(shape) > 0.995).astype(np.float32) * 50 + rng.random(shape).astype(np.float32)
    return (100 + 400 * ndimage.gaussian_filter(sparse, sigma)).astype(np.uint16)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """A widefield OME-TIFF, a reference TIFF without voxel size, a tiny config, and one training."""
    root = tmp_path_factory.mktemp("campaign")
    widefield = write_ome(root / "wf.ome.tif", texture(0, (2.0, 3.0, 3.0)), VOXEL)
    reference = root / "sharp.tif"
    tifffile.imwrite(reference, texture(1, (0.5, 0.8, 0.8)))  # no voxel size: given on the command line
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config = deep_update(config, yaml.safe_load((REPO / "tests" / "tiny_config.yaml").read_text()))
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    raw = {p: sha256(p) for p in (widefield, reference)}
    command = ["train", "--widefield", widefield, "--reference", reference, "-o", root / "models" / "tiny",
               "--config", config_path, "--reference-voxel-size", *VOXEL, *OPTICS]  # fmt: skip
    result = cycledecon(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "widefield": widefield, "reference": reference, "raw": raw, "command": command,
            "model_dir": root / "models" / "tiny", "stdout": result.stdout}  # fmt: skip


def test_train_from_tiffs_writes_the_model_and_the_work_stores(campaign):
    model_dir = campaign["model_dir"]
    for name in ("model.pt", "learned_psf.ome.tif", "train_log.csv", "loss_curves.png", "psf.png"):
        assert (model_dir / name).is_file(), name
    work = model_dir / "work"
    for store in ("zarr/wf.ome.zarr", "zarr/sharp.ome.zarr", "normalized/wf.ome.zarr", "normalized/sharp.ome.zarr",
                  "patches/patches.zarr"):  # fmt: skip
        assert (work / store).is_dir(), store
    assert f"model written to {model_dir / 'model.pt'}" in campaign["stdout"]
    assert {p: sha256(p) for p in campaign["raw"]} == campaign["raw"]  # raw stacks only read


def test_reference_voxel_size_reaches_the_reference_store(campaign):
    from cycledecon.io import read_ome_zarr

    _, voxel_size, attrs = read_ome_zarr(campaign["model_dir"] / "work" / "zarr" / "sharp.ome.zarr")
    assert voxel_size.as_tuple() == VOXEL
    assert attrs["role"] == "reference" and attrs["sample"] == "sharp" and attrs["campaign"] == "tiny"


def test_deconvolve_with_the_trained_model_keeps_shape_voxel_size_and_name(campaign):
    from cycledecon.io import image_name, read_ome_zarr

    out = campaign["root"] / "wf_deconvolved.ome.zarr"
    result = cycledecon("deconvolve", campaign["widefield"], "--model", campaign["model_dir"] / "model.pt",
                        "-o", out, "--precision", "fp32")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data, voxel_size, _ = read_ome_zarr(out)
    assert data.shape == SHAPE and voxel_size.as_tuple() == VOXEL
    assert image_name(out) == "wf"
    assert np.isfinite(data.compute()).all()


def test_a_rerun_resumes_without_redoing_the_stores(campaign):
    work = campaign["model_dir"] / "work"
    stores = [work / "zarr" / "wf.ome.zarr", work / "normalized" / "sharp.ome.zarr", work / "patches" / "patches.zarr"]
    before = {s: s.stat().st_mtime_ns for s in stores}
    model = sha256(campaign["model_dir"] / "model.pt")
    result = cycledecon(*campaign["command"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert {s: s.stat().st_mtime_ns for s in stores} == before
    assert "is up to date" in result.stderr
    assert sha256(campaign["model_dir"] / "model.pt") == model


def test_a_changed_stack_is_ingested_again_and_the_others_kept(campaign, tmp_path):
    """Training into a fresh model directory on the same work folder: the changed reference is
    redone down the chain, the unchanged widefield stack is not."""
    from cycledecon.campaign import key_file

    work = campaign["model_dir"] / "work"
    reference = tmp_path / "sharp.tif"
    tifffile.imwrite(reference, texture(2, (0.5, 0.8, 0.8)))
    kept, redone = work / "zarr" / "wf.ome.zarr", work / "zarr" / "sharp.ome.zarr"
    before = {p: p.stat().st_mtime_ns for p in (kept, redone)}
    key = key_file(work, redone).read_text()
    command = list(campaign["command"])
    command[command.index(campaign["reference"])] = reference
    command[command.index(campaign["model_dir"])] = tmp_path / "tiny"
    result = cycledecon(*command, "--work", work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert kept.stat().st_mtime_ns == before[kept] and redone.stat().st_mtime_ns != before[redone]
    assert key_file(work, redone).read_text() != key
    assert (tmp_path / "tiny" / "model.pt").is_file() and not (tmp_path / "tiny" / "work").exists()


def one_line(result) -> str:
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_train_takes_a_patch_store_or_stacks_not_both_nor_neither(tmp_path):
    out = tmp_path / "model"
    neither = one_line(cycledecon("train", "-o", out))
    assert neither.startswith("error: train: give either a patch store") and neither.endswith("neither was given")
    both = one_line(cycledecon("train", tmp_path / "patches.zarr", "--widefield", tmp_path / "a.tif", "-o", out))
    assert both.endswith("not both")
    stray = one_line(cycledecon("train", tmp_path / "patches.zarr", "--na", "1.4", "-o", out))
    assert stray == "error: train: --na applies to --widefield stacks, not to a patch store"
    assert not out.exists()


def test_stack_form_refuses_bad_input_before_writing_anything(tmp_path):
    widefield = write_ome(tmp_path / "wf.ome.tif", texture(0, (1.0, 1.0, 1.0), (8, 16, 16)), VOXEL)
    reference = write_ome(tmp_path / "ref.ome.tif", texture(1, (0.5, 0.5, 0.5), (8, 16, 16)), VOXEL)
    out = tmp_path / "model"
    cases = {
        "no reference": (["--widefield", widefield],
                         "error: training needs at least one --widefield and one --reference stack"),
        "missing file": (["--widefield", tmp_path / "nope.tif", "--reference", reference],
                         f"error: {tmp_path / 'nope.tif'}: no such file"),
        "half the optics": (["--widefield", widefield, "--reference", reference, "--na", "1.4"],
                            "error: optics: give --na, --wavelength-nm and --immersion-ri together "
                            "(--wavelength-nm, --immersion-ri missing)"),
        "pupil without optics": (["--widefield", widefield, "--reference", reference],
                                 "error: train.psf.parameterization: pupil needs the microscope's optics: "
                                 "give --na, --wavelength-nm and --immersion-ri"),
    }  # fmt: skip
    for name, (args, message) in cases.items():
        assert one_line(cycledecon("train", *args, "-o", out, "--config", REPO / "config" / "config.yaml")) \
            == message, name  # fmt: skip
    assert not out.exists()


def test_sample_names_are_distinct_file_names(tmp_path):
    from cycledecon.campaign import sample_names

    paths = [tmp_path / "a" / "cell.ome.tif", tmp_path / "b" / "cell.tif", tmp_path / "c" / "other.TIFF"]
    assert sample_names(paths) == ["cell", "cell-2", "other"]


# ----------------------------------------------------------------------------------------- evaluate
def test_evaluate_scores_results_against_the_truth_and_writes_csv(tmp_path):
    from cycledecon.io import write_ome_zarr
    from cycledecon.voxel import VoxelSize

    rng = np.random.default_rng(0)
    truth = ndimage.gaussian_filter(rng.random((8, 32, 32)), 1.0).astype(np.float32)
    truth_path = write_ome(tmp_path / "truth.ome.tif", truth, VOXEL)
    good = write_ome_zarr(truth * 3 + 100, tmp_path / "good.ome.zarr", VoxelSize(*VOXEL))  # other units, same image
    noisy = write_ome(tmp_path / "noisy.ome.tif", truth + rng.normal(0, 0.05, truth.shape).astype(np.float32), VOXEL)
    csv_path = tmp_path / "metrics.csv"
    result = cycledecon("evaluate", good, noisy, "--truth", truth_path, "-o", csv_path)
    assert result.returncode == 0, result.stderr[-2000:]
    header = result.stdout.splitlines()[0].split()
    assert header == ["result", "psnr_db", "ssim", "nrmse", "pearson_r", "false_signal_pct",
                      "false_signal_faces_pct", "frc_resolution_um"]
    with open(csv_path) as stream:
        rows = list(csv.DictReader(stream))
    assert [r["result"] for r in rows] == [str(good), str(noisy)]
    assert float(rows[0]["pearson_r"]) > 0.999 and float(rows[0]["ssim"]) > 0.99
    assert float(rows[1]["psnr_db"]) < float(rows[0]["psnr_db"])


def test_evaluate_refuses_a_result_of_another_shape_in_one_line(tmp_path):
    truth = write_ome(tmp_path / "truth.ome.tif", np.random.default_rng(0).random((8, 16, 16), np.float32), VOXEL)
    other = write_ome(tmp_path / "other.ome.tif", np.ones((8, 16, 12), np.float32), VOXEL)
    message = one_line(cycledecon("evaluate", other, "--truth", truth, "-o", tmp_path / "m.csv"))
    assert message == f"error: {other}: shape (8, 16, 12) differs from the ground truth's (8, 16, 16) ({truth})"
    assert not (tmp_path / "m.csv").exists()

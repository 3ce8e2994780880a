"""Test helpers: tiny stacks on disk and running the workflow in a scratch directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
import yaml

from cycledecon.config import deep_update

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
#: The `train:` settings that unit tests of tiny models build on: the paper's free kernel of a given
#: size (no optics needed), G without a context ring, the sharp cycle as an L1 distance of weight 10.
FREE_KERNEL_TRAIN = {"psf": {"parameterization": "free", "energy": None}, "generator_context": [0, 0, 0],
                     "ring_at_faces": "blur", "loss": {"cycle_sharp": 10.0, "cycle_sharp_distance": "l1"}}


def user_folder(path: Path) -> Path:
    """A folder a user made at `path`, with a file of theirs in it: what no output may replace."""
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_ome(path: Path, data: np.ndarray, voxel_size=(0.25, 0.1, 0.1), axes: str = "ZYX") -> Path:
    """An OME-TIFF with physical voxel sizes (µm), as a microscope would write it."""
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": axes,
            "PhysicalSizeZ": voxel_size[0],
            "PhysicalSizeY": voxel_size[1],
            "PhysicalSizeX": voxel_size[2],
        },
    )
    return path


def make_workdir(tmp_path: Path, config_overrides: dict | None = None, sheet: str | None = None) -> Path:
    """A scratch copy of the workflow (Snakefile, workflow/, config/, profiles/) to run snakemake in."""
    work = tmp_path / "wf"
    work.mkdir()
    for name in ("Snakefile", "workflow", "config", "profiles", "envs"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    tiny = yaml.safe_load((REPO / "tests" / "tiny_config.yaml").read_text())
    config = deep_update(deep_update(config, tiny), config_overrides or {})
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    if sheet is not None:
        (work / "config" / "samples.tsv").write_text(sheet)
    return work


def run_snakemake(work: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run snakemake in `work` with the default profile; output captured as text."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [SNAKEMAKE, "--cores", "2", *args],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def tiny_model(directory: Path, shape: tuple[int, int, int] = (8, 24, 24)) -> tuple[Path, Path]:
    """A raw OME-TIFF of `shape` and an untrained depth-1 model that deconvolves it (for output checks)."""
    from cycledecon.model import UNet3d, save_model

    raw = write_ome(directory / "raw.ome.tif", np.random.default_rng(0).integers(100, 4000, shape, np.uint16))
    generator = {"depth": 1, "base_channels": 2}
    metadata = {"generator": generator, "receptive_field": [10, 10, 10], "patch_shape": [4, 16, 16], "channels": 1,
                "normalization": {"method": "percentile", "percentiles": [1.0, 99.0], "clip": True},
                "voxel_size": [0.25, 0.1, 0.1]}  # fmt: skip
    return raw, save_model(directory / "model.pt", UNet3d(generator), metadata, learned_psf=None)


def imported_modules(code: str, *args: str, among: tuple[str, ...] = ("distributed",)) -> set[str]:
    """Which of the modules `among` a fresh interpreter has imported once Python `code` has run with
    `args` (it fails the test if the code fails)."""
    probe = code + f"\nimport sys; print('imported:', *[m for m in {list(among)!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    line = next(line for line in reversed(result.stdout.splitlines()) if line.startswith("imported:"))
    return set(line.split()[1:])

"""benchmarks/device/check.py, the one-call GPU check, run at tiny sizes on the CPU: it must write
its table with every row measured (finite, positive numbers), and its pinned wheels must satisfy
pyproject.toml."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device" / "check.py"
#: Tiny sizes: patches of 16×32×32 (CPU bf16 training of 8×16×16 patches diverges at step 1), a
#: depth-2 G so that its halo stays small, one timed G-alone pass; one torch thread, as tests/conftest.py
#: sets (two spin against other processes on a shared 2-core machine).
TINY = ["--device", "cpu", "--steps", "2", "--warmup", "1", "--repeats", "1", "--volume", "16", "64", "64",
        "--stack", "16", "64", "64", "--patch", "16", "32", "32", "--context-um", "1", "0.8", "0.8", "--ring", "0", "0", "0",
        "--depth", "2", "--channels", "4", "--threads", "1"]  # fmt: skip
ROWS = [("train", "auto"), ("train", "fp32"), ("G alone", "bf16"), ("G alone", "fp32"),
        ("deconvolve", "bf16"), ("deconvolve", "fp32")]  # fmt: skip
UNITS = {"train": "steps/s", "G alone": "Mvoxel/s", "deconvolve": "Mvoxel/s"}
#: What the GPU machine has itself (benchmarks/device/README.md): no wheel is needed for these.
ON_THE_MACHINE = {"numpy", "scipy", "pandas", "tifffile", "scikit-image", "torch"}


def load_check() -> ModuleType:
    """check.py as a module (its top level imports the standard library only)."""
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The table of one tiny CPU run (an empty wheels folder: nothing may need installing here)."""
    work = tmp_path_factory.mktemp("device_check")
    out = work / "device_check.md"
    command = [sys.executable, str(SCRIPT), *TINY, "--wheels", str(work / "no-wheels"), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out.read_text()


def table_rows(text: str) -> list[list[str]]:
    """The cells of the results table's body rows."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_header_states_date_commit_gpu_and_torch(report: str) -> None:
    for field in ("- date: ", "- commit: ", "- GPU: none (--device cpu)", "- torch: ", "- command: "):
        assert field in report


def test_every_row_is_measured_with_finite_positive_numbers(report: str) -> None:
    rows = table_rows(report)
    assert [(row[0], row[1].split(" → ")[0]) for row in rows] == ROWS
    for part, _, measured, size, seconds, rate, unit, peak in rows:
        assert measured and size != "–", part
        assert unit == UNITS[part]
        for value in (float(seconds), float(rate)):
            assert math.isfinite(value) and value > 0, (part, seconds, rate)
        assert peak == "–"  # no GPU memory on the CPU


def test_pinned_wheels_satisfy_pyproject() -> None:
    """Every runtime dependency the GPU machine lacks is pinned, within pyproject.toml's range."""
    pins = {Requirement(line).name.lower(): Requirement(line) for line in load_check().pinned_requirements()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in map(Requirement, project):
        name = requirement.name.lower()
        if name in ON_THE_MACHINE or name.startswith("snakemake"):
            continue
        assert name in pins, f"{name} has no pinned wheel in benchmarks/device/requirements.txt"
        (pinned,) = pins[name].specifier
        assert requirement.specifier.contains(pinned.version), (name, str(requirement.specifier), pinned.version)

"""Faults: `kill -9` of training and of deconvolution, in a subprocess at tiny sizes.

The child runs the real command line with one function wrapped to announce a point in the run
(a marker file) and then wait there; the parent kills it with SIGKILL at that point, so the kill
lands at the same step every time instead of at a timing-dependent one. Afterwards: no complete-
looking output, inputs byte-identical, and a plain rerun gives exactly the uninterrupted result
(training resumes from its checkpoint; deconvolution starts over and clears the dead run's
temporary store).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
import zarr

from helpers import sha256, tiny_model

#: One thread in every child: identical arithmetic in the killed, the resumed and the reference
#: run, and little CPU on a shared machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

#: Child prologue: `marker` (argv[1]) is touched when the wrapped point is reached, then it waits
#: there to be killed; the rest of argv is the command line.
PROLOGUE = """
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
def stop_here():
    marker.touch()
    time.sleep(300)
"""

#: Stop in the middle of writing the output store: after G's second batch of blocks.
STOP_DECONVOLVE = PROLOGUE + """
import cycledecon.deconvolve as deconvolve
original, calls = deconvolve.BlockPredictor.__call__, []
def call(self, blocks):
    out = original(self, blocks)
    calls.append(1)
    if len(calls) == 2:
        stop_here()
    return out
deconvolve.BlockPredictor.__call__ = call
from cycledecon.cli import main
main(sys.argv[2:])
"""

#: Stop in training step 4, after the step-2 checkpoint and step 3 (work the resumed run redoes).
STOP_TRAINING = PROLOGUE + """
import cycledecon.train as train
original = train.train_step
def step(run, y, x, faces=None):
    if run.step == 3:
        stop_here()
    return original(run, y, x, faces)
train.train_step = step
from cycledecon.cli import main
main(sys.argv[2:])
"""


def cycledecon(*args: object) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "cycledecon.cli", *map(str, args)], capture_output=True,
                            text=True, env=ENV, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def kill_at_marker(script: str, args: list[object], work: Path) -> int:
    """Run `script` with `args` until it touches its marker, SIGKILL it there; its pid."""
    marker = work / "reached"
    with open(work / "child.log", "w") as log:
        child = subprocess.Popen([sys.executable, "-c", script, str(marker), *map(str, args)],
                                 stdout=log, stderr=subprocess.STDOUT, env=ENV)  # fmt: skip
    deadline = time.monotonic() + 300
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            child.wait()
            raise AssertionError(f"the child ended before its kill point:\n{(work / 'child.log').read_text()[-3000:]}")
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    marker.unlink()
    return child.pid


def tree(path: Path) -> dict[str, str]:
    """Every file under `path` with its checksum."""
    return {str(p.relative_to(path)): sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}


def same_store(a: Path, b: Path) -> None:
    """Two OME-Zarr stores hold the same arrays (bit for bit) and attributes."""
    first, second = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert first.attrs.asdict() == second.attrs.asdict()
    names = sorted(name for name, _ in first.arrays())
    assert names == sorted(name for name, _ in second.arrays()) and names
    for name in names:
        np.testing.assert_array_equal(first[name][...], second[name][...])


def test_kill_9_during_deconvolve_leaves_no_store_and_a_rerun_gives_the_same_output(tmp_path):
    from cycledecon.io import is_cycledecon_image

    raw, model = tiny_model(tmp_path, (16, 48, 48))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"deconvolve": {"block_size": [8, 16, 16], "device": "cpu", "precision": "fp32"}}))
    inputs = {p: sha256(p) for p in (raw, model, config)}
    reference, out = tmp_path / "reference.ome.zarr", tmp_path / "out.ome.zarr"
    command = ["deconvolve", raw, "--model", model, "-o", out, "--config", config]
    cycledecon(*command[:5], reference, *command[6:])

    pid = kill_at_marker(STOP_DECONVOLVE, command, tmp_path)
    partial = tmp_path / f".out.ome.zarr.partial-{pid}"
    assert partial.is_dir() and not out.exists() and not is_cycledecon_image(partial)
    assert {p: sha256(p) for p in inputs} == inputs

    cycledecon(*command)
    same_store(out, reference)
    assert not partial.exists() and not list(tmp_path.glob(".out.ome.zarr.*"))  # the dead run's store cleared
    assert {p: sha256(p) for p in inputs} == inputs


def test_kill_9_during_training_resumes_to_the_same_model(tmp_path):
    import torch

    from cycledecon.psf.theory import gaussian_psf
    from test_train import TINY, write_store

    store = write_store(tmp_path / "patches.zarr", gaussian_psf((3, 5, 5), (1.0, 1.0, 1.0)), seed=1,
                        patch=(8, 16, 16), volumes=2, per_volume=3)  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"train": TINY}))
    before = tree(store), sha256(config)
    cycledecon("train", store, "-o", tmp_path / "reference", "--config", config)

    out = tmp_path / "killed"
    kill_at_marker(STOP_TRAINING, ["train", store, "-o", out, "--config", config], tmp_path)
    assert not (out / "model.pt").exists()  # nothing that looks like a finished training
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2

    cycledecon("train", store, "-o", out, "--config", config)  # resumes from step 2
    assert sha256(out / "model.pt") == sha256(tmp_path / "reference" / "model.pt")
    assert (tree(store), sha256(config)) == before

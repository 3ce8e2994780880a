"""Running the Snakemake workflow for one case: its data once, then each (method, seed) on that data.

Layout under ``<work>/<preset>/<case>/``:

* ``data/`` — a workflow directory whose run stops at the patches: the demo rule generates the
  stacks (seeded by `demo.seed` and each sample's name), then ingest, normalize, patches;
* ``<method>_s<seed>/`` — one workflow directory per trained variant. Its ``resources/demo``,
  ``results/normalized`` and ``results/patches`` are links into ``data/`` and Snakemake may only
  use the train and deconvolve rules (``--allowed-rules``), so every variant trains on the very
  same patches and deconvolves the very same stacks, and a case's data is made once, not nine
  times (one Snakemake job costs seconds of interpreter start-up on 2 cores);
* the non-blind method's frozen PSF is ``data/resources/demo/true_psf.ome.tif`` itself, whole;
* ``data/results/patch_centres/`` — the same patches without their context margin, for the methods
  that train without one (`suite.WITHOUT_CONTEXT`); their ``results/patches`` link points there.

A variant runs either as its own Snakemake run (`train_and_deconvolve`) or, where one Snakemake
run per variant costs more than the training itself (2 CPU cores, `--quick`), by calling the very
functions the train and deconvolve rules' scripts call (`train_and_deconvolve_in_process`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import tifffile
import torch
import yaml
import zarr

from suite import CASES, PRESETS, WITHOUT_CONTEXT, Case, case_config

from cycledecon.atomic import atomic_path
from cycledecon.deconvolve import deconvolve_file
from cycledecon.train import BLIND_STAGE, train
from cycledecon.train_checkpoint import CHECKPOINT
from cycledecon.train_state import ARRAYS

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CAMPAIGN = "bench"
WIDEFIELD = ("wf_01", "wf_02", "wf_03")
REFERENCES = ("ref_01", "ref_02", "ref_03")
SHARED = ("resources/demo", "results/normalized")
PATCHES, CENTRES = "results/patches", "results/patch_centres"
STORE = f"{CAMPAIGN}/patches.zarr"
TRUE_PSF = "resources/demo/true_psf.ome.tif"


@dataclass(frozen=True)
class Variant:
    """One trained (method, seed) of a case, and where its workflow runs."""

    method: str
    seed: int
    directory: Path

    @property
    def model_dir(self) -> Path:
        return self.directory / "results" / "models" / CAMPAIGN

    @property
    def patches(self) -> str:
        """Where in the case's data directory its patches are: with their context margin, or only
        their centres for a method that trains without one."""
        return CENTRES if self.method in WITHOUT_CONTEXT else PATCHES

    def deconvolved(self, sample: str) -> Path:
        return self.directory / "results" / "deconvolved" / f"{sample}.ome.zarr"


def base_config() -> dict[str, Any]:
    """The repository's default workflow config, which presets and cases are merged over."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def quick_case(work: Path, name: str) -> tuple[Case, dict[str, Any], Path]:
    """A case of a finished `run.py --quick` under `work`: the case, its config, its data directory."""
    case = next(c for c in CASES if c.name == name)
    data = work / "quick" / case.name / "data"
    if not (data / "results" / "patches").exists():
        raise SystemExit(f"error: {data}: no case data; run benchmarks/quality/run.py --quick --cases {name} first")
    return case, case_config(base_config(), PRESETS["quick"], case), data


def sample_sheet(optics: dict[str, float]) -> pd.DataFrame:
    """The case's sheet: three widefield stacks with the user's (nominal) optics, three references."""
    rows = [{"sample": s, "path": f"resources/demo/{s}.ome.tif", "role": "widefield", "campaign": CAMPAIGN,
             **optics, "ground_truth": f"resources/demo/truth/{s}.ome.tif"} for s in WIDEFIELD]
    rows += [{"sample": s, "path": f"resources/demo/{s}.ome.tif", "role": "reference", "campaign": CAMPAIGN}
             for s in REFERENCES]
    return pd.DataFrame(rows)


def workdir_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with the sheet and the true PSF at their places inside a workflow directory."""
    return {**config, "samples": "config/samples.tsv", "true_psf": {CAMPAIGN: TRUE_PSF}}


def write_workdir(directory: Path, config: dict[str, Any], sheet: pd.DataFrame) -> Path:
    """A workflow directory with config/config.yaml and config/samples.tsv; returns the config path."""
    (directory / "config").mkdir(parents=True, exist_ok=True)
    config = workdir_config(config)
    sheet.to_csv(directory / "config" / "samples.tsv", sep="\t", index=False)
    path = directory / "config" / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def link_shared(variant: Variant, data: Path) -> None:
    """Point the variant's data paths at the case's data directory (idempotent)."""
    sources = {**{relative: relative for relative in SHARED}, PATCHES: variant.patches}
    for relative, source in sources.items():
        link = variant.directory / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to((data / source).resolve(), target_is_directory=True)


def snakemake(directory: Path, config_path: Path, targets: list[str],
              allowed_rules: list[str] | None = None) -> float:
    """Run the repository's Snakefile in `directory` on 2 cores; returns the wall time in seconds.

    Snakemake's own output goes to ``snakemake.log`` in the directory; a failure raises with its tail.
    """
    directory = directory.resolve()
    command = [SNAKEMAKE, *targets, "--snakefile", str(REPO / "Snakefile"), "--directory", str(directory),
               "--configfile", str(config_path.resolve()), "--cores", "2"]
    if allowed_rules:
        command += ["--allowed-rules", *allowed_rules]  # last: it takes every word after it
    started = time.perf_counter()
    with open(directory / "snakemake.log", "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    if result.returncode != 0:
        tail = (directory / "snakemake.log").read_text()[-3000:]
        raise RuntimeError(f"snakemake failed in {directory}:\n{tail}")
    return time.perf_counter() - started


def make_data(directory: Path, config: dict[str, Any], sheet: pd.DataFrame) -> float:
    """Generate, ingest, normalize and cut patches of a case, and the patches' centres; returns
    the wall time."""
    started = time.perf_counter()
    config_path = write_workdir(directory, config, sheet)
    targets = [TRUE_PSF, f"{PATCHES}/{STORE}", *(f"results/normalized/{s}.ome.zarr" for s in WIDEFIELD)]
    snakemake(directory, config_path, targets)
    write_centres(directory / PATCHES / STORE, directory / CENTRES / STORE)
    return time.perf_counter() - started


def write_centres(source: Path, target: Path) -> None:
    """The patch store `source` without its context margin: the same patches, the same attributes,
    context 0. Rewritten only when `source` is newer, so Snakemake sees no new input on a rerun."""
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return
    shutil.rmtree(target, ignore_errors=True)
    group = zarr.open_group(str(source), mode="r")
    margin = group.attrs["context_voxels"]
    with atomic_path(target) as tmp:
        out = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name in ARRAYS:
            array = group[name]
            centre = array[(slice(None), *(slice(m, n - m) for m, n in zip(margin, array.shape[1:])))]
            out.create_array(name, data=centre, chunks=(1, *centre.shape[1:]))
        out.attrs.update({**group.attrs, "context_voxels": [0, 0, 0]})


def train_and_deconvolve(variant: Variant, config: dict[str, Any], sheet: pd.DataFrame, data: Path) -> float:
    """Train one variant on the case's patches and deconvolve the widefield stacks; returns the wall time."""
    config_path = write_workdir(variant.directory, config, sheet)
    link_shared(variant, data)
    targets = [f"results/models/{CAMPAIGN}/model.pt",
               *(f"results/deconvolved/{s}.ome.zarr" for s in WIDEFIELD)]
    return snakemake(variant.directory, config_path, targets, allowed_rules=["train", "deconvolve"])


def train_and_deconvolve_in_process(variant: Variant, config: dict[str, Any], sheet: pd.DataFrame,
                                    data: Path) -> float:
    """What the train and deconvolve rules' scripts do, in this process; returns the wall time.

    Finished outputs are kept, and a variant directory whose config changed is cleared first, so a
    rerun redoes exactly what changed (what Snakemake would decide for the same two rules).
    """
    config_path = variant.directory / "config" / "config.yaml"
    if config_path.exists() and yaml.safe_load(config_path.read_text()) != workdir_config(config):
        shutil.rmtree(variant.directory)
    write_workdir(variant.directory, config, sheet)
    started = time.perf_counter()
    model = variant.model_dir / "model.pt"
    if not model.exists():
        train(data / variant.patches / STORE, variant.model_dir, config["train"],
              reference_psf=tifffile.imread(data / TRUE_PSF))
    for sample in WIDEFIELD:
        if not variant.deconvolved(sample).exists():
            deconvolve_file(data / "results" / "normalized" / f"{sample}.ome.zarr", model,
                            variant.deconvolved(sample), config["deconvolve"],
                            threads=torch.get_num_threads(), progress=False)
    return time.perf_counter() - started


def training_seconds(variant: Variant) -> float:
    """Seconds of the training loops alone (from train_log.csv, the blind stage's too where the
    variant has two), without start-up and deconvolution."""
    logs = [variant.model_dir / "train_log.csv", variant.model_dir / BLIND_STAGE / "train_log.csv"]
    return sum(float(pd.read_csv(log)["seconds"].iloc[-1]) for log in logs if log.exists())


def continue_from(blind: Variant, refined: Variant) -> None:
    """Give a refined variant the finished blind variant of its seed as its first stage: the same
    config, so `train` resumes that checkpoint at its end and only the second stage trains."""
    target = refined.model_dir / BLIND_STAGE / CHECKPOINT
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blind.model_dir / CHECKPOINT, target)


def frozen_psf(data: Path) -> Path:
    """The non-blind method's PSF file: the case's true PSF whole, as the demo rule wrote it (train
    uses a `psf.file` at its full extent; the preset's context margin holds its radius)."""
    return (data / TRUE_PSF).resolve()

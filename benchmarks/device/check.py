"""One-call GPU check (issue #18, item 5): training and inference speed of the GPU preset on a
lent NVIDIA machine, written as one markdown table (benchmarks/device/README.md says how to run it).

    python benchmarks/device/check.py          # on the GPU machine, from the repository root
    python benchmarks/device/check.py --device cpu --steps 2 --warmup 1 --repeats 1 --volume 16 64 64 \\
        --stack 16 64 64 --patch 16 32 32 --context-um 1 0.8 0.8 --depth 2 --channels 4 --threads 1

The GPU machine lacks some of the project's dependencies and cannot reach the internet. First,
every distribution pinned in requirements.txt that is not installed at all is installed from the
wheels wheels.sh downloaded (--wheels): ``pip install --no-index --no-deps --target`` (or unzipped,
where pip is missing or fails) into a folder under the temporary directory, appended to sys.path,
so nothing the machine has is replaced. The project runs from src/ on sys.path, uninstalled.

The rows, in the order they run (each part's default precision first, in case the time budget
cuts the run short):

1. train, auto and fp32: the quality benchmark's "full" preset (benchmarks/quality/suite.py: G
   depth 3 × 32, patches 32×64×64 plus their context margin, batch 4) merged over
   config/config.yaml, as benchmarks/training.py's "gpu" preset, on a patch store built by that
   script's own functions (demo stacks, normalize_array, extract_patches). `cycledecon.train.train`
   runs --warmup + --steps steps, each `train_step` timed (training.py's StepTimer); the rate is
   timed steps per second of timed steps. ``auto`` is train.precision's default: bf16 autocast
   with channels-last where the device runs bf16 natively.
2. G alone, bf16 and fp32: the G of the first training that finished, on one halo'd block under
   torch.inference_mode, one warm-up pass then --repeats timed ones. The block is the one
   deconvolve chooses for the volume in fp32 with the default memory budget (both precisions run
   the same block), or --block. Rate: block (output) voxels per second of one pass.
3. deconvolve, bf16 and fp32: `cycledecon.deconvolve.deconvolve_file`, what `cycledecon deconvolve`
   runs, on a normalized synthetic OME-Zarr of --volume voxels (a demo-recipe widefield stack of
   --tile voxels, tiled), block from the default memory budget: end to end (read, halo, G, inverse
   normalization, float32 write with pyramid), with the seconds inside G's block passes beside.

Peak GPU memory is torch.cuda.max_memory_allocated over the row's work. The table is rewritten
after every row, so a run cut short keeps what it measured. A part that fails becomes a row
saying why, the other parts still run, and the exit status is 1; parts that would start after
--budget-s seconds are skipped, with a row saying so.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REQUIREMENTS = HERE / "requirements.txt"
DEFAULT_WHEELS = HERE / "wheels"
MIB = 2**20
#: train.precision values timed (fp32 and the default) and deconvolve precisions timed.
#: Each list starts with what the GPU runs by default, which matters most if the time budget cuts the
#: run short; the trained model inference runs with is the first train precision's.
TRAIN_PRECISIONS = ("auto", "fp32")
INFER_PRECISIONS = ("bf16", "fp32")
COLUMNS = ("part", "precision", "what was measured", "size", "seconds", "rate", "unit", "peak GPU MiB")


# ------------------------------------------------------------------------------------ dependencies
def pinned_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """The ``name==version`` lines of requirements.txt (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def missing(requirements: Sequence[str]) -> list[str]:
    """The requirements whose distribution is not installed at all (any version counts as there:
    the machine's own numpy, torch, ... are never replaced)."""
    absent = []
    for requirement in requirements:
        try:
            importlib.metadata.distribution(requirement.split("==")[0])
        except importlib.metadata.PackageNotFoundError:
            absent.append(requirement)
    return absent


def site_folder() -> Path:
    """Where missing distributions are installed: outside the repository (the wheels folder is
    carried to the device machine, and must stay small), one folder per Python version."""
    return Path(tempfile.gettempdir()) / f"cycledecon-device-site-py{sys.version_info[0]}{sys.version_info[1]}"


def install_missing(wheels: Path) -> list[str]:
    """Install the missing pinned distributions from `wheels` into `site_folder()`, put that folder
    and the project's src/ and benchmarks/ on sys.path; returns what was installed."""
    site = site_folder()
    sys.path.append(str(site))
    importlib.invalidate_caches()
    absent = missing(pinned_requirements())
    if absent:
        if not any(wheels.glob("*.whl")):
            raise SystemExit(f"error: {', '.join(absent)} not installed and no wheels in {wheels}; "
                             "run benchmarks/device/wheels.sh on a machine with internet first")  # fmt: skip
        print("installing:", " ".join(absent), flush=True)
        if not pip_install(absent, wheels, site):
            print("pip is missing or failed: unzipping the wheels instead", flush=True)
            unzip_wheels(absent, wheels, site)
        importlib.invalidate_caches()
    for path in (ROOT / "src", ROOT / "benchmarks", ROOT / "benchmarks" / "quality"):
        sys.path.insert(0, str(path))
    return absent


def pip_install(requirements: Sequence[str], wheels: Path, site: Path) -> bool:
    """``pip install --no-index --no-deps --target site`` from `wheels`; False without pip or on failure."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        return False
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--find-links",
               str(wheels), "--target", str(site), "--upgrade", *requirements]  # fmt: skip
    return subprocess.run(command).returncode == 0


def unzip_wheels(requirements: Sequence[str], wheels: Path, site: Path) -> None:
    """What ``pip install --target`` does for these wheels, where the interpreter has no pip: a
    wheel is a zip of its importable files and its .dist-info."""
    for requirement in requirements:
        name, version = requirement.split("==")
        prefix = f"{name.replace('-', '_').lower()}-{version}-"
        found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(prefix)]
        if not found:
            raise SystemExit(f"error: no wheel for {requirement} in {wheels}; rerun benchmarks/device/wheels.sh")
        with zipfile.ZipFile(found[0]) as archive:
            archive.extractall(site)


# ------------------------------------------------------------------------------------------ config
def gpu_preset(opts: argparse.Namespace) -> dict[str, Any]:
    """The workflow config of benchmarks/training.py's "gpu" preset, with the sizes given by flags."""
    from suite import deep_update
    from training import preset_config

    config = preset_config("gpu")
    changes: dict[str, Any] = {"demo": {}, "patches": {}, "train": {"generator": {}, "optim": {}}}
    for value, section, key in ((opts.stack, changes["demo"], "shape"), (opts.patch, changes["patches"], "shape"),
                                (opts.context_um, changes["patches"], "context_um"),
                                (opts.ring, changes["train"], "generator_context"),
                                (opts.depth, changes["train"]["generator"], "depth"),
                                (opts.channels, changes["train"]["generator"], "base_channels"),
                                (opts.batch_size, changes["train"]["optim"], "batch_size")):  # fmt: skip
        if value is not None:
            section[key] = list(value) if isinstance(value, list) else value
    return deep_update(config, changes)


def precision_label(choice: str, device: str) -> str:
    """``choice`` and, where it differs, what it resolves to on `device` (``auto → bf16``)."""
    import torch

    from cycledecon.precision import resolve_precision

    resolved = resolve_precision(choice, torch.device(device)).name
    return choice if choice == resolved else f"{choice} → {resolved}"


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(n)) for n in shape)


def reset_peak(device: str) -> None:
    """Start a fresh peak-memory window on a CUDA device (nothing on the CPU)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float | None:
    """torch.cuda.max_memory_allocated since the last reset_peak, in MiB (None on the CPU)."""
    import torch

    if device != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / MIB


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- parts
def train_row(config: dict[str, Any], store: Path, precision: str, opts: argparse.Namespace,
              out_dir: Path) -> dict[str, Any]:  # fmt: skip
    """One `cycledecon.train.train` run of --warmup + --steps steps at `precision`, as a row."""
    from suite import deep_update
    from training import time_training

    from cycledecon.config.patches import parse_patch_config
    from cycledecon.patches import context_voxels
    from cycledecon.voxel import VoxelSize

    patch = parse_patch_config(config["patches"])
    margin = context_voxels(patch, VoxelSize(*config["demo"]["voxel_size_um"]))
    train_config = deep_update(config["train"], {"precision": precision})
    reset_peak(opts.device)
    started = time.perf_counter()
    result = time_training(store, train_config, opts.steps, opts.warmup, opts.device, out_dir)
    call_s = time.perf_counter() - started
    seconds = sum(result["seconds"])
    g, batch = train_config["generator"], train_config["optim"]["batch_size"]
    window = [p + 2 * m for p, m in zip(patch.shape, margin)]
    measured = (f"cycledecon.train.train, {len(result['seconds'])} timed train_step calls after {opts.warmup} "
                f"warm-up (median {statistics.median(result['seconds']):.4f} s); G depth {g['depth']} × "
                f"{g['base_channels']}, batch {batch}; whole train() call {call_s:.1f} s")  # fmt: skip
    return {"part": "train", "precision": precision_label(precision, opts.device), "measured": measured,
            "size": f"patch {shape_text(patch.shape)} (+ context {shape_text(window)})", "seconds": seconds,
            "rate": len(result["seconds"]) / seconds, "unit": "steps/s", "peak": result["peak_gpu_mib"]}  # fmt: skip


def inference_block(model: Path, volume: Sequence[int], opts: argparse.Namespace) -> list[int]:
    """The block G alone runs: --block, else what deconvolve chooses for `volume` in fp32 with the
    default memory budget, clipped to the volume."""
    import torch

    from cycledecon.config.deconvolve import parse_inference_config
    from cycledecon.deconvolve import choose_block
    from cycledecon.model.checkpoint import load_model
    from cycledecon.precision import Precision

    if opts.block is not None:
        return list(opts.block)
    _, metadata = load_model(model, "cpu")
    config = parse_inference_config({"device": opts.device})
    block, _, _ = choose_block(config, volume, metadata["generator"], torch.device(opts.device), Precision(bf16=False))
    return [min(b, n) for b, n in zip(block, volume)]


def generator_row(model: Path, block: Sequence[int], precision: str, opts: argparse.Namespace) -> dict[str, Any]:
    """G alone on one halo'd block under inference_mode: one warm-up pass, --repeats timed ones."""
    import torch

    from cycledecon.deconvolve import halo_voxels
    from cycledecon.model.checkpoint import load_model
    from cycledecon.precision import resolve_precision

    device = torch.device(opts.device)
    generator, metadata = load_model(model, device)
    chosen = resolve_precision(precision, device)
    generator = chosen.prepare(generator)
    halo = halo_voxels(metadata["generator"])
    halod = [b + 2 * h for b, h in zip(block, halo)]
    reset_peak(opts.device)
    batch = chosen.layout(torch.rand(1, 1, *halod, device=device))
    seconds = []
    with torch.inference_mode(), chosen.autocast(device):
        for repeat in range(opts.repeats + 1):
            sync(opts.device)
            started = time.perf_counter()
            out = generator(batch)
            sync(opts.device)
            if repeat:
                seconds.append(time.perf_counter() - started)
            del out
    peak = peak_mib(opts.device)
    del generator, batch
    g, weights = metadata["generator"], "trained" if metadata.get("steps") else "random weights"
    measured = (f"G (depth {g['depth']} × {g['base_channels']}, {weights}) forward on one block + halo {list(halo)}, "
                f"torch.inference_mode, 1 warm-up + {opts.repeats} timed passes; rate counts block voxels")  # fmt: skip
    mean = statistics.mean(seconds)
    return {"part": "G alone", "precision": precision_label(precision, opts.device), "measured": measured,
            "size": f"block {shape_text(block)} (halo'd {shape_text(halod)})", "seconds": mean,
            "rate": math.prod(block) / mean / 1e6, "unit": "Mvoxel/s", "peak": peak}  # fmt: skip


def synthetic_volume(config: dict[str, Any], volume: Sequence[int], tile: Sequence[int], work: Path) -> Path:
    """A normalized OME-Zarr of `volume` voxels: one demo-recipe widefield stack of `tile` voxels
    (cycledecon.demo, normalized as the normalize rule does), tiled to `volume`."""
    import dask.array as da

    from cycledecon.config.demo import parse_demo_config
    from cycledecon.demo import sample_rng, true_psf, widefield_stack
    from cycledecon.io import write_ome_zarr
    from cycledecon.normalize import normalize_array

    tile = [min(t, n) for t, n in zip(tile, volume)]
    settings = parse_demo_config({**config["demo"], "shape": tile})
    stack = widefield_stack(settings, true_psf(settings), sample_rng(settings.seed, "device_check"))[0]
    data, record = normalize_array(stack, settings.voxel_size, config["normalize"])
    reps = [-(-n // t) for n, t in zip(volume, tile)]
    tiled = da.tile(da.from_array(data), reps)[tuple(slice(0, n) for n in volume)]
    return write_ome_zarr(tiled, work / "volume.ome.zarr", settings.voxel_size, attrs={"normalization": record})


def deconvolve_row(store: Path, model: Path, volume: Sequence[int], precision: str, opts: argparse.Namespace,
                   work: Path) -> dict[str, Any]:  # fmt: skip
    """`deconvolve_file` end to end on `store`, with the seconds inside G's block passes on the side."""
    import cycledecon.deconvolve as deconvolve
    from cycledecon.io import read_ome_zarr

    forward = deconvolve.BlockPredictor.__call__
    passes: list[float] = []

    def timed(self: Any, blocks: Any) -> Any:
        started = time.perf_counter()
        out = forward(self, blocks)
        passes.append(time.perf_counter() - started)
        return out

    output = work / f"deconvolved_{precision}.ome.zarr"
    reset_peak(opts.device)
    with mock.patch.object(deconvolve.BlockPredictor, "__call__", timed):
        started = time.perf_counter()
        deconvolve.deconvolve_file(store, model, output, {"device": opts.device, "precision": precision}, progress=False)
        wall = time.perf_counter() - started
    peak = peak_mib(opts.device)
    record = read_ome_zarr(output)[2]["deconvolution"]
    shutil.rmtree(output)
    voxels = math.prod(volume)
    measured = (f"cycledecon.deconvolve.deconvolve_file end to end (read, halo, G, inverse normalization, float32 "
                f"write with pyramid), {len(passes)} G batch passes taking {sum(passes):.4g} s "
                f"({voxels / sum(passes) / 1e6:.4g} Mvoxel/s inside G, host↔device copies included)")  # fmt: skip
    budget = record["memory_gb"]
    return {"part": "deconvolve", "precision": precision_label(precision, opts.device), "measured": measured,
            "size": f"volume {shape_text(volume)}, block {shape_text(record['block_size'])}"
                    + (f" (budget {budget:g} GiB)" if budget else ""),
            "seconds": wall, "rate": voxels / wall / 1e6, "unit": "Mvoxel/s", "peak": peak}  # fmt: skip


# ------------------------------------------------------------------------------------------- table
def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def machine_lines(device: str) -> list[str]:
    """The GPU, torch (and its CUDA), Python and the host: what the numbers depend on."""
    import torch
    from provenance import machine

    gpu = torch.cuda.get_device_name() if device == "cuda" else f"none (--device {device})"
    return [f"- GPU: {gpu}", f"- torch: {torch.__version__} (CUDA {torch.version.cuda or '–'})",
            f"- host: {machine(device)}; Python {platform.python_version()}"]  # fmt: skip


def header(opts: argparse.Namespace, installed: Sequence[str]) -> str:
    """What, where and when: date, commit, machine, command, setup times."""
    setup = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in opts.setup.items()) or "–"
    return "\n".join([
        "# Device check", "",
        f"- date: {opts.date}",
        f"- commit: {opts.commit}",
        *machine_lines(opts.device),
        f"- command: `python benchmarks/device/check.py {' '.join(opts.argv)}`",
        f"- installed from wheels: {', '.join(installed) if installed else 'nothing (all present)'}",
        f"- setup outside the rows: {setup}; whole script so far {time.perf_counter() - opts.started:.0f} s",
        "- seconds: train = sum of the timed steps, G alone = mean of one pass, deconvolve = wall time; "
        "peak GPU MiB = torch.cuda.max_memory_allocated over the row's work",
    ])  # fmt: skip


def table(rows: Sequence[dict[str, Any]], head: str) -> str:
    """The markdown results table under `head`."""
    lines = [head, "", "| " + " | ".join(COLUMNS) + " |", "|---|---|---|---|---:|---:|---|---:|"]
    for row in rows:
        lines.append(f"| {row['part']} | {row['precision']} | {row['measured']} | {row['size']} | "
                     f"{fmt(row['seconds'], '.4g')} | {fmt(row['rate'], '.4g')} | {row['unit']} | "
                     f"{fmt(row['peak'], '.0f')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def failed_row(part: str, precision: str, reason: str) -> dict[str, Any]:
    """A row for a part that failed or was skipped: no numbers, the reason instead."""
    return {"part": part, "precision": precision, "measured": reason.replace("|", "/").replace("\n", " "),
            "size": "–", "seconds": None, "rate": None, "unit": "–", "peak": None}  # fmt: skip


# -------------------------------------------------------------------------------------------- main
class Check:
    """The run: its rows, rewritten to --out after each one; a part's failure becomes its row."""

    def __init__(self, opts: argparse.Namespace, installed: Sequence[str]) -> None:
        self.opts, self.installed = opts, installed
        self.rows: list[dict[str, Any]] = []

    @property
    def complete(self) -> bool:
        """Whether every row has its numbers (none failed, was skipped or could not run)."""
        return all(row["rate"] is not None for row in self.rows)

    def write(self) -> None:
        self.opts.out.parent.mkdir(parents=True, exist_ok=True)
        self.opts.out.write_text(table(self.rows, header(self.opts, self.installed)))

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        print({k: v for k, v in row.items() if k != "measured"}, flush=True)
        self.write()

    def run(self, part: str, precision: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Measure one row unless past the time budget; a failure is recorded, not raised."""
        if time.perf_counter() - self.opts.started > self.opts.budget_s:
            self.add(failed_row(part, precision, f"skipped: past --budget-s {self.opts.budget_s:g} s"))
            return None
        try:
            row = measure()
        except Exception as error:  # noqa: BLE001 - one part's failure must not lose the others
            traceback.print_exc()
            self.add(failed_row(part, precision, f"failed: {type(error).__name__}: {error}"))
            return None
        self.add(row)
        return row

    def setup(self, name: str, make: Callable[[], Any]) -> Any:
        """A step no row measures (patch store, block, synthetic volume), timed into the header;
        a failure becomes a row, and None is returned."""
        started = time.perf_counter()
        try:
            value = make()
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            self.add(failed_row(name, "–", f"failed: {type(error).__name__}: {error}"))
            return None
        self.opts.setup[name] = time.perf_counter() - started
        return value


def random_model(config: dict[str, Any], path: Path) -> Path:
    """A model.pt of the preset's G with random weights, for inference when no training finished
    (speed does not depend on the weights)."""
    from inference import write_model

    return write_model(path, config["train"]["generator"])


def patch_store(config: dict[str, Any], work: Path) -> Path:
    """benchmarks/training.py's patch store for `config` (its demo stacks at full size)."""
    from training import patch_store as training_store

    return training_store(config, work / "store", quick=False)


def train_part(check: Check, config: dict[str, Any], work: Path) -> Path | None:
    """The train rows; the model.pt inference runs with (the first training that finished, else
    random weights; None if even that failed)."""
    store = check.setup("patch store", lambda: patch_store(config, work))
    models = []
    for precision in TRAIN_PRECISIONS:
        out_dir = work / f"train_{precision}"
        if store is None:
            check.add(failed_row("train", precision, "not run: no patch store"))
        elif check.run("train", precision, lambda: train_row(config, store, precision, check.opts, out_dir)):
            models.append(out_dir / "model.pt")
    if models:
        return models[0]
    return check.setup("random-weight model", lambda: random_model(config, work / "random.pt"))


def generator_part(check: Check, model: Path | None) -> None:
    """The G-alone rows, both on the block deconvolve would choose in fp32 (or --block)."""
    opts = check.opts
    block = check.setup("block choice", lambda: inference_block(model, opts.volume, opts)) if model else None
    for precision in INFER_PRECISIONS:
        if block is None:
            check.add(failed_row("G alone", precision, "not run: no model or no block"))
        else:
            check.run("G alone", precision, lambda: generator_row(model, block, precision, opts))


def deconvolve_part(check: Check, config: dict[str, Any], model: Path | None, work: Path) -> None:
    """The deconvolve rows, on one synthetic volume."""
    opts = check.opts
    source = check.setup("synthetic volume", lambda: synthetic_volume(config, opts.volume, opts.tile, work))
    for precision in INFER_PRECISIONS:
        if source is None or model is None:
            check.add(failed_row("deconvolve", precision, "not run: no volume or no model"))
        else:
            check.run("deconvolve", precision,
                      lambda: deconvolve_row(source, model, opts.volume, precision, opts, work))  # fmt: skip


def run_check(opts: argparse.Namespace, installed: Sequence[str], work: Path) -> bool:
    """Every part in order; True when every row was measured."""
    config = gpu_preset(opts)
    check = Check(opts, installed)
    model = train_part(check, config, work)
    generator_part(check, model)
    deconvolve_part(check, config, model, work)
    check.write()
    return check.complete


def default_out() -> Path:
    """$OUT/device_check.md on the device machine, else benchmarks/results/device_check.md."""
    out = os.environ.get("OUT")
    return Path(out) / "device_check.md" if out else ROOT / "benchmarks" / "results" / "device_check.md"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = {"nargs": 3, "type": int, "metavar": ("Z", "Y", "X")}
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per precision")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training steps first")
    parser.add_argument("--volume", **size, default=[128, 1024, 1024], help="deconvolved volume")
    parser.add_argument("--tile", **size, default=[64, 256, 256],
                        help="synthetic stack tiled to --volume (clipped to it)")  # fmt: skip
    parser.add_argument("--block", **size, default=None, help="G-alone block (default: deconvolve's fp32 choice)")
    parser.add_argument("--repeats", type=int, default=5, help="timed G-alone passes")
    parser.add_argument("--stack", **size, default=None,
                        help="demo stacks the patches are cut from (default: the preset's)")  # fmt: skip
    parser.add_argument("--patch", **size, default=None, help="patches.shape (default: the preset's)")
    parser.add_argument("--context-um", nargs=3, type=float, metavar=("Z", "Y", "X"), default=None,
                        help="patches.context_um (default: the preset's)")  # fmt: skip
    parser.add_argument("--ring", nargs=3, type=int, metavar=("Z", "Y", "X"), default=None,
                        help="train.generator_context, voxels (default: the preset's)")  # fmt: skip
    parser.add_argument("--depth", type=int, default=None, help="G's depth (default: the preset's)")
    parser.add_argument("--channels", type=int, default=None, help="G's base_channels (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=None, help="train.optim.batch_size (default: the preset's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--budget-s", type=float, default=360.0,
                        help="parts that would start later than this are skipped")  # fmt: skip
    parser.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="wheels from wheels.sh")
    parser.add_argument("--commit", default=None, help="commit to state (default: git rev-parse HEAD)")
    parser.add_argument("--out", type=Path, default=None, help="default: $OUT/device_check.md, else "
                        "benchmarks/results/device_check.md")  # fmt: skip
    opts = parser.parse_args(argv)
    if opts.steps < 1 or opts.warmup < 0 or opts.repeats < 1:
        parser.error("--steps and --repeats must be at least 1, --warmup at least 0")
    if min(opts.volume + opts.tile + (opts.block or [1])) < 1:
        parser.error("--volume, --tile and --block need sizes of at least 1")
    opts.out = opts.out or default_out()
    opts.argv = list(argv)
    opts.started = time.perf_counter()
    opts.date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    opts.setup = {}
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    installed = install_missing(opts.wheels)
    import torch

    if opts.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: this torch sees no CUDA GPU; use --device cpu")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    from provenance import code_version

    opts.commit = opts.commit or code_version()
    with tempfile.TemporaryDirectory(prefix="cycledecon-device-check-") as tmp:
        ok = run_check(opts, installed, Path(tmp))
    print(opts.out.read_text())
    print(f"written to {opts.out}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

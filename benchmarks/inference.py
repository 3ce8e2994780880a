"""Inference throughput and memory: cycledecon's blockwise generator in fp32 and in the default
precision, against Richardson–Lucy in the same run.

    python benchmarks/inference.py                  # 64×512×512 (minutes on 2 cores)
    python benchmarks/inference.py --quick          # 16×128×128 and a small G: a smoke run
    python benchmarks/inference.py --shape 64 256 256 --block 64 128 128 --big

G is config/config.yaml's train.generator with random weights: speed and memory do not depend on
training. One synthetic widefield stack (mixed phantom ⊛ the true widefield PSF, Poisson and read
noise) is made in this process. Each cycledecon run is `deconvolve_file` on the stack's normalized
OME-Zarr in a fresh subprocess under `/usr/bin/time`, so its peak RSS includes nothing from other
runs; its wall time is end to end (zarr reads, halo, G, pyramid and writes), and the time spent in
G's forward passes is measured on the side ("G alone": output voxels per second of G).

* Throughput: fp32, and `auto` (deconvolve.precision's default: bf16 autocast with channels-last
  where the CPU runs bf16 natively, else fp32; see cycledecon.precision), on the 1× stack, with the
  block the memory budget chooses (deconvolve.memory_gb, `--memory-gb`, or its default) unless
  `--block` is given.
* Bounded memory: `auto` on the 1× stack and on a stack 8× larger (the stack tiled 2× per axis),
  both with one explicit deconvolve.block_size (`--block`, or the block the budget chose for the
  1× stack): both runs then compute blocks of the same size, so their peak RSS should be similar.
* Command line: `cycledecon deconvolve` of the same stack as a uint16 OME-TIFF, as a user runs it,
  timed from the command's start: the figure the issue's acceptance names.
* Richardson–Lucy is `cycledecon.baselines.richardson_lucy` (scikit-image's, with offset handling),
  20 iterations with the true PSF, in this process, its FFTs given the same thread count.

Every row records the block it used, whether the budget chose it, and the voxels G computes per
output voxel (the halo's overhead). Writes benchmarks/results/inference.md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import scipy.fft
import torch
import yaml
from scipy.signal import fftconvolve

from cycledecon.baselines import richardson_lucy
from cycledecon.config.demo import Structures
from cycledecon.deconvolve import axis_blocks, face_padding_voxels, halo_voxels
from cycledecon.io import read_ome_zarr, write_ome_tiff, write_ome_zarr
from cycledecon.model import UNet3d, receptive_field, save_model
from cycledecon.normalize import normalize_array
from cycledecon.phantoms import mixed_phantom
from cycledecon.psf.theory import widefield_psf
from cycledecon.voxel import VoxelSize

from provenance import command_line, run_stamp

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "config.yaml"
RESULTS = Path(__file__).parent / "results" / "inference.md"
VOXEL = VoxelSize(0.25, 0.1, 0.1)
OPTICS = {"na": 1.4, "wavelength_nm": 520, "immersion_ri": 1.515}
PSF_SHAPE = (33, 65, 65)
NORMALIZATION = {"method": "percentile", "percentiles": [0.1, 99.9], "clip": True}
RL_ITERATIONS = 20
#: deconvolve.precision values timed: float32, and the default.
PRECISIONS = ("fp32", "auto")
#: --quick: the default generator made shallow and narrow, so that a smoke run takes seconds.
QUICK_GENERATOR = {"depth": 2, "base_channels": 4}

#: Runs in a fresh interpreter: one deconvolve_file call, timing G's forward passes on the side.
CHILD = """
import json, sys, time
import cycledecon.deconvolve as deconvolve
args = json.loads(sys.argv[1])
forward = deconvolve.BlockPredictor.__call__
model_s = 0.0
def timed(self, blocks):
    global model_s
    start = time.perf_counter()
    out = forward(self, blocks)
    model_s += time.perf_counter() - start
    return out
deconvolve.BlockPredictor.__call__ = timed
start = time.perf_counter()
if args["input"] is not None:
    deconvolve.deconvolve_file(args["input"], args["model"], args["output"], args["config"],
                          threads=args["threads"], progress=False)
print(json.dumps({"wall_s": time.perf_counter() - start, "model_s": model_s}))
"""


def default_generator() -> dict[str, Any]:
    """The `train.generator` section of config/config.yaml: the G users train and deconvolve with."""
    return dict(yaml.safe_load(CONFIG.read_text())["train"]["generator"])


def synthetic_stack(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy widefield stack in photons + offset, true PSF): the demo campaign's recipe."""
    rng = np.random.default_rng(seed)
    psf = widefield_psf(PSF_SHAPE, VOXEL, **OPTICS)
    sharp = mixed_phantom(shape, VOXEL, rng, asdict(Structures()))
    blurred = np.clip(fftconvolve(sharp, psf, mode="same"), 0, None)
    photons = rng.poisson(300 * blurred / blurred.max()) + rng.normal(100.0, 2.0, shape)
    return photons.astype(np.float32), psf


def write_model(path: Path, generator_config: dict[str, Any]) -> Path:
    """A model.pt of G with random weights (seeded) and the metadata deconvolve_file reads."""
    torch.manual_seed(0)
    metadata = {
        "generator": generator_config, "receptive_field": list(receptive_field(generator_config)),
        "patch_shape": [16, 32, 32], "channels": 1, "normalization": NORMALIZATION,
        "voxel_size": list(VOXEL.as_tuple()), "config": {"generator": generator_config},
    }  # fmt: skip
    return save_model(path, UNet3d(generator_config).eval(), metadata, learned_psf=None)


def run_measured(arguments: list[str], work: Path) -> tuple[str, float]:
    """Run `python arguments…` in a fresh process under /usr/bin/time: its stdout and its own peak
    RSS in MiB.

    /usr/bin/time is a small process that forks the child: rusage taken from this (large) process
    would count the pages the child shared with it between fork and exec.
    """
    rss_file = work / "rss.txt"
    command = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), sys.executable, *arguments]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return output, int(rss_file.read_text().split()[-1]) / 1024


def run_child(args: dict[str, Any], work: Path) -> dict[str, float]:
    """Run CHILD in a fresh process: its timings plus its own peak RSS in MiB."""
    output, peak_mib = run_measured(["-c", CHILD, json.dumps(args)], work)
    return {**json.loads(output.strip().splitlines()[-1]), "peak_rss_mib": peak_mib}


def deconvolve_run(store: Path | None, model: Path, config: dict[str, Any], threads: int, work: Path) -> dict[str, Any]:
    """One `deconvolve_file` run in a fresh process (none for `store` None: the imports alone), with
    the block and precision it used as recorded in its output; the output is removed after."""
    output = work / "out.ome.zarr"
    args = {"input": None if store is None else str(store), "model": str(model), "output": str(output),
            "config": config, "threads": threads}  # fmt: skip
    result = run_child(args, work)
    if store is None:
        return {**result, "wall_s": 0.0}
    return {**result, **output_record(output, config)}


def command_line_run(tiff: Path, model: Path, config: dict[str, Any], threads: int, work: Path) -> dict[str, Any]:
    """One `cycledecon deconvolve` of a raw TIFF as a user types it: wall time from the command's
    start (imports, reading and normalizing the TIFF included) and its peak RSS in MiB."""
    output, settings = work / "cli.ome.zarr", work / "cli.yaml"
    settings.write_text(yaml.safe_dump({"deconvolve": {**config, "threads": threads}}))
    start = time.perf_counter()
    _, peak_mib = run_measured(["-m", "cycledecon.cli", "deconvolve", str(tiff), "--model", str(model),
                                "-o", str(output), "--config", str(settings)], work)  # fmt: skip
    return {"wall_s": time.perf_counter() - start, "peak_rss_mib": peak_mib, **output_record(output, config)}


def output_record(output: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The block, budget and precision a run recorded in its output, which is then removed."""
    record = read_ome_zarr(output)[2]["deconvolution"]
    shutil.rmtree(output)
    requested = config.get("precision", "auto")
    precision = requested if requested == record["precision"] else f"{requested} → {record['precision']}"
    return {"block": record["block_size"], "memory_gb": record["memory_gb"], "precision": precision,
            "resolved": record["precision"], "face": record["face_padding_voxels"]}  # fmt: skip


@dataclass
class Runs:
    """The deconvolve runs of one benchmark, in order: each a table row, printed as it comes."""

    work: Path
    threads: int
    base: dict[str, Any]  # the deconvolve: settings every run shares
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, store: Path | None, shape: tuple[int, ...], model: Path, repeats: int = 1,
            **config: Any) -> dict[str, Any]:
        """Run `deconvolve_file` on `store` with `config` over the shared settings, `repeats` times in
        fresh processes; its row is the run of median wall time, with the range of all."""
        results = [deconvolve_run(store, model, {**self.base, **config}, self.threads, self.work)
                   for _ in range(repeats)]  # fmt: skip
        return self._median_row(name, shape, results)

    def add_command_line(self, name: str, tiff: Path, shape: tuple[int, ...], model: Path, repeats: int,
                         **config: Any) -> dict[str, Any]:
        """Like `add`, with `command_line_run` on a raw TIFF."""
        results = [command_line_run(tiff, model, {**self.base, **config}, self.threads, self.work)
                   for _ in range(repeats)]  # fmt: skip
        return self._median_row(name, shape, results)

    def _median_row(self, name: str, shape: tuple[int, ...], results: list[dict[str, Any]]) -> dict[str, Any]:
        """The row of the run of median wall time, with the range of all."""
        walls = sorted(r["wall_s"] for r in results)
        result = next(r for r in results if r["wall_s"] == walls[len(walls) // 2])
        self.rows.append({"run": name, "shape": shape, **result, "wall_range": (walls[0], walls[-1])})
        print(self.rows[-1], flush=True)
        return self.rows[-1]


def computed_per_kept(shape: Sequence[int], block: Sequence[int], halo: Sequence[int], face: Sequence[int]) -> float:
    """Voxels G computes per output voxel: every block reads the halo, clipped to the face padding."""
    computed = math.prod(sum(b.read_stop - b.read_start for b in axis_blocks(n, size, h, e))
                         for n, size, h, e in zip(shape, block, halo, face))
    return computed / math.prod(shape)


def time_richardson_lucy(stack: np.ndarray, psf: np.ndarray, threads: int, repeats: int) -> list[float]:
    """Wall seconds of `repeats` Richardson–Lucy runs on `stack`, its FFTs on `threads` workers."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        with scipy.fft.set_workers(threads):
            richardson_lucy(stack, psf, iterations=RL_ITERATIONS)
        seconds.append(time.perf_counter() - start)
    return seconds


def mvoxels_per_s(row: dict[str, Any], seconds_key: str = "wall_s") -> float | None:
    """Output Mvoxel per second of `seconds_key` (None when the row has no such time)."""
    seconds = row.get(seconds_key)
    return math.prod(row["shape"]) / seconds / 1e6 if seconds else None


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def wall_text(row: dict[str, Any]) -> str:
    """The row's wall seconds, with the range over its repeats when there were several."""
    low, high = row.get("wall_range", (row["wall_s"], row["wall_s"]))
    text = _fmt(row["wall_s"] or None, ".2f")
    return text if low == high else f"{text} ({low:.2f}–{high:.2f})"


def table(rows: list[dict[str, Any]], header: str, halo: Sequence[int]) -> str:
    """Markdown table of the runs under `header`."""
    lines = [header, "",
             "| run | precision | volume (z×y×x) | block | block from | computed / kept | wall s | Mvoxel/s | "
             "G Mvoxel/s | G share | peak RSS MiB |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        block = row.get("block")
        source = "–" if block is None else "given" if row["memory_gb"] is None else f"budget {row['memory_gb']:.3g} GiB"
        share = row["model_s"] / row["wall_s"] if row.get("model_s") else None
        lines.append(
            f"| {row['run']} | {row.get('precision', '–')} | {'×'.join(map(str, row['shape']))} | "
            f"{'–' if block is None else '×'.join(map(str, block))} | {source} | "
            f"{_fmt(computed_per_kept(row['shape'], block, halo, row['face']) if block else None, '.2f')} | "
            f"{wall_text(row)} | {_fmt(mvoxels_per_s(row), '.3f')} | "
            f"{_fmt(mvoxels_per_s(row, 'model_s'), '.3f')} | {_fmt(share, '.0%')} | "
            f"{_fmt(row.get('peak_rss_mib'), '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def summary(timed: dict[str, dict[str, Any]], command_row: dict[str, Any], pair: list[dict[str, Any]],
            rl_s: float) -> str:
    """The ratios the issue's acceptance asks about: against RL, default against fp32, RSS 8× / 1×."""
    fp32, default = timed["fp32"], timed["auto"]
    return (
        f"\ncycledecon / Richardson–Lucy throughput on the 1× stack: fp32 {rl_s / fp32['wall_s']:.2f}×, "
        f"default ({default['resolved']}) {rl_s / default['wall_s']:.2f}×; the command line, start-up included, "
        f"{rl_s / command_row['wall_s']:.2f}×. "
        f"Default / fp32: end to end {fp32['wall_s'] / default['wall_s']:.2f}×, "
        f"G alone {fp32['model_s'] / default['model_s']:.2f}×. "
        f"Peak RSS 8× / 1× with block {'×'.join(map(str, pair[1]['block']))} given for both: "
        f"{pair[1]['peak_rss_mib'] / pair[0]['peak_rss_mib']:.2f} (bounded memory: acceptance is within 25 %).\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs=3, type=int, default=[64, 512, 512], metavar=("Z", "Y", "X"))
    parser.add_argument("--block", nargs=3, type=int, default=None, metavar=("Z", "Y", "X"),
                        help="deconvolve.block_size for every run (default: the budget's block; the 8× "
                             "run gets the 1× run's block)")  # fmt: skip
    parser.add_argument("--memory-gb", type=float, default=None, help="deconvolve.memory_gb (default: the library's)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each 1× throughput row and of RL; the median is compared (the rest once)")
    parser.add_argument("--quick", action="store_true", help="16×128×128 and a depth-2, 4-channel G: a smoke run")
    parser.add_argument("--big", action="store_true", help="also time a generator twice as wide (default precision)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args()
    shape = (16, 128, 128) if opts.quick else tuple(opts.shape)
    generator = {**default_generator(), **(QUICK_GENERATOR if opts.quick else {})}
    halo, face = halo_voxels(generator), face_padding_voxels(generator)
    base = {"device": "cpu", "batch_size": opts.batch_size,
            **({"memory_gb": opts.memory_gb} if opts.memory_gb else {})}  # fmt: skip
    blocks = {"block_size": opts.block} if opts.block else {}

    with tempfile.TemporaryDirectory(prefix="cycledecon-bench-") as tmp:
        work = Path(tmp)
        stack, psf = synthetic_stack(shape)
        normalized, record = normalize_array(stack, VOXEL, NORMALIZATION)
        small = write_ome_zarr(normalized, work / "1x.ome.zarr", VOXEL, attrs={"normalization": record})
        del normalized
        large = write_ome_zarr(da.tile(read_ome_zarr(small)[0], (2, 2, 2)), work / "8x.ome.zarr", VOXEL,
                               attrs={"normalization": record})  # fmt: skip
        raw_tiff = write_ome_tiff(np.clip(stack, 0, 65535).round().astype(np.uint16), work / "raw.ome.tif", VOXEL)
        model = write_model(work / "model.pt", generator)
        runs = Runs(work, opts.threads, base)
        label = f"G (depth {generator['depth']}, {generator['base_channels']} ch)"
        runs.add("python + torch + cycledecon imported, nothing run", None, shape, model)
        timed = {p: runs.add(f"{label}, 1×", small, shape, model, opts.repeats, precision=p, **blocks)
                 for p in PRECISIONS}
        command_row = runs.add_command_line(
            "`cycledecon deconvolve` of the raw stack (uint16 OME-TIFF), start-up included", raw_tiff, shape, model,
            opts.repeats, precision="auto", **blocks)  # fmt: skip
        if opts.big:
            wide = {**generator, "base_channels": 2 * generator["base_channels"]}
            runs.add(f"G (depth {wide['depth']}, {wide['base_channels']} ch), 1×", small, shape,
                     write_model(work / "wide.pt", wide), precision="auto", **blocks)  # fmt: skip
        given = opts.block or timed["auto"]["block"]
        # the pair pads the faces by the whole halo, so that every block reads the same extent and only the
        # volume differs between the two
        pair = [runs.add(f"{label}, {n}× (bounded memory)", store, run_shape, model, precision="auto", block_size=given,
                         face_padding_voxels=list(halo))
                for n, store, run_shape in ((1, small, shape), (8, large, tuple(2 * n for n in shape)))]  # fmt: skip
        rl_runs = sorted(time_richardson_lucy(stack, psf, opts.threads, opts.repeats))
        rl_s = rl_runs[len(rl_runs) // 2]
        rows = [*runs.rows, {"run": f"Richardson–Lucy, {RL_ITERATIONS} iterations, true PSF {PSF_SHAPE}",
                             "shape": shape, "wall_s": rl_s, "wall_range": (rl_runs[0], rl_runs[-1])}]  # fmt: skip
        print(rows[-1], flush=True)

    header = (
        f"# Inference benchmark\n\n`{command_line('inference.py')}` on {run_stamp()}; threads {opts.threads} "
        f"(torch and RL's FFTs), CPU, batch_size {opts.batch_size}. G: {generator} with random weights, "
        f"halo {list(halo)} between blocks, face padding {list(face)} (the default). Precision `auto` is "
        "deconvolve.precision's default (what it resolved to is "
        "shown). cycledecon wall time is end to end (read, halo, G, pyramid, write) in a process that has "
        "imported cycledecon; the command-line row times `cycledecon deconvolve` from its start (imports, "
        "reading and normalizing the TIFF included). 'G Mvoxel/s' is "
        "output voxels per second spent in G's forward passes, 'G share' their part of the wall time; "
        "'computed / kept' is the voxels G computes per output voxel (halo and face padding). Peak RSS is each run's own "
        f"process. The 1× throughput rows and RL ran {opts.repeats} times each: the median, (min–max); ratios "
        "use the medians. The bounded-memory pair runs once each, with the same explicit block_size and the "
        "whole halo as face padding."
    )
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(table(rows, header, halo) + summary(timed, command_row, pair, rl_s))
    print(opts.out.read_text())


if __name__ == "__main__":
    main()

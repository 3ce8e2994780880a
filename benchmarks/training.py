"""Training throughput: the whole training step, fp32 against the default precision, for the demo
preset and the GPU preset.

    python benchmarks/training.py                     # demo preset on the CPU
    python benchmarks/training.py --device cuda       # demo and GPU presets on a CUDA GPU
    python benchmarks/training.py --presets demo gpu  # the GPU preset on the CPU too (slow)
    python benchmarks/training.py --quick             # small stacks, 1 + 2 steps: a smoke run

Presets: "demo" is config/config.yaml as it is (its demo:, normalize:, patches: and train:
sections); "gpu" merges over it the quality benchmark's "full" preset (benchmarks/quality/suite.py:
patches 32×64×64, G depth 3 × 32), the GPU training users run.

Each preset's patch store is made as the workflow makes it, by the project's own functions: demo
stacks (two widefield, two reference) from cycledecon.demo, normalized by `normalize_array`, cut by
`extract_patches` with the preset's patches: section (context margin included). It holds fewer
patches than the preset asks for: a step draws a random batch, so the store's size does not change
a step's cost. Then `cycledecon.train.train` runs on it, exactly as the train rule does, with
train.optim.steps = warm-up + timed steps and `train_step` timed on the side: both G passes, the
PSF layer at full extent (context margin), both discriminators and the optimizer steps, plus
the per-step bookkeeping (pupil projection, kernel and weight averages). Validation, the checkpoint
and the outputs come once, after the last step, and are not timed; neither is drawing the batch.

Reported per (preset, train.precision): the median step time over the timed steps, steps/s, and
patch voxels/s (batch_size × the patch's voxels, without its context margin, per second; each step
also takes as many patches of the other domain). `auto` is train.precision's default: bf16 autocast
with channels-last where the hardware runs bf16 natively, else fp32 (cycledecon.precision). Writes
benchmarks/results/training.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "quality"))

from inference import PRECISIONS  # noqa: E402
from pipeline import base_config  # noqa: E402
from provenance import command_line, run_stamp  # noqa: E402
from suite import PRESETS, deep_update, preset_settings  # noqa: E402

import cycledecon.train as training  # noqa: E402
from cycledecon.config import devices  # noqa: E402
from cycledecon.config.demo import DemoSettings, parse_demo_config  # noqa: E402
from cycledecon.config.patches import parse_patch_config  # noqa: E402
from cycledecon.demo import reference_stack, sample_rng, true_psf, widefield_stack  # noqa: E402
from cycledecon.io import write_ome_zarr  # noqa: E402
from cycledecon.model.cyclegan import Faces  # noqa: E402
from cycledecon.normalize import normalize_array  # noqa: E402
from cycledecon.patches import SampleInput, context_voxels, extract_patches  # noqa: E402
from cycledecon.precision import resolve_precision  # noqa: E402
from cycledecon.train_state import TrainingState  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "training.md"
#: The demo campaign's sample names and roles, two per domain (one of each held out for validation).
SAMPLES = (("wf_01", "widefield"), ("wf_02", "widefield"), ("ref_01", "reference"), ("ref_02", "reference"))
#: Patches in the benchmark's store (full run, --quick).
STORE_PATCHES = {"n_train": 16, "n_val": 4}
QUICK_STORE_PATCHES = {"n_train": 8, "n_val": 2}
OPTICS_KEYS = ("na", "wavelength_nm", "immersion_ri")
MIB = 2**20


class StepTimer:
    """Stands in for `cycledecon.train.train_step`: calls it and keeps each call's wall seconds,
    synchronizing a CUDA device first and after so that a step's GPU work is inside its time."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.step = training.train_step
        self.seconds: list[float] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, run: TrainingState, y: torch.Tensor, x: torch.Tensor,
                 faces: Faces | None = None) -> dict[str, float]:
        self._sync()
        start = time.perf_counter()
        terms = self.step(run, y, x, faces)
        self._sync()
        self.seconds.append(time.perf_counter() - start)
        return terms


def preset_config(name: str) -> dict[str, Any]:
    """The workflow config of a preset: config/config.yaml, with the quality benchmark's "full"
    preset merged over it for "gpu"."""
    config = base_config()
    return config if name == "demo" else deep_update(config, preset_settings(PRESETS["full"]))


def normalized_sample(
    name: str, role: str, settings: DemoSettings, psf: np.ndarray, normalize: dict[str, Any], work: Path
) -> SampleInput:
    """One demo stack, as the demo rule makes it, normalized as the normalize rule does, in an OME-Zarr."""
    rng = sample_rng(settings.seed, name)
    stack = widefield_stack(settings, psf, rng)[0] if role == "widefield" else reference_stack(settings, rng)
    data, record = normalize_array(stack, settings.voxel_size, normalize)
    path = write_ome_zarr(data, work / f"{name}.ome.zarr", settings.voxel_size, attrs={"normalization": record})
    return SampleInput(name=name, role=role, path=path)


def patch_store(config: dict[str, Any], work: Path, quick: bool) -> Path:
    """A patch store of the preset's patches (see the module docstring); with `quick`, from stacks
    twice a patch's width and as deep as the PSF, which the references' widefield image needs."""
    demo = dict(config["demo"])
    if quick:
        z, y, x = config["patches"]["shape"]
        demo["shape"] = [max(z, demo["psf_shape"][0]), 2 * y, 2 * x]
    settings = parse_demo_config(demo)
    psf = true_psf(settings)
    samples = [normalized_sample(name, role, settings, psf, config["normalize"], work) for name, role in SAMPLES]
    patches = {**config["patches"], **(QUICK_STORE_PATCHES if quick else STORE_PATCHES)}
    optics = {key: float(config["demo"]["optics"][key]) for key in OPTICS_KEYS}
    return extract_patches(samples, work / "patches" / "patches.zarr", work / "patches" / "manifest.csv", patches, "bench", optics)


def time_training(
    store: Path, train_config: dict[str, Any], steps: int, warmup: int, device: str, out_dir: Path
) -> dict[str, Any]:
    """`cycledecon.train.train` for warmup + steps steps: the seconds of each timed step and, on CUDA,
    the peak GPU memory allocated."""
    total = warmup + steps
    config = deep_update(train_config, {"optim": {"steps": total}, "log_every": total, "val_every": total,
                                        "checkpoint_every": total, "device": device})  # fmt: skip
    timer = StepTimer(torch.device(device))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with mock.patch.object(training, "train_step", timer):
        training.train(store, out_dir, config)
    peak = torch.cuda.max_memory_allocated() / MIB if device == "cuda" else None
    return {"seconds": timer.seconds[warmup:], "peak_gpu_mib": peak}


def run_preset(name: str, opts: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Every requested precision of one preset on one patch store: a row each."""
    config = preset_config(name)
    if opts.batch_size:
        config = deep_update(config, {"train": {"optim": {"batch_size": opts.batch_size}}})
    store = patch_store(config, work / name, opts.quick)
    patch = parse_patch_config(config["patches"])
    margin = context_voxels(patch, parse_demo_config(config["demo"]).voxel_size)
    rows = []
    for precision in opts.precisions:
        train_config = deep_update(config["train"], {"precision": precision})
        result = time_training(store, train_config, opts.steps, opts.warmup, opts.device,
                               work / name / f"train_{precision}")  # fmt: skip
        resolved = resolve_precision(precision, torch.device(opts.device)).name
        rows.append({"preset": name, "precision": precision if precision == resolved else f"{precision} → {resolved}",
                     "requested": precision, "patch": patch.shape, "margin": margin,
                     "batch": train_config["optim"]["batch_size"], "generator": train_config["generator"],
                     **result})  # fmt: skip
        print({k: v for k, v in rows[-1].items() if k != "seconds"}, f"median {statistics.median(result['seconds']):.3f} s",
              flush=True)  # fmt: skip
    return rows


def _shape(values: Any) -> str:
    return "×".join(map(str, values))


def table(rows: list[dict[str, Any]], header: str) -> str:
    """Markdown table of the runs, each preset's speed-up against its fp32 row."""
    fp32 = {row["preset"]: statistics.median(row["seconds"]) for row in rows if row["requested"] == "fp32"}
    lines = [header, "",
             "| preset | precision | patch (+ context) | batch | G | step s, median (min–max) | steps/s | "
             "patch Mvoxel/s | × fp32 | peak GPU MiB |",
             "|---|---|---|---:|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        median = statistics.median(row["seconds"])
        window = [p + 2 * m for p, m in zip(row["patch"], row["margin"])]
        voxels = row["batch"] * row["patch"][0] * row["patch"][1] * row["patch"][2]
        speedup = f"{fp32[row['preset']] / median:.2f}" if row["preset"] in fp32 else "–"
        peak = "–" if row["peak_gpu_mib"] is None else f"{row['peak_gpu_mib']:.0f}"
        g = row["generator"]
        lines.append(
            f"| {row['preset']} | {row['precision']} | {_shape(row['patch'])} ({_shape(window)}) | {row['batch']} | "
            f"depth {g['depth']} × {g['base_channels']} | {median:.3f} ({min(row['seconds']):.3f}–"
            f"{max(row['seconds']):.3f}) | {1 / median:.2f} | {voxels / median / 1e6:.3f} | {speedup} | {peak} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--presets", nargs="+", choices=("demo", "gpu"), default=None,
                        help="default: demo on the CPU, demo and gpu on CUDA")  # fmt: skip
    parser.add_argument("--precisions", nargs="+", choices=devices.PRECISIONS, default=list(PRECISIONS),
                        help="train.precision values (default: fp32 and the default, auto)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=None, help="train.optim.batch_size (default: the preset's)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="small stacks, 1 warm-up and 2 timed steps: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args()
    if opts.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                     "run on a GPU machine, or use --device cpu")  # fmt: skip
    if opts.quick:
        opts.steps, opts.warmup = 2, 1
    if opts.steps < 1 or opts.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    opts.presets = opts.presets or (["demo", "gpu"] if opts.device == "cuda" else ["demo"])
    if "gpu" in opts.presets and opts.device == "cpu":
        print("the gpu preset on the CPU: expect slow steps", flush=True)
    torch.set_num_threads(opts.threads)

    with tempfile.TemporaryDirectory(prefix="cycledecon-train-bench-") as tmp:
        rows = [row for name in opts.presets for row in run_preset(name, opts, Path(tmp))]
    header = (
        f"# Training benchmark\n\n`{command_line('training.py')}` on {run_stamp(opts.device)}; device "
        f"{opts.device}, torch threads {opts.threads}. Per row: `cycledecon.train.train` on a synthetic demo "
        f"patch store, {opts.warmup} warm-up steps then {opts.steps} timed calls of `train_step` (both G passes, "
        "the PSF layer at full extent, both discriminators, optimizer steps). 'patch Mvoxel/s' counts "
        "batch × patch voxels (without the context margin) per second; '× fp32' is the step's speed-up over "
        "the preset's fp32 row. `auto` is train.precision's default (what it resolved to is shown)."
    )
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(table(rows, header))
    print(opts.out.read_text())


if __name__ == "__main__":
    main()

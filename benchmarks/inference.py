"""Inference throughput and memory: cycledecon's blockwise generator vs. Richardson–Lucy, one run.

    python benchmarks/inference.py                  # 64×512×512 (several minutes on 2 cores)
    python benchmarks/inference.py --quick          # 16×128×128, blocks of 16×64×64: a smoke run
    python benchmarks/inference.py --shape 32 256 256 --block 32 128 128 --big

One synthetic widefield stack (mixed phantom ⊛ the true widefield PSF, Poisson and read noise) is
made in this process. Each cycledecon run is `deconvolve_file` on the stack's normalized OME-Zarr
in a fresh subprocess under `/usr/bin/time`, so its peak RSS includes nothing from other runs; its
wall time is end to end (zarr reads, pyramid and writes included), and the share spent in G's
forward passes is reported. The same run is repeated on a stack 8× larger (the
stack tiled 2× per axis) with the same block size: bounded memory means similar peak RSS.
Richardson–Lucy is `cycledecon.baselines.richardson_lucy` (scikit-image's, with offset handling),
20 iterations with the true PSF, in this process, its FFTs given the same thread count.
Models have random weights: speed and memory do not depend on training.
Writes benchmarks/results/inference.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import scipy.fft
import torch
from scipy.signal import fftconvolve

from cycledecon.baselines import richardson_lucy
from cycledecon.infer import InferenceConfig
from cycledecon.io import read_ome_zarr, write_ome_zarr
from cycledecon.model import UNet3d, receptive_field, save_model
from cycledecon.normalize import normalize_array
from cycledecon.phantoms import mixed_phantom
from cycledecon.psf import widefield_psf
from cycledecon.voxel import VoxelSize

RESULTS = Path(__file__).parent / "results" / "inference.md"
VOXEL = VoxelSize(0.25, 0.1, 0.1)
OPTICS = {"na": 1.4, "wavelength_nm": 520, "immersion_ri": 1.515}
PSF_SHAPE = (33, 65, 65)
NORMALIZATION = {"method": "percentile", "percentiles": [0.1, 99.9], "clip": True}
RL_ITERATIONS = 20
MODELS = {"demo": {"depth": 2, "base_channels": 8}, "big": {"depth": 3, "base_channels": 16}}

#: Runs in a fresh interpreter: one deconvolve_file call, timing G's forward passes on the side.
CHILD = """
import json, sys, time
import cycledecon.infer as infer
args = json.loads(sys.argv[1])
forward = infer.BlockPredictor.__call__
model_s = 0.0
def timed(self, blocks):
    global model_s
    start = time.perf_counter()
    out = forward(self, blocks)
    model_s += time.perf_counter() - start
    return out
infer.BlockPredictor.__call__ = timed
start = time.perf_counter()
if args["input"] is not None:
    infer.deconvolve_file(args["input"], args["model"], args["output"], args["config"],
                          threads=args["threads"], progress=False)
print(json.dumps({"wall_s": time.perf_counter() - start, "model_s": model_s}))
"""


def synthetic_stack(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy widefield stack in photons + offset, true PSF): the demo campaign's recipe."""
    rng = np.random.default_rng(seed)
    psf = widefield_psf(PSF_SHAPE, VOXEL, **OPTICS)
    sharp = mixed_phantom(shape, VOXEL, rng, {"filaments": 1.0, "puncta": 0.5, "blobs": 0.15})
    blurred = np.clip(fftconvolve(sharp, psf, mode="same"), 0, None)
    photons = rng.poisson(300 * blurred / blurred.max()) + rng.normal(100.0, 2.0, shape)
    return photons.astype(np.float32), psf


def write_model(path: Path, generator_config: dict[str, int]) -> Path:
    torch.manual_seed(0)
    metadata = {
        "generator": generator_config, "receptive_field": list(receptive_field(generator_config)),
        "patch_shape": [16, 32, 32], "channels": 1, "normalization": NORMALIZATION,
        "voxel_size": list(VOXEL.as_tuple()), "config": {"generator": generator_config},
    }  # fmt: skip
    return save_model(path, UNet3d(generator_config).eval(), metadata, learned_psf=None)


def run_child(args: dict[str, Any], work: Path) -> dict[str, float]:
    """Run CHILD in a fresh process under /usr/bin/time: its timings plus its own peak RSS in MiB.

    /usr/bin/time is a small process that forks the child: rusage taken from this (large) process
    would count the pages the child shared with it between fork and exec.
    """
    rss_file = work / "rss.txt"
    command = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), sys.executable, "-c", CHILD, json.dumps(args)]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    peak_kib = int(rss_file.read_text().split()[-1])
    return {**json.loads(output.strip().splitlines()[-1]), "peak_rss_mib": peak_kib / 1024}


def time_richardson_lucy(stack: np.ndarray, psf: np.ndarray, threads: int) -> float:
    start = time.perf_counter()
    with scipy.fft.set_workers(threads):
        richardson_lucy(stack, psf, iterations=RL_ITERATIONS)
    return time.perf_counter() - start


def table(rows: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| run | volume (z×y×x) | wall s | Mvoxel/s | G share | peak RSS MiB |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        voxels = int(np.prod(row["shape"]))
        share = f"{row['model_s'] / row['wall_s']:.0%}" if row.get("model_s") else "–"
        rss = f"{row['peak_rss_mib']:.0f}" if row.get("peak_rss_mib") else "–"
        speed = f"{voxels / row['wall_s'] / 1e6:.3f}" if row["wall_s"] else "–"
        wall = f"{row['wall_s']:.1f}" if row["wall_s"] else "–"
        lines.append(f"| {row['run']} | {'×'.join(map(str, row['shape']))} | {wall} | {speed} | {share} | {rss} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs=3, type=int, default=[64, 512, 512], metavar=("Z", "Y", "X"))
    parser.add_argument("--block", nargs=3, type=int, default=None, metavar=("Z", "Y", "X"),
                        help="deconvolve.block_size (default: the library's)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="16×128×128 with 16×64×64 blocks")
    parser.add_argument("--big", action="store_true", help="also time a depth-3, 16-channel generator")
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args()
    shape = (16, 128, 128) if opts.quick else tuple(opts.shape)
    block = [16, 64, 64] if opts.quick and opts.block is None else opts.block
    config = {"device": "cpu", "batch_size": opts.batch_size, **({"block_size": block} if block else {})}

    with tempfile.TemporaryDirectory(prefix="cycledecon-bench-") as tmp:
        work = Path(tmp)
        stack, psf = synthetic_stack(shape)
        normalized, record = normalize_array(stack, VOXEL, NORMALIZATION)
        small = write_ome_zarr(normalized, work / "1x.ome.zarr", VOXEL, attrs={"normalization": record})
        del normalized
        large = write_ome_zarr(da.tile(read_ome_zarr(small)[0], (2, 2, 2)), work / "8x.ome.zarr", VOXEL,
                               attrs={"normalization": record})  # fmt: skip
        runs = [("python + torch + cycledecon imported, nothing run", None, "demo", shape),
                ("cycledecon G (depth 2, 8 ch), 1×", small, "demo", shape),
                ("cycledecon G (depth 2, 8 ch), 8×", large, "demo", tuple(2 * n for n in shape))]  # fmt: skip
        if opts.big:
            runs.append(("cycledecon G (depth 3, 16 ch), 1×", small, "big", shape))
        rows = []
        for name, store, model, run_shape in runs:
            model_path = work / f"{model}.pt"
            if not model_path.exists():
                write_model(model_path, MODELS[model])
            args = {"input": None if store is None else str(store), "model": str(model_path),
                    "output": str(work / "out.ome.zarr"), "config": config, "threads": opts.threads}  # fmt: skip
            result = run_child(args, work)
            if store is None:
                result["wall_s"] = 0.0
            rows.append({"run": name, "shape": run_shape, **result})
            print(rows[-1], flush=True)
        rl_s = time_richardson_lucy(stack, psf, opts.threads)
        rows.append({"run": f"Richardson–Lucy, {RL_ITERATIONS} iterations, true PSF {PSF_SHAPE}",
                     "shape": shape, "wall_s": rl_s})  # fmt: skip
        print(rows[-1], flush=True)

    demo_1x, demo_8x = rows[1], rows[2]
    header = (
        f"# Inference benchmark\n\n`python benchmarks/inference.py {' '.join(sys.argv[1:])}` on "
        f"{platform.processor() or platform.machine()}, {opts.threads} threads (torch and RL's FFTs), "
        f"CPU, block_size {block or list(InferenceConfig().block_size)}, batch_size {opts.batch_size}. "
        "cycledecon wall time is end to end (read, halo, G, pyramid, write); "
        "'G share' is the part spent in G's forward passes. Peak RSS is each run's own process."
    )
    summary = (
        f"\ncycledecon (demo model) / Richardson–Lucy throughput: "
        f"{rl_s / demo_1x['wall_s']:.2f}× on the 1× stack. "
        f"Peak RSS 8× / 1×: {demo_8x['peak_rss_mib'] / demo_1x['peak_rss_mib']:.2f} "
        "(bounded memory: acceptance is within 25 %).\n"
    )
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(table(rows, header) + summary)
    print(opts.out.read_text())


if __name__ == "__main__":
    main()

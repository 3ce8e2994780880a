"""Peak memory of inference against `cycledecon.deconvolve.block_peak_bytes`, the estimate that chooses
the block size from deconvolve.memory_gb.

    python benchmarks/inference_memory.py            # the default generator; minutes on 2 cores
    python benchmarks/inference_memory.py --quick    # a depth-2, 2-channel G on tiny blocks: a smoke run

Every measurement runs in a fresh interpreter: its peak RSS (``ru_maxrss``) minus the high-water
mark after the imports. "G alone" is one forward pass of a randomly initialized G (config.yaml's
train.generator) on one halo'd block, in fp32 and in bf16 (autocast with channels-last, as
inference runs it). "deconvolve" is `deconvolve_file` on a normalized OME-Zarr with a block chosen
for the budget (reading, halo, G, pyramid and writing): its estimate adds the pipeline's buffers.
The estimate should bound every measurement with a modest margin (estimate / measured a little
above 1). Speed is not measured here (benchmarks/inference.py). Writes
benchmarks/results/inference_memory.md.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cycledecon.deconvolve import FIXED_BYTES, activation_bytes_per_voxel, block_peak_bytes, halo_voxels, largest_read
from cycledecon.io import read_ome_zarr, write_ome_zarr
from cycledecon.model import UNet3d, receptive_field, save_model
from cycledecon.voxel import VoxelSize

from provenance import command_line, run_stamp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "inference_memory.md"
VOXEL = VoxelSize(0.25, 0.1, 0.1)
NORMALIZATION = {"method": "percentile", "percentiles": [0.1, 99.9], "clip": True}
MIB = 2**20

#: (G alone: output blocks whose halo'd blocks are measured; deconvolve: (volume, memory_gb) pairs).
FULL = {
    "forward": [(16, 16, 16), (64, 128, 128), (64, 256, 256)],
    "deconvolve": [((64, 128, 128), 16.0), ((64, 256, 256), 16.0), ((64, 256, 512), 4.0)],
}
QUICK = {"forward": [(8, 8, 8), (16, 32, 32)], "deconvolve": [((16, 32, 32), 1.0)]}

#: One measurement in a fresh interpreter; prints the RSS high-water marks (bytes) as JSON.
CHILD = """
import json, resource, sys
import torch
from cycledecon.deconvolve import deconvolve_file
from cycledecon.model import UNet3d
from cycledecon.precision import Precision
def high_water():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
base = high_water()
if args["kind"] == "forward":
    precision = Precision(bf16=args["bf16"])
    generator = precision.prepare(UNet3d(args["generator"]).eval())
    with torch.inference_mode(), precision.autocast(torch.device("cpu")):
        generator(precision.layout(torch.rand(1, 1, *args["shape"])))
else:
    deconvolve_file(args["input"], args["model"], args["output"], args["config"], progress=False)
print(json.dumps({"base": base, "peak": high_water()}))
"""


def run_child(args: dict[str, Any]) -> dict[str, float]:
    """Peak RSS above the post-import baseline (bytes) of one measurement, and that baseline."""
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    marks = json.loads(result.stdout.strip().splitlines()[-1])
    return {"baseline": marks["base"], "measured": marks["peak"] - marks["base"]}


def forward_rows(generator: dict[str, Any], blocks: list[tuple[int, ...]], threads: int) -> list[dict[str, Any]]:
    """G alone on each block plus its halo, fp32 and bf16, against FIXED_BYTES + activations."""
    halo = halo_voxels(generator)
    rows = []
    for block in blocks:
        shape = [b + 2 * h for b, h in zip(block, halo)]
        for bf16 in (False, True):
            marks = run_child({"kind": "forward", "generator": generator, "shape": shape, "bf16": bf16,
                               "threads": threads})  # fmt: skip
            estimate = FIXED_BYTES + math.prod(shape) * activation_bytes_per_voxel(generator, bf16)
            rows.append({"run": "G alone", "precision": "bf16" if bf16 else "fp32", "volume": "–", "block": block,
                         "halod": shape, "estimate": estimate, **marks})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def deconvolve_rows(
    generator: dict[str, Any], cases: list[tuple[tuple[int, ...], float]], threads: int, work: Path
) -> list[dict[str, Any]]:
    """`deconvolve_file` with the block chosen for each budget, fp32 and bf16, against block_peak_bytes."""
    model = write_model(work / "model.pt", generator)
    rows = []
    for number, (volume, memory_gb) in enumerate(cases):
        rng = np.random.default_rng(number)
        stack = write_ome_zarr(rng.random(volume, dtype=np.float32), work / f"in{number}.ome.zarr", VOXEL,
                               attrs={"normalization": NORMALIZATION})  # fmt: skip
        for precision in ("fp32", "bf16"):
            output = work / f"out{number}{precision}.ome.zarr"
            config = {"memory_gb": memory_gb, "precision": precision, "device": "cpu", "threads": threads}
            marks = run_child({"kind": "deconvolve", "input": str(stack), "model": str(model),
                               "output": str(output), "config": config, "threads": threads})  # fmt: skip
            block = read_ome_zarr(output)[2]["deconvolution"]["block_size"]
            estimate = block_peak_bytes(block, volume, generator, precision == "bf16")
            halod = largest_read(block, volume, generator)
            rows.append({"run": f"deconvolve, memory_gb {memory_gb:g}", "precision": precision, "volume": volume,
                         "block": block, "halod": halod, "estimate": estimate, **marks})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def write_model(path: Path, generator: dict[str, Any]) -> Path:
    """A model.pt with random weights: memory does not depend on training."""
    metadata = {"generator": generator, "receptive_field": list(receptive_field(generator)),
                "patch_shape": [16, 64, 64], "channels": 1, "normalization": NORMALIZATION,
                "voxel_size": list(VOXEL.as_tuple())}  # fmt: skip
    return save_model(path, UNet3d(generator), metadata, learned_psf=None)


def table(rows: list[dict[str, Any]], header: str) -> str:
    """Markdown table of the measurements."""
    shape = lambda s: "×".join(map(str, s)) if isinstance(s, (list, tuple)) else s  # noqa: E731
    lines = [header, "",
             "| run | precision | volume | block | G's input | Mvoxel | measured MiB | bytes/voxel | "
             "estimate MiB | estimate / measured |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        voxels = math.prod(row["halod"])
        lines.append(
            f"| {row['run']} | {row['precision']} | {shape(row['volume'])} | {shape(row['block'])} | "
            f"{shape(row['halod'])} | {voxels / 1e6:.1f} | {row['measured'] / MIB:.0f} | "
            f"{row['measured'] / voxels:.0f} | {row['estimate'] / MIB:.0f} | {row['estimate'] / row['measured']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny G on tiny blocks: a smoke run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args()
    if opts.quick:
        generator, cases = {"depth": 2, "base_channels": 2}, QUICK
    else:
        generator, cases = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["train"]["generator"], FULL
    with tempfile.TemporaryDirectory(prefix="cycledecon-memory-") as tmp:
        rows = forward_rows(generator, cases["forward"], opts.threads)
        rows += deconvolve_rows(generator, cases["deconvolve"], opts.threads, Path(tmp))
    baseline = max(row["baseline"] for row in rows) / MIB
    header = (
        f"# Inference memory\n\n`{command_line('inference_memory.py')}` on {run_stamp()}; CPU, "
        f"{opts.threads} threads; generator {generator} "
        f"(halo {list(halo_voxels(generator))}). 'measured' is peak RSS above the process's RSS after its imports "
        f"(at most {baseline:.0f} MiB); 'estimate' is what cycledecon.deconvolve expects: G alone "
        "FIXED_BYTES + halo'd voxels × activation_bytes_per_voxel, deconvolve block_peak_bytes (buffers included). "
        "'G's input' is the largest volume G gets: the block plus its halo (G alone), or the largest region a "
        "block reads, halo clipped to the face padding (deconvolve, `cycledecon.deconvolve.largest_read`)."
    )
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(table(rows, header))
    print(opts.out.read_text())


if __name__ == "__main__":
    main()

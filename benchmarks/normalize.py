"""Time and memory of CLAHE normalization of a 64×512×512 stack, whole volume vs. in blocks.

Run each step in its own process so that `/usr/bin/time -v` reports its own peak memory:

    python benchmarks/normalize.py prepare            # synthetic stack → benchmarks/work/raw.ome.zarr
    /usr/bin/time -v python benchmarks/normalize.py whole
    /usr/bin/time -v python benchmarks/normalize.py blocks
    python benchmarks/normalize.py compare            # max |whole − blocks|

`whole` uses the default chunk_voxels (2**24 = 64·512·512, so the volume is one block); `blocks`
sets chunk_voxels to 2**21, giving blocks of at most 2M voxels, halo included.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from cycledecon.io import read_ome_zarr, write_ome_zarr
from cycledecon.normalize import normalize
from cycledecon.voxel import VoxelSize

WORK = Path(__file__).parent / "work" / "normalize"
SHAPE = (64, 512, 512)
VOXEL = VoxelSize(0.25, 0.1, 0.1)
CONFIG = {"method": "clahe", "clahe": {"kernel_um": [2.0, 3.2, 3.2], "clip_limit": 0.01, "nbins": 256}}
BLOCK_VOXELS = 2**21


def synthetic_stack(seed: int = 0) -> np.ndarray:
    """Blurred point-like and bright blob structures on an offset, with shot and read noise (uint16)."""
    rng = np.random.default_rng(seed)
    objects = np.zeros(SHAPE, np.float32)
    for count, brightness in ((4000, 50.0), (60, 2000.0)):
        points = tuple(rng.integers(0, n, count) for n in SHAPE)
        objects[points] += brightness
    blurred = gaussian_filter(objects, sigma=(3.0, 4.0, 4.0)) * 400.0
    noisy = rng.poisson(blurred + 5.0) + rng.normal(100.0, 2.0, SHAPE)
    return np.clip(noisy, 0, 65535).astype(np.uint16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "whole", "blocks", "compare"])
    step = parser.parse_args().step
    raw = WORK / "raw.ome.zarr"
    start = time.perf_counter()
    if step == "prepare":
        write_ome_zarr(synthetic_stack(), raw, VOXEL)
    elif step == "whole":
        normalize(raw, WORK / "whole.ome.zarr", CONFIG)
    elif step == "blocks":
        normalize(raw, WORK / "blocks.ome.zarr", {**CONFIG, "chunk_voxels": BLOCK_VOXELS})
    else:
        (whole, _, a), (blocks, _, b) = read_ome_zarr(WORK / "whole.ome.zarr"), read_ome_zarr(WORK / "blocks.ome.zarr")
        print("whole:", a["normalization"]["applied"])
        print("blocks:", b["normalization"]["applied"])
        print("max |whole - blocks|:", float(abs(whole - blocks).max().compute()))
    print(f"{step}: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

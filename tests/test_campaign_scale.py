"""Campaign scale: a sheet of many stacks in several campaigns and channels plans the expected jobs,
and adding one stack reschedules only its campaign (whose model retrains on all of its stacks)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np

from helpers import make_workdir, run_snakemake, write_ome

# Stage depth of each rule's outputs; faked outputs get increasing mtimes in this order.
DEPTH = {"ingest": 1, "normalize": 2, "patches": 3, "train": 4, "deconvolve": 5, "baselines": 5,
         "figures": 6, "evaluate": 6, "summary": 7}  # fmt: skip
OPTICS = "1.4\t520\t1.515"


def campaign_sheet(raw: Path, n_two_channel: int = 20, n_single: int = 16) -> str:
    """Two campaigns share two-channel files (channel 0 and 1), a third has single-channel files."""
    rows = ["sample\tpath\trole\tcampaign\tchannel\tna\twavelength_nm\timmersion_ri"]
    for i in range(n_two_channel):
        path = raw / f"two_{i:02d}.ome.tif"
        rows += [f"dapi_{i:02d}\t{path}\twidefield\tlab_a_dapi\t0\t{OPTICS}", f"gfp_{i:02d}\t{path}\twidefield\tlab_a_gfp\t1\t{OPTICS}"]
    rows += [f"b_{i:02d}\t{raw / f'one_{i:02d}.ome.tif'}\twidefield\tlab_b\t\t{OPTICS}" for i in range(n_single)]
    for campaign in ("lab_a_dapi", "lab_a_gfp", "lab_b"):
        rows += [f"{campaign}_ref_{i}\t{raw / 'ref.ome.tif'}\treference\t{campaign}\t\t\t\t" for i in range(2)]
    return "\n".join(rows) + "\n"


def write_raw_files(raw: Path, rng: np.random.Generator) -> None:
    raw.mkdir()
    for i in range(20):
        write_ome(raw / f"two_{i:02d}.ome.tif", rng.integers(0, 99, (2, 4, 8, 8), dtype=np.uint16), axes="CZYX")
    for name in [f"one_{i:02d}" for i in range(16)] + ["ref"]:
        write_ome(raw / f"{name}.ome.tif", rng.integers(0, 99, (4, 8, 8), dtype=np.uint16))


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def fake_outputs(work: Path, summary: str) -> None:
    """Create every planned output, newer than its inputs, as if the workflow had run."""
    now = time.time()
    for line in summary.splitlines()[1:]:
        path, _, rule = line.split("\t")[:3]
        if rule not in DEPTH:
            continue
        target = work / path
        if path.endswith(".zarr"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        os.utime(target, (now + DEPTH[rule], now + DEPTH[rule]))


def test_many_stacks_plan_and_incremental_addition(tmp_path, rng):
    raw = tmp_path / "raw"
    write_raw_files(raw, rng)
    sheet = campaign_sheet(raw)
    work = make_workdir(tmp_path, sheet=sheet)

    began = time.monotonic()
    planned = run_snakemake(work, "-n")
    print(f"dry run of {sheet.count(chr(10)) - 1} stacks: {time.monotonic() - began:.1f} s")
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    n_widefield = 20 + 20 + 16
    assert job_counts(planned.stdout) == {
        "ingest": n_widefield + 6, "normalize": n_widefield + 6, "patches": 3, "train": 3,
        "deconvolve": n_widefield, "baselines": 2 * n_widefield, "figures": n_widefield,
        "evaluate": 3, "summary": 1, "all": 1,
    }  # fmt: skip

    summary = run_snakemake(work, "--summary")
    assert summary.returncode == 0, summary.stderr[-2000:]
    fake_outputs(work, summary.stdout)
    assert "Nothing to be done" in run_snakemake(work, "-n").stdout

    new = raw / "one_new.ome.tif"
    write_ome(new, rng.integers(0, 99, (4, 8, 8), dtype=np.uint16))
    (work / "config" / "samples.tsv").write_text(sheet + f"b_new\t{new}\twidefield\tlab_b\t\t{OPTICS}\n")
    again = run_snakemake(work, "-n")
    assert again.returncode == 0, again.stdout[-3000:]
    # Only campaign lab_b is touched: the new stack's own jobs, its campaign's patches and model, and,
    # since the model changed, every lab_b deconvolution, learned-PSF baseline, figure and metric.
    assert job_counts(again.stdout) == {
        "ingest": 1, "normalize": 1, "patches": 1, "train": 1, "deconvolve": 17,
        "baselines": 17 + 1, "figures": 17, "evaluate": 1, "summary": 1, "all": 1,
    }  # fmt: skip
    assert "lab_a" not in "".join(line for line in again.stdout.splitlines() if line.strip().startswith("wildcards:"))

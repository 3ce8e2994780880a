"""The real workflow (tiny demo config) through `--profile profiles/slurm` on the one-node cluster."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from cluster import SlurmCluster, run_snakemake_on_slurm, sbatch_calls
from helpers import REPO, make_workdir, run_snakemake

GPU_RULES = {"train", "deconvolve"}
# One stack per domain keeps the run short: every job pays SLURM's queueing and status polling.
SHEET = (REPO / "config" / "samples.tsv").read_text().splitlines()
SMALL_SHEET = "\n".join(line for line in SHEET if line.split("\t")[0] in ("sample", "wf_01", "ref_01")) + "\n"
CLUSTER_RULES = {"demo", "ingest", "normalize", "patches", "baselines", "figures", "evaluate"} | GPU_RULES
# This test is about job placement, not patch selection: a lone tiny reference's validation slab is
# only one patch high, and whether it holds enough foreground depends on the phantom's draw.
ANY_PATCH = {"patches": {"min_foreground_fraction": 0.0}}


@pytest.mark.slurm
def test_workflow_runs_as_slurm_jobs_with_gpu_rules_on_gpus(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    work = make_workdir(tmp_path, ANY_PATCH, sheet=SMALL_SHEET)
    began = time.monotonic()
    result = run_snakemake_on_slurm(work, work / "Snakefile", timeout=900)
    print(f"workflow through SLURM took {time.monotonic() - began:.0f} s")
    assert result.returncode == 0, result.stdout[-6000:] + "\n" + slurm_cluster.log_tails()

    calls = sbatch_calls(result.stdout)
    assert set(calls) == CLUSTER_RULES, f"rules submitted: {sorted(calls)}"
    for rule, call in calls.items():
        assert (" --gpus=1" in call) == (rule in GPU_RULES), f"{rule}: {call.split(' --wrap=')[0]}"
    print("train sbatch call:", calls["train"].split(" --wrap=")[0])
    for rule in CLUSTER_RULES:
        assert any((work / ".snakemake" / "slurm_logs" / f"rule_{rule}").glob("**/*.log")), rule

    # Outputs are those of a local run: a local dry run over the same directory finds nothing to do.
    local = run_snakemake(work, "-n")
    assert local.returncode == 0 and "Nothing to be done" in local.stdout + local.stderr, local.stdout[-3000:]
    metrics = pd.read_csv(work / "results" / "metrics" / "demo.csv")
    assert len(metrics) == 4  # one widefield sample × raw, two RL baselines, cycledecon

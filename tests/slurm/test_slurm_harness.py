"""Tests of the SLURM test harness itself, with a two-rule Snakefile instead of the workflow.

They show that the profile's placement reaches SLURM: each rule runs as its own SLURM job, the GPU
rule is submitted with ``--gpus=1`` and sees the GPU SLURM gave it, and teardown leaves nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cluster import (
    MARKER,
    PARTITION,
    SLURM_PROFILE,
    REPO,
    SlurmCluster,
    pid_alive,
    run_snakemake_on_slurm,
    sbatch_calls,
    write_test_profile,
)

# Each job records its SLURM job id and the GPUs it may use; `all` stays on the submit host.
SNAKEFILE = """
localrules: all

rule all:
    input: "gpu.txt"

rule cpu_step:
    output: "cpu.txt"
    shell: "echo $SLURM_JOB_ID ${{CUDA_VISIBLE_DEVICES:-unset}} > {output}"

rule gpu_step:
    input: "cpu.txt"
    output: "gpu.txt"
    shell: "echo $SLURM_JOB_ID ${{CUDA_VISIBLE_DEVICES:-unset}} > {output}"
"""


def _write_snakefile(workdir: Path) -> Path:
    snakefile = workdir / "Snakefile"
    snakefile.write_text(SNAKEFILE)
    return snakefile


def test_user_profile_dry_run_needs_no_cluster(tmp_path: Path) -> None:
    """profiles/slurm parses, and a dry run with it works on a machine without SLURM."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--profile",
            str(REPO / "profiles" / "slurm"),
            "--snakefile",
            str(_write_snakefile(tmp_path)),
            "--directory",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_profile_keeps_gpu_placement_and_fits_the_node(tmp_path: Path) -> None:
    """The derived test profile keeps which rules get a GPU but drops site-specific settings."""
    real = yaml.safe_load(SLURM_PROFILE.read_text())
    test = yaml.safe_load((write_test_profile(tmp_path) / "profile.yaml").read_text())
    assert "software-deployment-method" not in test
    assert test["slurm-status-command"] == "squeue"
    assert test["default-resources"]["slurm_partition"] == PARTITION
    for rule, resources in real["set-resources"].items():
        assert bool(test["set-resources"][rule].get("gpu")) == bool(resources.get("gpu")), rule
        assert "slurm_partition" not in test["set-resources"][rule]
    assert real["set-resources"]["train"]["gpu"] == 1
    assert real["set-resources"]["deconvolve"]["gpu"] == 1


@pytest.mark.slurm
def test_rules_run_as_slurm_jobs_and_gpu_rule_gets_a_gpu(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """Both rules become SLURM jobs; only gpu_step is submitted with --gpus=1 and sees a GPU."""
    profile = write_test_profile(tmp_path / "profile", set_resources={"gpu_step": {"gpu": 1}})
    began = time.monotonic()
    result = run_snakemake_on_slurm(
        tmp_path, _write_snakefile(tmp_path), timeout=300, profile=profile
    )
    print(f"harness workflow ran in {time.monotonic() - began:.1f} s")
    assert result.returncode == 0, result.stdout + "\n" + slurm_cluster.log_tails()

    calls = sbatch_calls(result.stdout)
    print("gpu_step sbatch call:", calls["gpu_step"].split(" --wrap=")[0])
    assert f"-p {PARTITION}" in calls["gpu_step"]
    assert " --gpus=1" in calls["gpu_step"]
    assert "--gpus" not in calls["cpu_step"]

    for rule, cuda in (("cpu_step", "unset"), ("gpu_step", "0")):
        job_id, seen_cuda = (tmp_path / f"{rule.split('_')[0]}.txt").read_text().split()
        assert seen_cuda == cuda, rule
        assert (tmp_path / ".snakemake" / "slurm_logs" / f"rule_{rule}" / f"{job_id}.log").exists()
        job = subprocess.run(
            ["scontrol", "show", "job", job_id], capture_output=True, text=True
        ).stdout
        assert "JobState=COMPLETED" in job, job
        assert f"Comment=rule_{rule}" in job, job


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (to find leftovers of a killed run)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            pass
    return found


@pytest.mark.slurm
def test_timeout_kills_snakemake_and_cancels_its_jobs(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """A run past its timeout leaves no snakemake process and no SLURM job behind."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        'rule slow:\n    output: "slow.txt"\n    shell: "sleep 300; touch {output}"\n'
    )
    began = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_snakemake_on_slurm(tmp_path, snakefile, timeout=8)
    assert time.monotonic() - began < 30
    deadline = time.monotonic() + 15  # cancelled job steps take a moment to be killed
    while (leftovers := _processes_mentioning(str(tmp_path))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leftovers == [], leftovers
    queue = subprocess.run(
        ["squeue", "-h", "-p", PARTITION, "-t", "PD,R"], capture_output=True, text=True
    ).stdout
    assert queue.strip() == "", queue


@pytest.mark.slurm
def test_teardown_stops_daemons_and_restores_etc_slurm(slurm_cluster: SlurmCluster) -> None:
    """stop() ends exactly the started daemons and restores /etc/slurm; start() works again."""
    pids = slurm_cluster.pids
    restored = dict(slurm_cluster.backups)
    assert set(pids) == {"slurmctld", "slurmd"} and all(map(pid_alive, pids.values()))

    slurm_cluster.stop()
    try:
        assert not any(map(pid_alive, pids.values())), pids
        for target, backup in restored.items():
            if backup is None:
                assert not target.exists(), target
            else:
                assert target.read_bytes() == backup.read_bytes(), target
                assert MARKER not in target.read_text(errors="replace")
    finally:
        slurm_cluster.start()  # later tests in the session still need the cluster

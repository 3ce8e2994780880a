"""A throw-away one-node SLURM cluster for testing the workflow's SLURM profile.

The cluster is Debian's Slurm (slurmctld + slurmd) with ``auth/none`` (no munge daemon), one
partition and one fake GPU (a GRES backed by ``/dev/null``), so that a GPU rule is placed exactly as
on a real cluster: SLURM allocates the GRES and sets ``CUDA_VISIBLE_DEVICES`` inside the job.

Why the odd parts:

* The config has to live at ``/etc/slurm/slurm.conf``: the executor plugin's job step strips every
  ``SLURM_*`` variable (``SLURM_CONF`` too) before its inner ``srun``, which then only finds the
  controller through the default path. Whatever was there is backed up and restored.
* There is no accounting database, so the plugin must poll with ``squeue`` (``MinJobAge`` keeps
  finished jobs visible to it); with ``sacct`` it fails and snakemake hangs, ignoring SIGTERM. Every
  snakemake run here therefore has a hard timeout that kills its whole process group.

Run ``python tests/slurm/cluster.py [COMMAND...]`` as root to bring the cluster up, run COMMAND
(default: ``sinfo``) and tear it down again.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

REPO = Path(__file__).resolve().parents[2]
SLURM_PROFILE = REPO / "profiles" / "slurm" / "profile.yaml"
ETC_SLURM = Path("/etc/slurm")
PARTITION = "debug"
PACKAGES = ("slurmctld", "slurmd", "slurm-client")
MARKER = "# Written by the cycledecon SLURM test harness."

# Test-cluster settings that replace the user-facing profile's: no accounting, so squeue and no
# account; a short first status check so that tests take seconds, and logs kept for assertions.
TEST_PROFILE_SETTINGS: dict[str, Any] = {
    "slurm-status-command": "squeue",
    "slurm-no-account": True,
    "slurm-init-seconds-before-status-checks": 2,
    "slurm-keep-successful-logs": True,
    "jobs": 2,
    "latency-wait": 5,
    "retries": 0,
}
# Sizes that fit the test node whatever the real profile asks for; placement keys (gpu) are kept.
TEST_JOB_SIZE: dict[str, Any] = {"mem_mb": 500, "runtime": 10}


def skip_reason() -> str | None:
    """Say why the SLURM tests cannot run here, or None when they can.

    They need root (daemons, /etc/slurm, apt-get) and an explicit opt-in, because they change
    /etc/slurm for their duration: a developer's ``pytest`` must never do that by surprise.
    """
    if (
        os.environ.get("CI", "").lower() != "true"
        and os.environ.get("CYCLEDECON_SLURM_TEST") != "1"
    ):
        return "SLURM tests are opt-in: set CYCLEDECON_SLURM_TEST=1 (or CI=true) and run as root"
    if os.geteuid() != 0:
        return "SLURM tests need root (they start slurmctld/slurmd and write /etc/slurm)"
    return None


def ensure_packages() -> None:
    """Install Debian's Slurm packages when a daemon is missing (apt-get update only if needed)."""
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "squeue")):
        return
    if not shutil.which("apt-get"):
        raise RuntimeError(
            "Slurm is not installed and apt-get is unavailable; install Slurm 22.05+"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)


def node_hardware() -> str:
    """The node's CPU/memory layout as slurmd itself detects it (``slurmd -C``).

    Using slurmd's own numbers avoids the node being drained for claiming more than it has.
    """
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0]
    return " ".join(word for word in first.split() if not word.startswith("NodeName="))


def render_slurm_conf(root: Path, node: str, hardware: str) -> str:
    """slurm.conf for one node on 127.0.0.1 with a fake GPU; all state and logs under ``root``."""
    return f"""{MARKER}
# Original (if any) is restored from {root / "backup"} when the harness stops.
ClusterName=cycledecon-test
SlurmctldHost={node}(127.0.0.1)
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerParameters=sched_interval=1
MinJobAge=600
ReturnToService=2
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 {hardware} Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _run(cmd: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a short Slurm client command; a timeout (controller gone) reads as exit status 124.

    Never raising keeps teardown going when slurmctld has already died.
    """
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(cmd), 124, "", "timed out")


@dataclass
class SlurmCluster:
    """A one-node cluster whose daemons and /etc/slurm files this object owns.

    ``start`` and ``stop`` may be called repeatedly; ``stop`` is idempotent and safe to call from
    ``finally``, ``atexit`` and signal handlers alike.
    """

    root: Path
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # What ``stop`` restores: /etc/slurm file -> its backup copy (None: there was no file).
    backups: dict[Path, Path | None] = field(default_factory=dict)
    _created_etc: bool = False

    def __post_init__(self) -> None:
        """Stop at interpreter exit too, in case a caller's ``finally`` never runs."""
        atexit.register(self.stop)

    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the daemons this harness started, by name."""
        return {name: proc.pid for name, proc in self.daemons.items()}

    def start(self, timeout: float = 60) -> None:
        """Install Slurm if needed, write /etc/slurm, start the daemons, wait for an idle node."""
        ensure_packages()
        for sub in ("state", "spool", "backup"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        try:
            self._install_config()
            self._spawn("slurmctld", ["slurmctld", "-D", "-c"])
            self._spawn("slurmd", ["slurmd", "-D", "-N", self.node])
            self.wait_until_idle(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel jobs, stop exactly the daemons started here (by PID) and restore /etc/slurm."""
        if self.daemons:
            _run(["scancel", "--partition", PARTITION], timeout=10)
            wait_for_empty_queue(10)
        for name in ("slurmd", "slurmctld"):
            proc = self.daemons.pop(name, None)
            if proc is not None:
                _terminate(proc)
        self._restore_config()

    def wait_until_idle(self, timeout: float) -> None:
        """Poll ``sinfo`` until the node is idle; fail with the daemons' log tails otherwise."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for name, proc in self.daemons.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}.\n{self.log_tails()}")
            state = _run(["sinfo", "-h", "-n", self.node, "-o", "%T"]).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        reason = _run(["scontrol", "show", "node", self.node]).stdout
        raise TimeoutError(
            f"SLURM node {self.node} not idle after {timeout:.0f} s (state {state!r}).\n"
            f"{reason}\n{self.log_tails()}"
        )

    def log_tails(self, lines: int = 20) -> str:
        """The last lines of the daemons' logs, for error messages."""
        parts = []
        for name in ("slurmctld", "slurmd"):
            log = self.root / f"{name}.log"
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
            parts.append(f"--- {log}\n" + "\n".join(text))
        return "\n".join(parts)

    def _spawn(self, name: str, cmd: list[str]) -> None:
        """Start a daemon in the foreground (-D) so that its PID is ours to stop.

        A new session keeps a terminal's Ctrl-C from reaching the daemons before the harness has
        cancelled the jobs and stops them in order.
        """
        log = (self.root / f"{name}.out").open("ab")
        self.daemons[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _install_config(self) -> None:
        """Write slurm.conf and gres.conf to /etc/slurm, backing up what is there."""
        confs = {
            "slurm.conf": render_slurm_conf(self.root, self.node, node_hardware()),
            "gres.conf": f"{MARKER}\nNodeName={self.node} Name=gpu File=/dev/null\n",
        }
        if not ETC_SLURM.exists():
            ETC_SLURM.mkdir(parents=True)
            self._created_etc = True
        for name, text in confs.items():
            target = ETC_SLURM / name
            if target.exists() and MARKER in target.read_text(errors="replace"):
                raise RuntimeError(
                    f"{target} was left by a harness run that did not stop cleanly; restore the "
                    "original from that run's backup folder (named in the file) or delete it"
                )
            backup = None
            if target.exists():
                backup = self.root / "backup" / name
                shutil.copy2(target, backup)
            self.backups[target] = backup
            target.write_text(text)

    def _restore_config(self) -> None:
        """Put back the backed-up files; remove ours where there was none."""
        for target, backup in list(self.backups.items()):
            if backup is None:
                target.unlink(missing_ok=True)
            else:
                shutil.copy2(backup, target)
            del self.backups[target]
        if self._created_etc and not any(ETC_SLURM.iterdir()):
            ETC_SLURM.rmdir()
            self._created_etc = False


def wait_for_empty_queue(timeout: float) -> None:
    """Give cancelled jobs a moment to end, so that no job step outlives its cancellation."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = _run(["squeue", "-h", "-t", "PD,R,CG,CF", "-p", PARTITION], timeout=10)
        if queue.returncode != 0 or not queue.stdout.strip():
            return
        time.sleep(0.5)


def _terminate(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM one process, then SIGKILL it if it outlives ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (and is not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def write_test_profile(
    dest: Path,
    set_resources: dict[str, dict[str, Any]] | None = None,
    base: Path = SLURM_PROFILE,
) -> Path:
    """Write a profile for the test cluster, derived from the user-facing SLURM profile.

    The real profile's rule placement (which rules get ``gpu``) is kept; partition, account, status
    command, GPU model and sizes are replaced by what the one-node test cluster offers.
    ``set_resources`` adds or overrides rules (e.g. a test Snakefile's own rules).
    Returns the profile folder, for ``--profile``.
    """
    profile = yaml.safe_load(base.read_text())
    profile.pop("software-deployment-method", None)
    profile.update(TEST_PROFILE_SETTINGS)
    profile["default-resources"] = {"slurm_partition": PARTITION, **TEST_JOB_SIZE}
    rules = {**(profile.get("set-resources") or {}), **(set_resources or {})}
    profile["set-resources"] = {rule: _fit_test_node(res) for rule, res in rules.items()}
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "profile.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def _fit_test_node(resources: dict[str, Any]) -> dict[str, Any]:
    """Keep a rule's GPU request, shrink the rest to the test node (one fake, untyped GPU)."""
    fitted = dict(TEST_JOB_SIZE)
    if resources.get("gpu"):
        fitted.update(gpu=1, cpus_per_gpu=1)
    return fitted


def run_snakemake_on_slurm(
    workdir: Path,
    snakefile: Path,
    configfile: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 600,
    *,
    profile: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run snakemake through the running test cluster under a hard timeout.

    Uses ``profile`` or else a test profile derived from profiles/slurm (see
    ``write_test_profile``), and ``--verbose`` so that the plugin's ``sbatch call:`` lines are in
    the output (see ``sbatch_calls``). stdout and stderr are merged in ``.stdout``.
    ``CUDA_VISIBLE_DEVICES`` is removed so that a job only sees a GPU SLURM allocated to it.

    On timeout (or Ctrl-C/SIGTERM) the whole process group is killed, since the plugin can hang
    and ignore SIGTERM, and the test partition's jobs are cancelled; a timeout then raises
    ``subprocess.TimeoutExpired`` carrying the output so far.
    """
    profile = profile or write_test_profile(workdir / ".slurm-test-profile")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--profile",
        str(profile),
        "--verbose",
    ]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    cmd += list(extra_args)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLURM_") and k != "CUDA_VISIBLE_DEVICES"
    }
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException as exc:  # timeout, Ctrl-C or SIGTERM: never leave the run behind
        out = _kill_run(proc)
        if isinstance(exc, subprocess.TimeoutExpired):
            raise subprocess.TimeoutExpired(cmd, timeout, output=out) from None
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def _kill_run(proc: subprocess.Popen[str]) -> str:
    """Kill a snakemake run's process group and cancel its jobs; return its output so far."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended just now
        pass
    out, _ = proc.communicate()
    _run(["scancel", "--partition", PARTITION], timeout=10)
    wait_for_empty_queue(10)
    return out


def sbatch_calls(output: str) -> dict[str, str]:
    """The plugin's sbatch command line per rule (the last one for rules with several jobs).

    Parsed from snakemake's ``--verbose`` output, where the plugin logs ``sbatch call: ...`` with
    ``--comment rule_<rule>[_wildcards_<values>]``.
    """
    calls = {}
    for match in re.finditer(r"sbatch call: (sbatch .*?--comment '?rule_(\S+?)'?\s.*)", output):
        calls[match.group(2).split("_wildcards_")[0]] = match.group(1)
    return calls


def main(argv: list[str]) -> int:
    """Bring the cluster up, run a command (default: sinfo) against it, tear it down."""
    if os.geteuid() != 0:
        print(
            "run as root: the harness starts slurmctld/slurmd and writes /etc/slurm",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="cycledecon-slurm-") as tmp:
        cluster = SlurmCluster(Path(tmp))
        began = time.monotonic()
        try:
            cluster.start()
            print(f"cluster up in {time.monotonic() - began:.1f} s: {cluster.pids}", flush=True)
            return subprocess.run(argv or ["sinfo"]).returncode
        finally:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

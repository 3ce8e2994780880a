"""Where, when and from which code a benchmark ran: what every results table's header states first."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from cycledecon.precision import cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]


def machine(device: str = "cpu") -> str:
    """What the figures depend on: the CPU (or GPU), its logical CPUs, native bf16 and torch's version."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
    except OSError:
        names = []
    cpu = names[0] if names else platform.processor() or platform.machine()
    text = (f"{cpu}, {os.cpu_count()} logical CPUs, native bf16 {'yes' if cpu_has_native_bf16() else 'no'}, "
            f"torch {torch.__version__}")  # fmt: skip
    if device == "cuda" and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()} (bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'})"
    return text


def code_version() -> str:
    """The checkout's short commit, ``-dirty`` when tracked files other than the results tables
    differ from it (a run rewriting benchmarks/results/ does not count); ``unknown`` without git."""
    try:
        head, changed = (subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
                         for args in (["rev-parse", "--short", "HEAD"],
                                      ["status", "--porcelain", "--untracked-files=no", "--", ".",
                                       ":(exclude)benchmarks/results"]))  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git here)"
    return head.strip() + ("-dirty" if changed.strip() else "")


def today() -> str:
    """The date in UTC, as results headers give it."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def command_line(script: str) -> str:
    """The command that produced a results file, as it was typed (less the interpreter's path)."""
    return " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])


def run_stamp(device: str = "cpu", commit: str | None = None) -> str:
    """``date, commit C, machine``: the provenance a results header begins with."""
    return f"{today()}, commit {commit or code_version()}, {machine(device)}"

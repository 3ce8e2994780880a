"""Progress bars echoed to the terminal as tagged lines while the log file stays complete."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from tqdm import tqdm

from cycledecon.boundary import user_errors_exit
from cycledecon.progress import ProgressEcho
from helpers import make_workdir, run_snakemake


class Clock:
    """A clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bar_is_echoed_at_its_start_then_once_per_interval_and_at_its_end():
    log, terminal, clock = io.StringIO(), io.StringIO(), Clock()
    echo = ProgressEcho(log, terminal, "demo", interval=30.0, clock=clock)
    for t, step in [(0, 0), (10, 1), (20, 2), (31, 3), (40, 4), (61, 5), (70, 6)]:
        clock.now = t
        echo.write(f"\rtrain: {step}/6   ")
    echo.write("\n")
    assert terminal.getvalue().splitlines() == [
        "[demo] train: 0/6", "[demo] train: 3/6", "[demo] train: 5/6", "[demo] train: 6/6"]
    assert log.getvalue() == "".join(f"\rtrain: {s}/6   " for s in range(7)) + "\n"


def test_other_text_goes_to_the_log_only_and_a_second_bar_starts_anew():
    log, terminal, clock = io.StringIO(), io.StringIO(), Clock()
    echo = ProgressEcho(log, terminal, "wf_01", interval=30.0, clock=clock)
    echo.write("\rdeconvolve: 0/2")
    echo.write("UserWarning: something the log keeps\n")
    echo.write("\rdeconvolve: 2/2")
    echo.write("\n")
    echo.write("\rbaseline: 0/1")
    assert terminal.getvalue().splitlines() == [
        "[wf_01] deconvolve: 0/2", "[wf_01] deconvolve: 2/2", "[wf_01] baseline: 0/1"]
    assert "UserWarning" in log.getvalue()


def test_tqdm_writes_the_log_as_it_would_without_the_echo():
    log, terminal = io.StringIO(), io.StringIO()
    echo = ProgressEcho(log, terminal, "demo", interval=1e9)
    for _ in tqdm(range(5), desc="train", unit="step", file=echo, mininterval=0):
        pass
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[demo] train:   0%") and "5/5" in lines[1], lines
    updates = [u.strip() for u in log.getvalue().split("\r") if u.strip()]
    assert updates[0].startswith("train:   0%") and "5/5" in updates[-1] and log.getvalue().endswith("\n")


@pytest.mark.slow
def test_snakemake_shows_training_and_deconvolution_progress_and_the_logs_keep_the_bars(tmp_path):
    work = make_workdir(tmp_path)
    result = run_snakemake(work, "results/deconvolved/wf_01.ome.zarr")
    assert result.returncode == 0, result.stderr[-3000:]
    terminal = (result.stdout + result.stderr).splitlines()
    for tag, bar, total in (("demo", "train", "6/6"), ("wf_01", "deconvolve", "1/1")):
        lines = [line for line in terminal if line.startswith(f"[{tag}] {bar}:")]
        assert len(lines) >= 2 and "  0%" in lines[0] and total in lines[-1], terminal[-40:]
    assert "train: 100%" in (work / "logs" / "train" / "demo.log").read_text()
    assert "deconvolve: 100%" in (work / "logs" / "deconvolve" / "wf_01.log").read_text()


def test_a_rule_log_keeps_both_the_progress_bar_and_the_log_lines(tmp_path):
    """Both reach the same file through two handles; neither may write over the other."""
    log = tmp_path / "rule.log"
    log.write_text("an earlier run's log\n")
    with user_errors_exit(log):
        print("deconvolve: 100%|██████████| 1/1", file=sys.stderr, flush=True)
        logging.getLogger("cycledecon.test").info("a log line longer than the progress bar written before it")
    text = log.read_text()
    assert "deconvolve: 100%" in text and "longer than the progress bar" in text
    assert "earlier run" not in text

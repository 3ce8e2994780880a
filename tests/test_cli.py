"""The command line: a user error is one line on stderr and exit status 1."""

from __future__ import annotations

import subprocess
import sys


def test_user_error_is_printed_once(tmp_path):
    missing = tmp_path / "missing.pt"
    result = subprocess.run(
        [sys.executable, "-m", "cycledecon.cli", "deconvolve", str(tmp_path / "in.ome.zarr"),
         "--model", str(missing), "-o", str(tmp_path / "out.ome.zarr")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {missing}: no such model file"], result.stderr
    assert not (tmp_path / "out.ome.zarr").exists()

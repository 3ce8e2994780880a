"""What `make demo` installs (the project without its test extra) must run the whole demo."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def test_the_pipeline_install_can_write_the_snakemake_report():
    # `make demo` ends with `snakemake --report`, which needs pygments: snakemake's `reports` extra.
    # The test extra brings pygments in through pytest, so only the declaration can show its absence.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    snakemake = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "snakemake"]
    assert len(snakemake) == 1 and "reports" in snakemake[0].extras

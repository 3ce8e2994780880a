"""Snakemake adapter for rule report_summary: results/summary.md from the metrics tables."""

from pathlib import Path

from cycledecon.boundary import user_errors_exit
from cycledecon.report import write_summary

with user_errors_exit(snakemake.log[0]):
    write_summary(
        [Path(p) for p in snakemake.input.metrics],
        [Path(p) for p in snakemake.input.psf],
        Path(snakemake.output.summary),
    )

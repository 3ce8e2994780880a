"""Snakemake adapter for rule summary: results/summary.md and the report's summary page."""

import logging
from pathlib import Path

from cycledecon.boundary import user_errors_exit
from cycledecon.progress import echo_warnings
from cycledecon.summary import write_summary

# The summary's warnings (a collapsed PSF, a high noise/artefact gain) also reach the terminal.
with user_errors_exit(snakemake.log[0]):
    echo_warnings("summary", logging.getLogger("cycledecon.summary"))
    write_summary(
        [Path(p) for p in snakemake.input.metrics],
        [Path(p) for p in snakemake.input.psf],
        Path(snakemake.output.summary),
        learned_psfs=[Path(p) for p in snakemake.input.learned_psf],
        optics=list(snakemake.params.optics),
        page=Path(snakemake.output.page),
    )

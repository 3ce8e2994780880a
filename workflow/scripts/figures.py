"""Snakemake adapter for rule figures: side-by-side slices and a line profile of one sample."""

from pathlib import Path

from cycledecon.boundary import user_errors_exit
from cycledecon.figures import sample_figures

with user_errors_exit(snakemake.log[0]):
    paths = snakemake.params.methods
    sample_figures(
        snakemake.wildcards.sample,
        {name: Path(result) for name, (result, _) in paths["methods"].items()},
        Path(paths["truth"]) if paths["truth"] else None,
        Path(snakemake.output.slices),
        Path(snakemake.output.profile),
    )

"""Snakemake adapter for rule demo: the synthetic campaign."""

from pathlib import Path

from cycledecon.boundary import user_errors_exit
from cycledecon.config.demo import parse_demo_config
from cycledecon.demo import generate_campaign

with user_errors_exit(snakemake.log[0]):
    generate_campaign(
        parse_demo_config(snakemake.params.settings),
        widefield={
            name: (Path(path), None if truth is None else Path(truth))
            for name, (path, truth) in snakemake.params.widefield.items()
        },
        references={name: Path(path) for name, path in snakemake.params.references.items()},
        psf_path=Path(snakemake.output.psf),
    )

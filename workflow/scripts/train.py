"""Snakemake adapter for rule train: patches.zarr → results/models/{campaign}/model.pt and friends."""

from pathlib import Path

import tifffile
import torch

from cycledecon.boundary import user_errors_exit
from cycledecon.train import train

with user_errors_exit(snakemake.log[0]):
    # Use the rule's threads only: more torch threads than cores slows small 3D convs severalfold.
    torch.set_num_threads(snakemake.threads)
    reference = snakemake.input.get("reference_psf")
    train(
        Path(snakemake.input.patches),
        Path(snakemake.output.model).parent,
        snakemake.params.train_config,
        reference_psf=None if reference is None else tifffile.imread(reference),
    )

"""Snakemake adapter for rule train: patches.zarr → results/models/{campaign}/model.pt and friends."""

import logging
from pathlib import Path

import torch

from cycledecon.boundary import user_errors_exit
from cycledecon.patches import store_voxel_size
from cycledecon.progress import echo_progress, echo_warnings
from cycledecon.resample import read_psf_on_grid
from cycledecon.train import train
from cycledecon.voxel import VoxelSize

# The progress bar goes to the log and, a line at a time, to the terminal Snakemake shows.
# So are the learned PSF's sanity warnings (cycledecon.psf_sanity).
with user_errors_exit(snakemake.log[0]), echo_progress(snakemake.wildcards.campaign):
    echo_warnings(snakemake.wildcards.campaign, logging.getLogger("cycledecon.psf_sanity"))
    # Use the rule's threads only: more torch threads than cores slows small 3D convs severalfold.
    torch.set_num_threads(snakemake.threads)
    reference = snakemake.input.get("reference_psf")
    given = snakemake.params.true_psf_voxel_size
    if reference is not None:
        grid = store_voxel_size(Path(snakemake.input.patches))
        reference = read_psf_on_grid(reference, grid, None if given is None else VoxelSize(*given))
    train(
        Path(snakemake.input.patches),
        Path(snakemake.params.model_dir),
        snakemake.params.train_config,
        reference_psf=reference,
    )

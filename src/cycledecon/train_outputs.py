"""What a finished training run leaves in its folder: model.pt (G's weights, the learned PSF and the
run's metadata), learned_psf.ome.tif, train_log.csv, loss_curves.png and psf.png."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import zarr

import cycledecon
from cycledecon import figures
from cycledecon.atomic import atomic_path
from cycledecon.io import write_ome_tiff
from cycledecon.model.checkpoint import save_model
from cycledecon.model.cyclegan import CycleModel
from cycledecon.model.unet import receptive_field
from cycledecon.psf.layer import PsfLayer
from cycledecon.psf_sanity import log_psf_sanity, psf_sanity
from cycledecon.train_state import TrainingState

LEARNED_PSF = "learned_psf.ome.tif"


def write_outputs(state: TrainingState, out_dir: Path) -> Path:
    """model.pt, learned_psf.ome.tif, train_log.csv and the two figures; returns model.pt's path.
    The learned PSF's sanity record (cycledecon.psf_sanity) is logged and stored in model.pt's
    metadata."""
    psf_shape = state.initial.shape if state.initial is not None else state.cfg.psf.shape_voxels
    learned = state.model.psf_estimate(psf_shape).cpu().numpy()
    write_ome_tiff(learned.astype(np.float32), out_dir / LEARNED_PSF, state.store.voxel_size)
    table = pd.DataFrame(state.rows)
    with atomic_path(out_dir / "train_log.csv") as tmp:
        table.to_csv(tmp, index=False)
    figures.loss_curves(table.drop(columns=["seconds", "lr_g"], errors="ignore"), out_dir / "loss_curves.png")
    label, other = ("reference", state.reference) if state.reference is not None else ("initial", state.initial)
    psfs = {"learned": learned} | ({label: other} if other is not None else {})
    figures.psf_panel(psfs, state.store.voxel_size, out_dir / "psf.png")
    sanity = psf_sanity(learned, state.store.voxel_size, state.store.optics)
    log_psf_sanity(sanity, str(out_dir / LEARNED_PSF))
    return save_model(out_dir / "model.pt", state.model.deblurrer, metadata(state) | {"psf_sanity": sanity}, learned)


def metadata(state: TrainingState) -> dict[str, Any]:
    """What model.pt records of the run: config, architecture, data, optics, what was learned
    besides G, and the versions that trained it."""
    cfg, store, model = state.cfg.to_dict(), state.store, state.model
    return {
        "config": cfg, "generator": cfg["generator"], "model": state.cfg.model,
        "receptive_field": list(receptive_field(state.cfg.generator)),
        "psf_shape": list(state.initial.shape) if state.initial is not None else None,
        "context_voxels": list(store.margin),
        "patch_shape": list(store.patch_shape), "channels": 1,
        "normalization": store.normalization,
        "voxel_size": list(store.voxel_size.as_tuple()), "campaign": store.campaign,
        "optics": store.optics, "steps": state.step, "precision": state.precision.name,
        "noise_model": model.noise.to_dict() if model.noise is not None else None,
        "intensity_map": intensity_map(model),
        "pupil": model.f.pupil.summary() if getattr(model.f, "pupil", None) is not None else None,
        "versions": {"cycledecon": cycledecon.__version__, "torch": str(torch.__version__),
                     "numpy": np.__version__, "zarr": zarr.__version__,
                     "python": platform.python_version()},
    }


@torch.no_grad()
def intensity_map(model: CycleModel) -> dict[str, float] | None:
    """H's closed-form gain and offset for its final kernel (PSF layer only)."""
    if not isinstance(model.f, PsfLayer):
        return None
    return dict(zip(("gain", "offset"), map(float, model.f.intensity())))

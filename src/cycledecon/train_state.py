"""The state one training run advances: the patch sets it draws from, the optimizers, the batch
sampler, the step count and the log; random batches and validation.

Every random draw of batches and augmentations comes from one seeded sampler, so a checkpoint that
holds the sampler's state (cycledecon.train_checkpoint) resumes the very same sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from cycledecon.augment import lateral_symmetries
from cycledecon.config.train import TrainConfig
from cycledecon.errors import CycledeconError
from cycledecon.model.cyclegan import CycleModel
from cycledecon.patches import ROOM_SUFFIX
from cycledecon.precision import resolve_precision
from cycledecon.psf_metrics import psf_correlation
from cycledecon.voxel import VoxelSize

ARRAYS = ("A_train", "B_train", "A_val", "B_val")
VAL_BATCHES = 4  # validation uses the first VAL_BATCHES·batch_size patches, the same each time


@dataclass
class PatchStore:
    """The unpaired patch sets (n, z, y, x) and the attrs training needs."""

    arrays: dict[str, np.ndarray]
    rooms: dict[str, np.ndarray]  # per array that has one: each patch's distance to its stack's faces
    voxel_size: VoxelSize
    patch_shape: tuple[int, int, int]
    margin: tuple[int, int, int]  # context voxels on each side of every patch (arrays hold both)
    campaign: str
    normalization: dict[str, Any]
    optics: dict[str, float] | None

    @classmethod
    def open(cls, path: Path) -> PatchStore:
        """Read the whole store into memory (patch sets are small next to the raw stacks)."""
        try:
            group = zarr.open_group(str(path), mode="r")
            attrs = dict(group.attrs)
            arrays = {name: np.asarray(group[name][...], dtype=np.float32) for name in ARRAYS}
            rooms = {name: np.asarray(group[name + ROOM_SUFFIX][...]) for name in ARRAYS
                     if name + ROOM_SUFFIX in group}
            store = cls(arrays, rooms, VoxelSize(*attrs["voxel_size_um"]), tuple(attrs["patch_shape"]),
                        tuple(attrs.get("context_voxels", (0, 0, 0))), str(attrs.get("campaign", "")), dict(attrs.get("normalization") or {}),
                        attrs.get("optics"))
        except (OSError, KeyError, ValueError, TypeError, zarr.errors.BaseZarrError) as error:
            raise CycledeconError(f"{path}: not a readable patch store ({error!r})") from None
        for name, array in store.arrays.items():
            if array.ndim != 4 or len(array) == 0:
                raise CycledeconError(f"{path}/{name}: expected a non-empty (n, z, y, x) array, "
                                      f"got shape {array.shape}")
        return store


def resident(patches: np.ndarray, device: torch.device) -> torch.Tensor:
    """A training set as a tensor where batches are drawn from: on a CUDA device when it takes at
    most a quarter of the device's free memory (copied there once for the whole run), else in host
    memory without a copy, each batch then sent on its own."""
    host = torch.from_numpy(patches)
    if device.type == "cuda" and host.nbytes <= torch.cuda.mem_get_info(device)[0] // 4:
        return host.to(device)
    return host


class TrainingState:
    """One training run's state: model, optimizers, sampler, step and log, with the kernel H
    started from (`initial`, None without a PSF layer) and the known PSF validation reports
    against (`reference`, or None)."""

    def __init__(self, cfg: TrainConfig, model: CycleModel, store: PatchStore, device: torch.device,
                 initial: np.ndarray | None, reference: np.ndarray | None) -> None:
        self.cfg, self.model, self.store, self.device = cfg, model, store, device
        self.initial, self.reference = initial, reference
        o = cfg.optim
        groups = [{"params": list(model.g.parameters()), "lr": o.lr_g}, *model.f_param_groups(o)]
        self.opt_g = torch.optim.Adam([g for g in groups if g["params"]], betas=o.betas)
        self.opt_d = torch.optim.Adam(list(model.d_a.parameters()) + list(model.d_b.parameters()),
                                      lr=o.lr_d, betas=o.betas)
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in (self.opt_g, self.opt_d)]
        self.sampler = torch.Generator().manual_seed(cfg.seed)
        self.training_sets = {name: resident(store.arrays[name], device) for name in ("A_train", "B_train")}
        self.rooms = {}
        if cfg.ring_at_faces != "blur":
            if any(name not in store.rooms for name in ("A_train", "B_train")):
                raise CycledeconError(f"train.ring_at_faces: {cfg.ring_at_faces} needs a patch store that records "
                                      "each patch's room to its stack's faces; rerun the patches rule")
            self.rooms = {name: torch.from_numpy(store.rooms[name]) for name in ("A_train", "B_train")}
        self.step = 0
        self.rows: list[dict[str, float]] = []
        self.precision = resolve_precision(cfg.precision, device)
        for network in (model.g, model.d_a, model.d_b, *([model.g_average] if model.g_average else [])):
            self.precision.prepare(network)

    def batch(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A random batch of a training set, and its patches' room to the faces when training uses it."""
        patches = self.training_sets[name]
        index = torch.randint(len(patches), (self.cfg.optim.batch_size,), generator=self.sampler)
        batch = patches[index.to(patches.device)]
        room = self.rooms[name][index] if name in self.rooms else None
        if self.cfg.augment == "lateral":
            square = math.isclose(self.store.voxel_size.y, self.store.voxel_size.x, rel_tol=1e-3)
            batch, room = lateral_symmetries(batch, self.sampler, swap_yx=square, room=room)
        return self.precision.layout(batch[:, None].to(self.device)), room

    def validate(self) -> dict[str, float]:
        """Validation cycle loss on the first val patches, and the PSF's correlation with the reference."""
        n = self.cfg.optim.batch_size
        a, b = self.store.arrays["A_val"], self.store.arrays["B_val"]
        self.model.eval()
        losses = []
        for i in range(min(VAL_BATCHES, math.ceil(min(len(a), len(b)) / n))):
            y = self.precision.layout(torch.from_numpy(a[i * n : (i + 1) * n][:, None]).to(self.device))
            x = self.precision.layout(torch.from_numpy(b[i * n : (i + 1) * n][:, None]).to(self.device))
            with self.precision.autocast(self.device):
                losses.append(self.model.cycle_loss(y, x))
        self.model.train()
        result = {"val_cycle": float(np.mean(losses))}
        if self.reference is not None:
            learned = self.model.psf_estimate(self.reference.shape).cpu().numpy()
            result["psf_correlation"] = psf_correlation(learned, self.reference)
        return result

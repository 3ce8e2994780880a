"""Training: unpaired patches in, model.pt, the learned PSF, a loss log and two figures out.

`train()` reads the patch store (zarr v3 group with A_train/B_train/A_val/B_val and attrs), builds
the cycle model, and runs Adam with a linear learning-rate decay. Every `checkpoint_every` steps
the full training state (networks, optimizers, RNG states, log so far) is written atomically to
``checkpoint.pt``; a rerun into the same directory resumes there and ends exactly where an
uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import zarr
from tqdm import tqdm

import cycledecon
from cycledecon import figures
from cycledecon.atomic import atomic_path
from cycledecon.augment import lateral_symmetries
from cycledecon.config.train import RefineConfig, TrainConfig, parse_config
from cycledecon.errors import CycledeconError
from cycledecon.host_memory import reusing_freed_memory
from cycledecon.io import write_ome_tiff
from cycledecon.model.checkpoint import atomic_save, load_failure, save_model
from cycledecon.model.cyclegan import CycleModel, Faces, build_model
from cycledecon.model.unet import receptive_field
from cycledecon.noise import estimate_noise
from cycledecon.patches import ROOM_SUFFIX
from cycledecon.precision import resolve_device, resolve_precision
from cycledecon.psf.kernel import kernel_room, starting_kernel
from cycledecon.psf.layer import PsfLayer, crop_margin
from cycledecon.psf_metrics import psf_correlation
from cycledecon.psf_sanity import log_psf_sanity, psf_sanity
from cycledecon.voxel import VoxelSize

log = logging.getLogger(__name__)

ARRAYS = ("A_train", "B_train", "A_val", "B_val")
CHECKPOINT = "checkpoint.pt"
LEARNED_PSF = "learned_psf.ome.tif"
BLIND_STAGE = "blind"  # subdirectory of the first stage when `refine` adds a second
PROGRESS = ("cycle_sharp", "adv_a", "d_a", "psf_ncc")  # shown beside the progress bar
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


def train(
    patches_path: Path, out_dir: Path, config: dict[str, Any], reference_psf: np.ndarray | None = None
) -> Path:
    """Train (or resume training) on a patch store; returns the path of model.pt.

    Parameters
    ----------
    patches_path : the campaign's patches.zarr.
    out_dir : receives model.pt, learned_psf.ome.tif, train_log.csv, loss_curves.png, psf.png
        and checkpoint.pt.
    config : the plain `train:` config section (see cycledecon.config.train for keys).
    reference_psf : a known PSF (z, y, x) to report the learned kernel's correlation with.

    With `refine.steps` the blind training goes to out_dir/blind/ and out_dir receives the second
    stage, whose kernel is the blind one frozen (RefineConfig); each stage resumes on its own.
    """
    cfg = parse_config(config)
    patches_path, out_dir = Path(patches_path), Path(out_dir)
    with reusing_freed_memory():  # every step allocates the same large tensors
        if cfg.refine.steps == 0:
            return train_stage(patches_path, out_dir, cfg, reference_psf)
        blind = out_dir / BLIND_STAGE
        train_stage(patches_path, blind, dataclasses.replace(cfg, refine=RefineConfig()), reference_psf)
        return train_stage(patches_path, out_dir, second_stage(cfg, blind / LEARNED_PSF), reference_psf)


def second_stage(cfg: TrainConfig, learned_psf: Path) -> TrainConfig:
    """The refine stage's config: the blind stage's kernel frozen, G afresh on the sharp cycle alone."""
    return dataclasses.replace(
        cfg,
        psf=dataclasses.replace(cfg.psf, file=str(learned_psf), learnable=False),
        loss=dataclasses.replace(cfg.loss, adversarial_b=0.0, cycle_blurred=0.0),
        optim=dataclasses.replace(cfg.optim, steps=cfg.refine.steps, lr_g=cfg.refine.lr_g, decay_start=None),
    )


def train_stage(patches_path: Path, out_dir: Path, cfg: TrainConfig, reference_psf: np.ndarray | None) -> Path:
    """One training run into out_dir (see train)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = PatchStore.open(patches_path)
    device = resolve_device(cfg.device, "train.device")
    torch.manual_seed(cfg.seed)
    room = kernel_room(cfg, store)
    initial, pupil = starting_kernel(cfg.psf, store, room) if cfg.model == "psf_layer" else (None, None)
    if initial is not None:
        check_receptive_field(cfg, initial.shape, store.voxel_size)
    noise = estimate_noise(store.arrays["A_train"]) if cfg.noise == "estimate" else None
    if noise is not None:
        log.info("widefield noise in normalized units: var = %.3g·v + %.3g", noise.gain, noise.floor)
    model = build_model(cfg, initial, noise, store.margin, pupil).to(device)
    run = Run(cfg, model, store, device, initial, reference_psf)
    if isinstance(model.f, PsfLayer):
        blurred = crop_margin(torch.from_numpy(store.arrays["A_train"]), store.margin)
        model.f.match_intensity(torch.from_numpy(store.arrays["B_train"][:, None]), blurred,
                                float(noise.variance(blurred).mean()) if noise is not None else 0.0,
                                margin=store.margin)
    run.resume(out_dir / CHECKPOINT)
    run.loop(out_dir)
    return run.write_outputs(out_dir)


def resident(patches: np.ndarray, device: torch.device) -> torch.Tensor:
    """A training set as a tensor where batches are drawn from: on a CUDA device when it takes at
    most a quarter of the device's free memory (copied there once for the whole run), else in host
    memory without a copy, each batch then sent on its own."""
    host = torch.from_numpy(patches)
    if device.type == "cuda" and host.nbytes <= torch.cuda.mem_get_info(device)[0] // 4:
        return host.to(device)
    return host


def check_receptive_field(cfg: TrainConfig, shape: tuple[int, ...], voxel_size: VoxelSize) -> None:
    """Warn when G cannot see as far as the PSF spreads light (per axis, in µm)."""
    reach = receptive_field(cfg.generator)
    short = [axis for axis, r, n in zip("zyx", reach, shape) if r < n // 2]
    if short:
        log.warning("G's receptive field %s voxels is smaller than the PSF radius %s along %s: it "
                    "cannot gather all the out-of-focus light; raise train.generator.depth",
                    reach, tuple(n // 2 for n in shape), ", ".join(short))


def lr_factor(step: int, optim: Any) -> float:
    """1 until decay_start, then linearly down to 0 at the last step."""
    start = optim.decay_begins
    if step < start:
        return 1.0
    return max(0.0, (optim.steps - step) / max(1, optim.steps - start))


def clip_generator_gradient(g: torch.nn.Module, max_norm: float, f: torch.nn.Module | None = None) -> float:
    """Clip G's gradient to `max_norm` (0: leave it), scale F's by the same factor, and return G's
    norm before clipping.

    A batch that sends G's gradient up by orders of magnitude sends the PSF's up with it; unscaled,
    that one step fills Adam's second-moment estimate of the PSF's parameters for thousands of steps,
    which holds the PSF wherever the spike pushed it."""
    norm = torch.nn.utils.get_total_norm([p.grad for p in g.parameters() if p.grad is not None])
    if max_norm > 0:
        scaled = [*g.parameters(), *(f.parameters() if f is not None else ())]
        torch.nn.utils.clip_grads_with_norm_([p for p in scaled if p.grad is not None], max_norm, norm)
    return float(norm)


class Run:
    """One training run's state: model, optimizers, sampler, log; resumable from a checkpoint."""

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

    @functools.cached_property
    def identity(self) -> dict[str, Any]:
        """What a checkpoint must share to be resumed: config, training data, starting kernel and
        architecture (constant for a run, so hashed once, not at every checkpoint)."""
        data = hashlib.sha256()
        for name in ARRAYS:
            data.update(np.ascontiguousarray(self.store.arrays[name]).tobytes())
        layers = {k: list(v.shape) for k, v in self.model.state_dict().items()}
        # the starting kernel by content: a psf.file rewritten under the same name (a rerun blind
        # stage before its refine stage) is another training
        kernel = hashlib.sha256(np.ascontiguousarray(self.initial).tobytes()).hexdigest() \
            if self.initial is not None else None
        return {"config": self.cfg.to_dict(), "patches_sha256": data.hexdigest(), "layers": layers,
                "initial_psf_sha256": kernel}

    def resume(self, path: Path) -> None:
        """Continue from checkpoint.pt when it belongs to this very training.

        A checkpoint of another training — the config, the patches (a stack was added to the
        campaign) or the code's architecture changed — is not resumed: training starts over and
        overwrites it, so the rule always produces the model its inputs describe.
        """
        if not path.exists():
            return
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as error:  # a torn or foreign file is as good as none
            log.warning("ignoring unreadable checkpoint %s (%s); starting over", path, load_failure(error, path))
            return
        if state.get("identity") != self.identity:
            log.warning("checkpoint %s belongs to another training (config, patches or model "
                        "changed); starting over", path)
            return
        self.model.load_state_dict(state["model"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sampler.set_state(state["rng"]["sampler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        self.step, self.rows = state["step"], state["log"]
        log.info("resuming from %s at step %d", path, self.step)

    def checkpoint(self, path: Path) -> None:
        atomic_save({
            "step": self.step, "identity": self.identity, "model": self.model.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "log": self.rows,
            "rng": {"sampler": self.sampler.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None},
        }, path)

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

    def loop(self, out_dir: Path) -> None:
        steps = self.cfg.optim.steps
        bar = tqdm(total=steps, initial=self.step, desc="train", unit="step", mininterval=5)
        started = time.perf_counter() - (self.rows[-1]["seconds"] if self.rows else 0.0)
        while self.step < steps:
            for opt, bases in zip((self.opt_g, self.opt_d), self.base_lrs):
                for group, base in zip(opt.param_groups, bases):
                    group["lr"] = base * lr_factor(self.step, self.cfg.optim)
            (y, y_room), (x, x_room) = self.batch("A_train"), self.batch("B_train")
            faces = Faces(self.cfg.ring_at_faces, y_room, x_room) if self.rooms else None
            terms = train_step(self, y, x, faces)
            check_finite(terms, self.step + 1)
            self.step += 1
            if self.step % self.cfg.log_every == 0 or self.step % self.cfg.val_every == 0 \
                    or self.step == steps:
                row = {"step": self.step, **terms, "lr_g": self.opt_g.param_groups[0]["lr"],
                       "seconds": time.perf_counter() - started}
                if self.step % self.cfg.val_every == 0 or self.step == steps:
                    row |= self.validate()
                self.rows.append(row)
                bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in PROGRESS})
            if self.step % self.cfg.checkpoint_every == 0 or self.step == steps:
                self.checkpoint(out_dir / CHECKPOINT)
            bar.update(1)
        bar.close()

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
            result["psf_ncc"] = psf_correlation(learned, self.reference)
        return result

    def write_outputs(self, out_dir: Path) -> Path:
        """model.pt, learned_psf.ome.tif, train_log.csv and the two figures; the learned PSF's
        sanity record (cycledecon.psf_sanity) is logged and stored in model.pt's metadata."""
        psf_shape = self.initial.shape if self.initial is not None else self.cfg.psf.shape_voxels
        learned = self.model.psf_estimate(psf_shape).cpu().numpy()
        write_ome_tiff(learned.astype(np.float32), out_dir / LEARNED_PSF, self.store.voxel_size)
        table = pd.DataFrame(self.rows)
        with atomic_path(out_dir / "train_log.csv") as tmp:
            table.to_csv(tmp, index=False)
        figures.loss_curves(table.drop(columns=["seconds", "lr_g"], errors="ignore"), out_dir / "loss_curves.png")
        label, other = ("reference", self.reference) if self.reference is not None else ("initial", self.initial)
        psfs = {"learned": learned} | ({label: other} if other is not None else {})
        figures.psf_panel(psfs, self.store.voxel_size, out_dir / "psf.png")
        sanity = psf_sanity(learned, self.store.voxel_size, self.store.optics)
        log_psf_sanity(sanity, str(out_dir / LEARNED_PSF))
        metadata = self.metadata() | {"psf_sanity": sanity}
        return save_model(out_dir / "model.pt", self.model.deblurrer, metadata, learned)

    @torch.no_grad()
    def intensity_map(self) -> dict[str, float] | None:
        """H's closed-form gain and offset for its final kernel (PSF layer only)."""
        if not isinstance(self.model.f, PsfLayer):
            return None
        return dict(zip(("gain", "offset"), map(float, self.model.f.intensity())))

    def metadata(self) -> dict[str, Any]:
        cfg = self.cfg.to_dict()
        return {
            "config": cfg, "generator": cfg["generator"], "model": self.cfg.model,
            "receptive_field": list(receptive_field(self.cfg.generator)),
            "psf_shape": list(self.initial.shape) if self.initial is not None else None,
            "context_voxels": list(self.store.margin),
            "patch_shape": list(self.store.patch_shape), "channels": 1,
            "normalization": self.store.normalization,
            "voxel_size": list(self.store.voxel_size.as_tuple()), "campaign": self.store.campaign,
            "optics": self.store.optics, "steps": self.step, "precision": self.precision.name,
            "noise_model": self.model.noise.to_dict() if self.model.noise is not None else None,
            "intensity_map": self.intensity_map(),
            "pupil": self.model.f.pupil.summary() if getattr(self.model.f, "pupil", None) is not None else None,
            "versions": {"cycledecon": cycledecon.__version__, "torch": str(torch.__version__),
                         "numpy": np.__version__, "zarr": zarr.__version__,
                         "python": platform.python_version()},
        }


def check_finite(terms: dict[str, float], step: int) -> None:
    """Stop at the first non-finite loss term: every later step, checkpoint and model would be NaN."""
    bad = sorted(name for name, value in terms.items() if not math.isfinite(value))
    if bad:
        raise CycledeconError(f"training diverged at step {step} ({', '.join(bad)} not finite); "
                              "try train.precision: fp32 or a lower learning rate")


def train_step(run: Run, y: torch.Tensor, x: torch.Tensor, faces: Faces | None = None) -> dict[str, float]:
    """One Adam step of G/F, then one of both discriminators; returns the loss terms."""
    model, cfg = run.model, run.cfg
    with run.precision.autocast(run.device):
        total, terms, fakes = model.generator_losses(y, x, cfg.loss, faces)
    run.opt_g.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = clip_generator_gradient(model.g, cfg.optim.generator_grad_clip, model.f)
    run.opt_g.step()
    with run.precision.autocast(run.device):
        d_total, d_terms = model.discriminator_losses(y, x, *fakes, cfg.loss)
    run.opt_d.zero_grad(set_to_none=True)
    d_total.backward()
    run.opt_d.step()
    model.after_step(run.step + 1, cfg.psf)
    return {"loss_g": float(total.detach()), **{k: float(v.detach()) for k, v in (terms | d_terms).items()},
            "grad_norm_g": grad_norm}

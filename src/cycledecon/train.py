"""Training: unpaired patches in, model.pt, the learned PSF, a loss log and two figures out.

`train()` reads the patch store, builds the cycle model from the kernel H starts from
(cycledecon.psf.kernel), and runs Adam with a linear learning-rate decay, one `train_step` per
step. Its parts: the run's state, batches and validation (cycledecon.train_state); checkpoint.pt,
written every `checkpoint_every` steps and resumed by a rerun into the same folder, which then ends
exactly where an uninterrupted run would have (cycledecon.train_checkpoint); the files a finished
run leaves (cycledecon.train_outputs).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cycledecon.config.train import RefineConfig, TrainConfig, parse_config
from cycledecon.errors import CycledeconError
from cycledecon.host_memory import reusing_freed_memory
from cycledecon.model.cyclegan import Faces, build_model
from cycledecon.model.unet import receptive_field
from cycledecon.noise import estimate_noise
from cycledecon.precision import resolve_device
from cycledecon.psf.kernel import kernel_room, starting_kernel
from cycledecon.psf.layer import PsfLayer, crop_margin
from cycledecon.train_checkpoint import CHECKPOINT, Checkpoint
from cycledecon.train_outputs import LEARNED_PSF, write_outputs
from cycledecon.train_state import PatchStore, TrainingState
from cycledecon.voxel import VoxelSize

log = logging.getLogger(__name__)

BLIND_STAGE = "blind"  # subdirectory of the first stage when `refine` adds a second
PROGRESS = ("cycle_sharp", "adv_a", "d_a", "psf_correlation")  # shown beside the progress bar


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
    state = TrainingState(cfg, model, store, device, initial, reference_psf)
    if isinstance(model.f, PsfLayer):
        blurred = crop_margin(torch.from_numpy(store.arrays["A_train"]), store.margin)
        model.f.match_intensity(torch.from_numpy(store.arrays["B_train"][:, None]), blurred,
                                float(noise.variance(blurred).mean()) if noise is not None else 0.0,
                                margin=store.margin)
    checkpoint = Checkpoint(out_dir / CHECKPOINT, state)
    checkpoint.resume()
    run_steps(state, checkpoint)
    return write_outputs(state, out_dir)


def run_steps(state: TrainingState, checkpoint: Checkpoint) -> None:
    """Train from the state's step to the last one: the learning-rate schedule, one `train_step`
    per step, a log row every `log_every` (with validation every `val_every`) and a checkpoint
    every `checkpoint_every` steps, and at the last step all three."""
    cfg, steps = state.cfg, state.cfg.optim.steps
    bar = tqdm(total=steps, initial=state.step, desc="train", unit="step", mininterval=5)
    started = time.perf_counter() - (state.rows[-1]["seconds"] if state.rows else 0.0)
    while state.step < steps:
        for opt, bases in zip((state.opt_g, state.opt_d), state.base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * lr_factor(state.step, cfg.optim)
        (y, y_room), (x, x_room) = state.batch("A_train"), state.batch("B_train")
        faces = Faces(cfg.ring_at_faces, y_room, x_room) if state.rooms else None
        terms = train_step(state, y, x, faces)
        check_finite(terms, state.step + 1)
        state.step += 1
        if state.step % cfg.log_every == 0 or state.step % cfg.val_every == 0 or state.step == steps:
            row = {"step": state.step, **terms, "lr_g": state.opt_g.param_groups[0]["lr"],
                   "seconds": time.perf_counter() - started}
            if state.step % cfg.val_every == 0 or state.step == steps:
                row |= state.validate()
            state.rows.append(row)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in PROGRESS})
        if state.step % cfg.checkpoint_every == 0 or state.step == steps:
            checkpoint.save()
        bar.update(1)
    bar.close()


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


def check_finite(terms: dict[str, float], step: int) -> None:
    """Stop at the first non-finite loss term: every later step, checkpoint and model would be NaN."""
    bad = sorted(name for name, value in terms.items() if not math.isfinite(value))
    if bad:
        raise CycledeconError(f"training diverged at step {step} ({', '.join(bad)} not finite); "
                              "try train.precision: fp32 or a lower learning rate")


def train_step(state: TrainingState, y: torch.Tensor, x: torch.Tensor, faces: Faces | None = None) -> dict[str, float]:
    """One Adam step of G/F, then one of both discriminators; returns the loss terms."""
    model, cfg = state.model, state.cfg
    with state.precision.autocast(state.device):
        total, terms, fakes = model.generator_losses(y, x, cfg.loss, faces)
    state.opt_g.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = clip_generator_gradient(model.g, cfg.optim.generator_grad_clip, model.f)
    state.opt_g.step()
    with state.precision.autocast(state.device):
        d_total, d_terms = model.discriminator_losses(y, x, *fakes, cfg.loss)
    state.opt_d.zero_grad(set_to_none=True)
    d_total.backward()
    state.opt_d.step()
    model.after_step(state.step + 1, cfg.psf)
    return {"loss_g": float(total.detach()), **{k: float(v.detach()) for k, v in (terms | d_terms).items()},
            "grad_norm_g": grad_norm}

"""The paired upper bound: cycledecon's generator trained *supervised*, on true (widefield, truth)
pairs from the benchmark's own image formation, then scored on a case's stacks like the network.

Not a method of the table (no user has such pairs): a diagnosis of what the generator can reach at
a given size and number of steps whatever its training signal. Where this oracle does not beat raw,
no loss or data fix of the unpaired method will at that size. Same U-Net, Adam settings, learning
rate schedule, weight average, batch and patch shape as the preset's cycledecon; only the loss
differs: L1 between G(widefield patch) and the truth patch, on fresh stacks of the case's
generator (seeds apart from the benchmark's samples, so nothing it is scored on is trained on).

    .venv/bin/python benchmarks/quality/oracle.py filaments_low --seeds 0 1 2
    .venv/bin/python benchmarks/quality/oracle.py filaments_low --generator '{"base_channels": 16}' --steps 400

Needs the case's data from a previous `run.py --quick` (same --work), as probe.py does.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline import REPO, quick_case
from scoring import CaseData, image_scores
from suite import CASES, deep_update

from cycledecon.config.deconvolve import parse_inference_config
from cycledecon.config.demo import parse_demo_config
from cycledecon.config.patches import PatchConfig, parse_patch_config
from cycledecon.config.train import parse_config
from cycledecon.demo import sample_rng, true_psf, widefield_stack
from cycledecon.deconvolve import face_padding_voxels, reference_output
from cycledecon.model.unet import UNet3d
from cycledecon.normalize import normalize_array
from cycledecon.patches import foreground_level
from cycledecon.train import clip_generator_gradient, lr_factor


@dataclass(frozen=True)
class Pair:
    """One normalized widefield stack, its normalized truth and the truth's foreground level."""

    widefield: np.ndarray
    truth: np.ndarray
    foreground: float


def training_pairs(config: dict[str, Any], patches: PatchConfig, count: int) -> list[Pair]:
    """`count` training pairs of the case's image formation."""
    settings = parse_demo_config(config["demo"])
    psf = true_psf(settings)

    def normalized(volume: np.ndarray) -> np.ndarray:
        return normalize_array(volume, settings.voxel_size, config["normalize"])[0].astype(np.float32)

    pairs = []
    for i in range(count):
        widefield, truth = widefield_stack(settings, psf, sample_rng(settings.seed, f"oracle_{i}"))
        truth = normalized(truth)
        pairs.append(Pair(normalized(widefield), truth, foreground_level(da.from_array(truth), patches)))
    return pairs


def random_batch(pairs: list[Pair], patches: PatchConfig, size: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` co-located (widefield, truth) patches from random stacks and places, each passing the
    benchmark's foreground filter on its truth patch, as the sharp references' patches do."""
    inputs, targets = [], []
    for _ in range(size * patches.max_tries):
        if len(inputs) == size:
            break
        pair = pairs[rng.integers(len(pairs))]
        corner = [rng.integers(0, n - p + 1) for n, p in zip(pair.widefield.shape, patches.shape)]
        where = tuple(slice(c, c + p) for c, p in zip(corner, patches.shape))
        # the test cycledecon.patches.sample_region applies to each drawn patch
        if np.mean(pair.truth[where] > pair.foreground) >= patches.min_foreground_fraction:
            inputs.append(pair.widefield[where])
            targets.append(pair.truth[where])
    if len(inputs) < size:
        raise SystemExit(f"error: only {len(inputs)} of {size} patches passed the foreground filter")
    return torch.from_numpy(np.stack(inputs)[:, None]), torch.from_numpy(np.stack(targets)[:, None])


def train_oracle(config: dict[str, Any], patches: PatchConfig, pairs: list[Pair], seed: int) -> torch.nn.Module:
    """G trained on the pairs with cycledecon's optimizer settings; returns its weight average."""
    cfg = parse_config(config["train"])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    g = UNet3d(cfg.generator)
    average = AveragedModel(g, multi_avg_fn=get_ema_multi_avg_fn(cfg.optim.generator_ema))
    opt = torch.optim.Adam(g.parameters(), lr=cfg.optim.lr_g, betas=cfg.optim.betas)
    for step in range(cfg.optim.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.optim.lr_g * lr_factor(step, cfg.optim)
        inputs, targets = random_batch(pairs, patches, cfg.optim.batch_size, rng)
        loss = (g(inputs) - targets).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_generator_gradient(g, cfg.optim.generator_grad_clip)
        opt.step()
        average.update_parameters(g)
    return average.module if cfg.optim.generator_ema > 0 else g


def deconvolved(g: torch.nn.Module, data: CaseData, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """G on each whole normalized stack, padded at its faces as blockwise inference pads it."""
    inference = parse_inference_config(config.get("deconvolve"))
    face = face_padding_voxels(config["train"]["generator"], inference.face_padding_voxels)
    return {sample: reference_output(normalize_array(raw, data.voxel_size, config["normalize"])[0], g, face,
                                     inference.face_padding_mode)
            for sample, raw in data.raws.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=[c.name for c in CASES])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--generator", type=json.loads, default={}, help="JSON merged over the preset's train.generator")
    parser.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    parser.add_argument("--pairs", type=int, default=12, help="training stacks")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "quality")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    case, config, data_dir = quick_case(args.work, args.case)
    extra = {"generator": args.generator} | ({"optim": {"steps": args.steps}} if args.steps else {})
    config = deep_update(config, {"train": extra})
    patches = parse_patch_config(config["patches"])
    data = CaseData.load(data_dir, case.sheet_optics, tuple(config["evaluate"]["theoretical_psf_shape"]))
    pairs = training_pairs(config, patches, args.pairs)
    raw = image_scores(data.raws, data.truths)["psnr_db"]
    for seed in args.seeds:
        start = time.perf_counter()
        g = train_oracle(config, patches, pairs, seed).eval()
        psnr = image_scores(deconvolved(g, data, config), data.truths)["psnr_db"]
        print(f"{case.name} oracle seed {seed}: PSNR {psnr:.2f} dB (raw {raw:.2f}, {psnr - raw:+.2f}); "
              f"generator {config['train']['generator']}, {config['train']['optim']['steps']} steps, "
              f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()

"""One trained variant of one case, with `train:` overrides, scored at once: the diagnosis tool
behind the "what changed" tables in notes/2026-12-07-quality-benchmark-log.md.

    .venv/bin/python benchmarks/quality/probe.py filaments --seed 1 \\
        --train '{"loss": {"cycle_blurred": 0}}'
    .venv/bin/python benchmarks/quality/probe.py filaments --train '{"psf": {"learnable": false}}' --frozen

It reuses the case's data from a previous `run.py --quick` (same --work), trains in this process on
those patches, deconvolves the case's three stacks and prints PSNR and SSIM against raw, and the
learned PSF's FWHM errors and correlation with the true PSF. Nothing is written to the results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import torch

import pipeline
from pipeline import REPO, Variant
from scoring import CaseData, fwhm_errors, image_scores, learned_psf, network_results
from suite import CASES, CYCLEDECON, NONBLIND, deep_update, variant_train

from cycledecon.psf_metrics import psf_correlation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=[c.name for c in CASES])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=json.loads, default={}, help="JSON merged over the preset's train: section")
    parser.add_argument("--frozen", action="store_true", help="freeze the PSF layer at the whole true PSF (non-blind)")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "quality")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    case, config, data = pipeline.quick_case(args.work, args.case)
    root = data.parent
    method = NONBLIND if args.frozen else CYCLEDECON
    train = deep_update(variant_train(config, method, args.seed, str(pipeline.frozen_psf(data))), args.train)
    # one directory per (overrides, frozen, seed), so probes of different variants can run side by side
    digest = hashlib.sha256(json.dumps([args.train, args.frozen], sort_keys=True).encode()).hexdigest()[:8]
    variant = Variant("probe", args.seed, root / f"probe_{digest}_s{args.seed}")
    shutil.rmtree(variant.directory, ignore_errors=True)
    wall = pipeline.train_and_deconvolve_in_process(variant, {**config, "train": train},
                                                    pipeline.sample_sheet(case.sheet_optics), data)

    case_data = CaseData.load(data, case.sheet_optics, tuple(config["evaluate"]["theoretical_psf_shape"]))
    network, raw = image_scores(network_results(variant), case_data.truths), image_scores(case_data.raws, case_data.truths)
    psf = learned_psf(variant)
    errors = fwhm_errors(psf, case_data.true_psf, case_data.voxel_size)
    print(f"{case.name} seed {args.seed}: PSNR {network['psnr_db']:.2f} dB (raw {raw['psnr_db']:.2f}, "
          f"{network['psnr_db'] - raw['psnr_db']:+.2f}), SSIM {network['ssim']:.3f} (raw {raw['ssim']:.3f}); "
          f"PSF FWHM error lateral {errors['fwhm_lateral_err_pct']:+.0f} %, axial {errors['fwhm_axial_err_pct']:+.0f} %, "
          f"correlation {psf_correlation(psf, case_data.true_psf):.3f}; train + deconvolve {wall:.0f} s")


if __name__ == "__main__":
    main()

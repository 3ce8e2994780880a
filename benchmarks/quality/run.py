"""Quality benchmark (issue 7): blind cycledecon against raw, Richardson–Lucy and a two-generator CycleGAN.

    .venv/bin/python benchmarks/quality/run.py --quick      # 2 CPU cores (2 jobs × 1 thread), about 70 minutes
    .venv/bin/python benchmarks/quality/run.py              # one GPU, the full sizes
    .venv/bin/python benchmarks/quality/run.py --quick --cases filaments puncta
    .venv/bin/python benchmarks/quality/run.py --quick --work /tmp/rerun --out /tmp/rerun-results \\
        --compare benchmarks/results/quality/scores.csv      # a rerun, checked against the committed scores

Every case (benchmarks/quality/suite.py) is a synthetic campaign made by the workflow's demo rule and
taken through ingest, normalize and patches by Snakemake; every trained method is then trained
with each seed on those same patches and deconvolves the same stacks (benchmarks/quality/pipeline.py),
and everything is scored with the library against the ground truth (benchmarks/quality/scoring.py).
Writes quality.md, and scores.csv, parts.json and two figures per case under quality/, into
benchmarks/results (--quick) or benchmarks/results/full. Rerunning reuses finished work under --work.
A preset can be run in parts, a few cases at a time (e.g. one per GPU session), with --add:

    .venv/bin/python benchmarks/quality/run.py --cases filaments_low --add
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline
import report
from pipeline import REPO, Variant
from scoring import LEARNED, METHODS, CaseData, RlKey, fixed_psfs, learned_psf, richardson_lucy_runs, score_case
from suite import (CASES, CYCLEDECON, PRESETS, REFINED, Case, Preset, case_config, deep_update, preset_settings,
                   variant_train)

from provenance import code_version, run_stamp

from cycledecon.atomic import atomic_path

RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"
RUNNERS = {"snakemake": pipeline.train_and_deconvolve, "in-process": pipeline.train_and_deconvolve_in_process}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the 2-core CPU preset (about 70 minutes)")
    parser.add_argument("--cases", nargs="+", choices=[c.name for c in CASES], help="a subset of the cases")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "quality")
    parser.add_argument("--out", type=Path, help="receives quality.md and quality/ (default: benchmarks/results "
                        "for --quick, benchmarks/results/full for the full preset)")
    parser.add_argument("--add", action="store_true",
                        help="keep the other cases already in --out: this run's cases replace theirs and "
                             "quality.md covers them all (a preset run in parts)")
    parser.add_argument("--variants", choices=sorted(RUNNERS),
                        help="how trained methods run (default: snakemake for the full preset, in-process "
                             "for --quick, where one Snakemake run per model costs more than its training)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each in-process training and deconvolution")
    parser.add_argument("--jobs", type=int, default=2,
                        help="(method, seed) variants trained at once, each in its own process; jobs × "
                             "threads should not exceed the cores (tiny models scale better across "
                             "processes than across threads)")
    parser.add_argument("--compare", type=Path, help="a previous scores.csv: print the largest differences")
    return parser.parse_args()


@dataclass
class CaseRun:
    """One case under way: its data, and the pool's work on it (trained variants and RL runs, these
    at the workflow's iteration count and the oracle's)."""

    case: Case
    data: CaseData
    rl_iterations: int
    submitted: list[tuple[Variant, Future]]
    rl: dict[RlKey, Future]


def start_case(case: Case, preset: Preset, base: dict, work: Path, runner, pool: ProcessPoolExecutor) -> CaseRun:
    """Make a case's data and queue its work in the pool: RL with the fixed PSFs, then every
    (method, seed). Returns at once (but for a refined variant, which waits for its blind run), so
    the next case's data is made while this one trains."""
    config = case_config(base, preset, case)
    root, sheet = work / preset.name / case.name, pipeline.sample_sheet(case.sheet_optics)
    data = root / "data"
    seconds = pipeline.make_data(data, config, sheet)
    print(f"[{case.name}] data (demo → patches, Snakemake): {seconds:.0f} s", flush=True)
    case_data = CaseData.load(data, case.sheet_optics, tuple(config["evaluate"]["theoretical_psf_shape"]))
    iterations = config["evaluate"]["rl_iterations"]
    rl = {key: pool.submit(richardson_lucy_runs, case_data, psf, iterations)
          for key, psf in fixed_psfs(case_data).items()}
    frozen = pipeline.frozen_psf(data)
    submitted = []
    for method in preset.methods:  # REFINED last: it waits for the blind variant of its seed
        for seed in preset.seeds:
            variant = Variant(method, seed, root / f"{method}_s{seed}")
            if method == REFINED:
                blind, future = next((v, f) for v, f in submitted if v.method == CYCLEDECON and v.seed == seed)
                future.result()
                pipeline.continue_from(blind, variant)
            train_config = variant_train(config, method, seed, str(frozen))
            submitted.append((variant, pool.submit(runner, variant, {**config, "train": train_config},
                                                   sheet, data)))
    return CaseRun(case, case_data, iterations, submitted, rl)


def finish_case(run: CaseRun, preset: Preset, figures_dir: Path, pool: ProcessPoolExecutor) -> pd.DataFrame:
    """Wait for a case's variants, queue RL with their learned PSFs, then score and draw the case;
    returns its score rows."""
    case, case_data = run.case, run.data
    variants = []
    for variant, future in run.submitted:
        wall = future.result()
        print(f"[{case.name}] {variant.method} seed {variant.seed}: training "
              f"{pipeline.training_seconds(variant):.0f} s, train + deconvolve {wall:.0f} s", flush=True)
        variants.append(variant)
        if variant.method == CYCLEDECON and preset.rl_with_learned(variant.seed):
            run.rl[(LEARNED, variant.seed)] = pool.submit(richardson_lucy_runs, case_data,
                                                          learned_psf(variant), run.rl_iterations)
    started = time.perf_counter()
    scorer = score_case(case.name, case_data, variants, pipeline.training_seconds,
                        {key: future.result() for key, future in run.rl.items()})
    first_learned = next(v for v in variants if v.method == CYCLEDECON)
    psfs = {"learned (seed 0)": learned_psf(first_learned), "theoretical": case_data.theoretical_psf,
            "true": case_data.true_psf}
    volumes = {m: scorer.figure[m] for m in METHODS if m in scorer.figure}
    first = pipeline.WIDEFIELD[0]
    report.case_figures(case.name, volumes, case_data.truths[first], psfs, case_data.voxel_size, figures_dir)
    print(f"[{case.name}] remaining RL, scores and figures: {time.perf_counter() - started:.0f} s", flush=True)
    return pd.DataFrame(scorer.rows)


def header(preset: Preset, base: dict, runner_name: str, jobs: int, seconds: float, commit: str) -> str:
    """What was run (the preset over the base config), where and how long it took."""
    settings = deep_update(base, preset_settings(preset))
    train, patches, psf = settings["train"], settings["patches"], settings["train"]["psf"]
    return (f"Preset `{preset.name}` (`benchmarks/quality/run.py{' --quick' if preset.name == 'quick' else ''}`), "
            f"{run_stamp('cuda', commit)}, {len(os.sched_getaffinity(0))} cores usable; "
            f"seeds {', '.join(map(str, preset.seeds))}; trained methods run {runner_name}, "
            f"{jobs} at a time ({torch.get_num_threads()} torch threads each); "
            f"stacks {settings['demo']['shape']} voxels, true PSF {settings['demo']['psf_shape']} (whole), "
            f"patches {patches['shape']} with a {patches['context_um']} µm context margin, "
            f"PSF layer `{psf['parameterization']}` holding {psf['energy']:.0%} of the theoretical PSF's energy, "
            f"U-Net depth {train['generator']['depth']} × {train['generator']['base_channels']} channels, "
            f"{train['optim']['steps']} steps of batch {train['optim']['batch_size']}. "
            f"Whole run: {seconds / 60:.1f} min.")


def earlier_parts(figures_dir: Path, preset: Preset) -> tuple[pd.DataFrame, list[dict]]:
    """The scores and parts an --add run keeps; none when --out holds no table yet."""
    scores_path, parts_path = figures_dir / "scores.csv", figures_dir / report.PARTS
    if not scores_path.exists():
        return pd.DataFrame(), []
    if not parts_path.exists():
        raise SystemExit(f"{parts_path}: missing, so --add cannot tell which preset {scores_path} holds")
    ledger = json.loads(parts_path.read_text())
    if ledger["preset"] != preset.name:
        raise SystemExit(f"{parts_path}: holds the {ledger['preset']} preset; --add cannot mix in {preset.name} "
                         f"runs (choose another --out)")
    return pd.read_csv(scores_path), ledger["parts"]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS["quick" if args.quick else "full"]
    out = args.out or (RESULTS if args.quick else RESULTS / "full")
    runner_name = args.variants or ("in-process" if args.quick else "snakemake")
    cases = [c for c in CASES if args.cases is None or c.name in args.cases]
    base = pipeline.base_config()
    figures_dir = out / "quality"
    earlier_scores, parts = earlier_parts(figures_dir, preset) if args.add else (pd.DataFrame(), [])
    commit = code_version()
    started = time.perf_counter()
    # spawn, not fork: a forked child inherits torch's thread pool in an undefined state
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(args.threads,)) as pool:
        # every case's data and training queued first, so the pool never waits for the next case's data
        runs = [start_case(c, preset, base, args.work, RUNNERS[runner_name], pool) for c in cases]
        scores = pd.concat([finish_case(r, preset, figures_dir, pool) for r in runs], ignore_index=True)
    seconds = time.perf_counter() - started
    part = {"cases": [c.name for c in cases], "header": header(preset, base, runner_name, args.jobs, seconds, commit)}
    table, parts = report.add_part(earlier_scores, parts, scores, part)
    present = [c for c in CASES if c.name in set(table["case"])]
    document = report.document(report.summarize(table), present, report.parts_header(parts))
    ledger = {"preset": preset.name, "parts": parts}
    # each file whole or not at all: an --add run reads scores.csv and parts.json back
    with atomic_path(figures_dir / "scores.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(figures_dir / report.PARTS) as tmp:
        tmp.write_text(json.dumps(ledger, indent=1, ensure_ascii=False) + "\n")
    with atomic_path(out / "quality.md") as tmp:
        tmp.write_text(document)
    if out == RESULTS:  # the committed quick run: the README shows its short table
        readme = report.readme_with_scores(README.read_text(), table)
        with atomic_path(README) as tmp:
            tmp.write_text(readme)
    print(document)
    if args.compare:
        differences = report.max_differences(scores, pd.read_csv(args.compare))
        print(f"largest |difference| to {args.compare}:\n{differences}")


if __name__ == "__main__":
    main()

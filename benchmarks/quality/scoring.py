"""Scoring one case: every method against the ground truth, and every PSF against the true one.

Metrics are the library's (`cycledecon.metrics.compare_to_truth`: PSNR and SSIM after the
least-squares affine intensity match), averaged over the case's widefield stacks. Richardson–Lucy
runs on the raw stacks (`cycledecon.baselines.richardson_lucy`); its iteration count is chosen for
every PSF by the best PSNR on the first stack (the rule of `cycledecon.baselines.best_iterations`) and used on
all of them, so every RL row is RL at its best: only "RL, true PSF" also knows the PSF, which makes
it the non-blind oracle. Every PSF is used at its full extent (the true one as the demo formed the
stacks with, the theoretical one at the same size, the learned one as exported). The RL runs are
made by the caller (`richardson_lucy_at_best`, keyed by row and seed), so they can run in worker
processes beside the training: with a whole widefield PSF they are a large share of a case's time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cycledecon.baselines import richardson_lucy
from cycledecon.evaluate import load
from cycledecon.psf import psf_from_optics
from cycledecon.metrics import compare_to_truth, match_intensity, psnr
from cycledecon.psf_metrics import fwhm
from cycledecon.voxel import VoxelSize

from pipeline import TRUE_PSF, WIDEFIELD, Variant
from suite import CYCLEDECON, NONBLIND, REFINED, TWO_GENERATORS

RAW = "raw"
RL_TRUE = "RL, true PSF (oracle)"
RL_THEORETICAL = "RL, theoretical PSF"
RL_LEARNED = "RL, learned PSF"
LABELS = {CYCLEDECON: "cycledecon", TWO_GENERATORS: "two-generator CycleGAN",
          NONBLIND: "cycledecon, true PSF frozen (non-blind)",
          REFINED: "cycledecon, refined (second stage through the learned PSF)"}
METHODS = (RAW, RL_TRUE, RL_THEORETICAL, RL_LEARNED, LABELS[TWO_GENERATORS], LABELS[CYCLEDECON],
           LABELS[NONBLIND], LABELS[REFINED])
RL_CANDIDATES = (5, 10, 20, 40, 80)

#: RL of every widefield stack, and the iteration count used
RlRun = tuple[dict[str, np.ndarray], int]
#: which RL row (RL_TRUE, RL_THEORETICAL, RL_LEARNED) and seed (None for the fixed PSFs) a run is
RlKey = tuple[str, int | None]


@dataclass(frozen=True)
class CaseData:
    """A case's raw stacks, their ground truths and its two known PSFs, in memory."""

    raws: dict[str, np.ndarray]
    truths: dict[str, np.ndarray]
    voxel_size: VoxelSize
    true_psf: np.ndarray
    theoretical_psf: np.ndarray

    @classmethod
    def load(cls, data: Path, sheet_optics: dict[str, float], psf_shape: tuple[int, int, int]) -> CaseData:
        demo = data / "resources" / "demo"
        raws = {s: load(demo / f"{s}.ome.tif")[0] for s in WIDEFIELD}
        truths = {s: load(demo / "truth" / f"{s}.ome.tif")[0] for s in WIDEFIELD}
        true_psf, voxel_size = load(data / TRUE_PSF)
        return cls(raws, truths, voxel_size, true_psf, psf_from_optics(psf_shape, voxel_size, sheet_optics))


def image_scores(results: dict[str, np.ndarray], truths: dict[str, np.ndarray]) -> dict[str, float]:
    """PSNR (dB) and SSIM of a method, averaged over the stacks whose truth holds any structure (a
    random phantom can leave a stack's field of view empty, where both scores are undefined)."""
    scores = [compare_to_truth(results[s], truth) for s, truth in truths.items() if np.ptp(truth) > 0]
    return {key: float(np.mean([s[key] for s in scores])) for key in ("psnr_db", "ssim")}


def fwhm_errors(psf: np.ndarray, true: np.ndarray, voxel_size: VoxelSize) -> dict[str, float]:
    """Signed relative error (%) of a PSF's lateral and axial FWHM against the true PSF's.

    NaN for a PSF that does not fall to half maximum inside its array (a failed learned kernel).
    """
    reference = fwhm(true, voxel_size)
    try:
        measured = fwhm(psf, voxel_size)
    except ValueError:
        measured = {"lateral_um": np.nan, "axial_um": np.nan}
    return {f"fwhm_{axis}_err_pct": 100 * (measured[f"{axis}_um"] / reference[f"{axis}_um"] - 1)
            for axis in ("lateral", "axial")}


def richardson_lucy_at_best(data: CaseData, psf: np.ndarray) -> RlRun:
    """RL of every stack with the iteration count that scores best on the first stack.

    The choice `cycledecon.baselines.best_iterations` makes (best PSNR after the intensity match,
    the smallest count on ties), made here so that the first stack's winning run is kept instead of
    being run again: with a whole widefield PSF every RL iteration is an expensive one."""
    first, truth = WIDEFIELD[0], data.truths[WIDEFIELD[0]]
    best: tuple[float, int, np.ndarray] | None = None
    for count in sorted(RL_CANDIDATES):
        result = richardson_lucy(data.raws[first], psf, count)
        score = psnr(match_intensity(result, truth), truth)
        if best is None or score > best[0]:  # strictly better: the smallest count wins a tie
            best = (score, count, result)
    _, iterations, result = best
    others = {s: richardson_lucy(raw, psf, iterations) for s, raw in data.raws.items() if s != first}
    return {first: result, **others}, iterations


def fixed_psfs(data: CaseData) -> dict[RlKey, np.ndarray]:
    """The PSFs RL runs with before any training: the true one, and the theoretical one unless it
    is the very same array (the sheet's optics are the true ones), which `rl_run` then answers
    with the true PSF's run."""
    if np.array_equal(data.theoretical_psf, data.true_psf):
        return {(RL_TRUE, None): data.true_psf}
    return {(RL_TRUE, None): data.true_psf, (RL_THEORETICAL, None): data.theoretical_psf}


def rl_run(rl: Mapping[RlKey, RlRun], key: RlKey) -> RlRun:
    """The run of `key` in `rl`; the theoretical PSF's is the true PSF's where `fixed_psfs` left it out."""
    if key == (RL_THEORETICAL, None) and key not in rl:
        return rl[(RL_TRUE, None)]
    return rl[key]


def network_results(variant: Variant) -> dict[str, np.ndarray]:
    return {s: load(variant.deconvolved(s))[0] for s in WIDEFIELD}


def learned_psf(variant: Variant) -> np.ndarray:
    return load(variant.model_dir / "learned_psf.ome.tif")[0]


@dataclass
class Scorer:
    """Collects one row per (method, seed) of a case, and the first stack of each method at seed 0."""

    case: str
    data: CaseData
    rows: list[dict]
    figure: dict[str, np.ndarray]

    def add(self, method: str, seed: int | None, results: dict[str, np.ndarray], **extra: float) -> None:
        self.rows.append({"case": self.case, "method": method, "seed": seed,
                          **image_scores(results, self.data.truths), **extra})
        if seed in (None, 0):
            self.figure[method] = results[WIDEFIELD[0]]

    def add_rl(self, method: str, seed: int | None, run: RlRun, **extra: float) -> None:
        results, iterations = run
        self.add(method, seed, results, rl_iterations=iterations, **extra)


def score_case(case: str, data: CaseData, variants: list[Variant], train_seconds: Callable[[Variant], float],
               rl: Mapping[RlKey, RlRun]) -> Scorer:
    """Every method of one case: the raw stack, the three RL baselines (their runs in `rl`: the
    fixed PSFs' and the learned PSF's of the cycledecon seeds it holds) and the trained variants."""
    scorer = Scorer(case, data, [], {})
    true_errors = fwhm_errors(data.true_psf, data.true_psf, data.voxel_size)
    scorer.add(RAW, None, data.raws)
    scorer.add_rl(RL_TRUE, None, rl_run(rl, (RL_TRUE, None)), **true_errors)
    scorer.add_rl(RL_THEORETICAL, None, rl_run(rl, (RL_THEORETICAL, None)),
                  **fwhm_errors(data.theoretical_psf, data.true_psf, data.voxel_size))
    for variant in variants:
        extra = {"train_s": train_seconds(variant)}
        if variant.method == CYCLEDECON:
            extra |= fwhm_errors(learned_psf(variant), data.true_psf, data.voxel_size)
            if (RL_LEARNED, variant.seed) in rl:
                scorer.add_rl(RL_LEARNED, variant.seed, rl[(RL_LEARNED, variant.seed)], **extra)
        scorer.add(LABELS[variant.method], variant.seed, network_results(variant), **extra)
    return scorer

"""Scoring one case: every method against the ground truth, and every PSF against the true one.

Metrics are the library's (`cycledecon.metrics.compare_to_truth`: PSNR and SSIM after the
least-squares affine intensity match), averaged over the case's widefield stacks. Richardson–Lucy
runs on the raw stacks (`cycledecon.baselines.richardson_lucy_series`) and gets two rows per PSF:
at the workflow's iteration count (`evaluate.rl_iterations`, what a user without ground truth
runs), and at the oracle's count, the one with the best PSNR on the first stack
(`cycledecon.baselines.oracle_choice`) used on all of them: RL at its best. RL with the true PSF
is the non-blind reference. Every PSF is used at its full extent (the true one as the demo formed
the stacks with, the theoretical one at the same size, the learned one as exported). The RL runs
are made by the caller (`richardson_lucy_runs`, keyed by PSF and seed), so they can run in worker
processes beside the training: with a whole widefield PSF they are a large share of a case's time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cycledecon.baselines import oracle_choice, richardson_lucy_series
from cycledecon.io import read_volume
from cycledecon.metrics import compare_to_truth
from cycledecon.psf.theory import psf_from_optics
from cycledecon.psf_metrics import fwhm
from cycledecon.voxel import VoxelSize

from pipeline import TRUE_PSF, WIDEFIELD, Variant
from suite import CYCLEDECON, NONBLIND, REFINED, TWO_GENERATORS

RAW = "raw"
#: the PSFs Richardson–Lucy runs with
TRUE, THEORETICAL, LEARNED = "true", "theoretical", "learned"
RL_PSFS = (TRUE, THEORETICAL, LEARNED)
LABELS = {CYCLEDECON: "cycledecon", TWO_GENERATORS: "two-generator CycleGAN",
          NONBLIND: "cycledecon, true PSF frozen (non-blind)",
          REFINED: "cycledecon, refined (second stage through the learned PSF)"}
RL_CANDIDATES = (5, 10, 20, 40, 80)


def rl_label(psf: str, oracle: bool = False) -> str:
    """The table's name of RL with one PSF, at the workflow's iteration count or at the oracle's."""
    return f"RL, {psf} PSF" + (", oracle iterations" if oracle else "")


METHODS = (RAW, *(rl_label(psf, oracle) for psf in RL_PSFS for oracle in (False, True)),
           LABELS[TWO_GENERATORS], LABELS[CYCLEDECON], LABELS[NONBLIND], LABELS[REFINED])


@dataclass(frozen=True)
class RlRun:
    """RL of every widefield stack with one PSF: at the workflow's iteration count, and at the
    oracle's (the best PSNR on the first stack)."""

    iterations: int
    results: dict[str, np.ndarray]
    oracle_iterations: int
    oracle_results: dict[str, np.ndarray]


#: which PSF (TRUE, THEORETICAL, LEARNED) and seed (None for the fixed PSFs) an RL run is made with
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
        raws = {s: read_volume(demo / f"{s}.ome.tif")[0] for s in WIDEFIELD}
        truths = {s: read_volume(demo / "truth" / f"{s}.ome.tif")[0] for s in WIDEFIELD}
        true_psf, voxel_size = read_volume(data / TRUE_PSF)
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


def richardson_lucy_runs(data: CaseData, psf: np.ndarray, iterations: int) -> RlRun:
    """RL of every stack at `iterations` and at the oracle's count.

    The oracle chooses among `RL_CANDIDATES` and `iterations` by the PSNR on the first stack
    (`cycledecon.baselines.oracle_choice`), so it never scores below the workflow's count there.
    Each stack is one RL run to the larger of the two counts (`richardson_lucy_series`): with a
    whole widefield PSF every iteration is an expensive one."""
    first = WIDEFIELD[0]
    series = richardson_lucy_series(data.raws[first], psf, {*RL_CANDIDATES, iterations})
    best, _ = oracle_choice(series, data.truths[first])
    runs = {s: series if s == first else richardson_lucy_series(raw, psf, {iterations, best})
            for s, raw in data.raws.items()}
    return RlRun(iterations, {s: run[iterations] for s, run in runs.items()},
                 best, {s: run[best] for s, run in runs.items()})


def fixed_psfs(data: CaseData) -> dict[RlKey, np.ndarray]:
    """The PSFs RL runs with before any training: the true one, and the theoretical one unless it
    is the very same array (the sheet's optics are the true ones), which `rl_run` then answers
    with the true PSF's run."""
    if np.array_equal(data.theoretical_psf, data.true_psf):
        return {(TRUE, None): data.true_psf}
    return {(TRUE, None): data.true_psf, (THEORETICAL, None): data.theoretical_psf}


def rl_run(rl: Mapping[RlKey, RlRun], key: RlKey) -> RlRun:
    """The run of `key` in `rl`; the theoretical PSF's is the true PSF's where `fixed_psfs` left it out."""
    if key == (THEORETICAL, None) and key not in rl:
        return rl[(TRUE, None)]
    return rl[key]


def network_results(variant: Variant) -> dict[str, np.ndarray]:
    return {s: read_volume(variant.deconvolved(s))[0] for s in WIDEFIELD}


def learned_psf(variant: Variant) -> np.ndarray:
    return read_volume(variant.model_dir / "learned_psf.ome.tif")[0]


@dataclass
class Scorer:
    """Collects one row per (method, seed) of a case, and the first stack of each method at seed 0
    (RL's at the workflow's iteration count only, as a user would see it)."""

    case: str
    data: CaseData
    rows: list[dict]
    figure: dict[str, np.ndarray]

    def add(self, method: str, seed: int | None, results: dict[str, np.ndarray], figure: bool = True,
            **extra: float) -> None:
        self.rows.append({"case": self.case, "method": method, "seed": seed,
                          **image_scores(results, self.data.truths), **extra})
        if figure and seed in (None, 0):
            self.figure[method] = results[WIDEFIELD[0]]

    def add_rl(self, psf: str, seed: int | None, run: RlRun, **extra: float) -> None:
        """RL's two rows with one PSF: the workflow's iteration count, and the oracle's."""
        self.add(rl_label(psf), seed, run.results, rl_iterations=run.iterations, **extra)
        self.add(rl_label(psf, oracle=True), seed, run.oracle_results, figure=False,
                 rl_iterations=run.oracle_iterations, **extra)


def score_case(case: str, data: CaseData, variants: list[Variant], train_seconds: Callable[[Variant], float],
               rl: Mapping[RlKey, RlRun]) -> Scorer:
    """Every method of one case: the raw stack, the three RL baselines (their runs in `rl`: the
    fixed PSFs' and the learned PSF's of the cycledecon seeds it holds) and the trained variants."""
    scorer = Scorer(case, data, [], {})
    true_errors = fwhm_errors(data.true_psf, data.true_psf, data.voxel_size)
    scorer.add(RAW, None, data.raws)
    scorer.add_rl(TRUE, None, rl_run(rl, (TRUE, None)), **true_errors)
    scorer.add_rl(THEORETICAL, None, rl_run(rl, (THEORETICAL, None)),
                  **fwhm_errors(data.theoretical_psf, data.true_psf, data.voxel_size))
    for variant in variants:
        extra = {"train_s": train_seconds(variant)}
        if variant.method == CYCLEDECON:
            extra |= fwhm_errors(learned_psf(variant), data.true_psf, data.voxel_size)
            if (LEARNED, variant.seed) in rl:
                scorer.add_rl(LEARNED, variant.seed, rl[(LEARNED, variant.seed)], **extra)
        scorer.add(LABELS[variant.method], variant.seed, network_results(variant), **extra)
    return scorer

"""The benchmark's outputs: the markdown table with per-case verdicts, and one figure pair per case."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cycledecon import figures
from cycledecon.methods import TRUTH
from cycledecon.voxel import VoxelSize

from scoring import LABELS, LEARNED, METHODS, RAW, RL_PSFS, THEORETICAL, TRUE, rl_label
from suite import CASES, CYCLEDECON, NONBLIND, TWO_GENERATORS, Case

METRICS = ("psnr_db", "ssim", "fwhm_lateral_err_pct", "fwhm_axial_err_pct", "rl_iterations", "train_s")
HEADERS = ("method", "PSNR (dB)", "SSIM", "FWHM error lateral (%)", "FWHM error axial (%)", "RL iterations",
           "training (s)")
FORMATS = {"psnr_db": ".2f", "ssim": ".3f", "fwhm_lateral_err_pct": "+.0f", "fwhm_axial_err_pct": "+.0f",
           "rl_iterations": ".0f", "train_s": ".0f"}


PARTS = "parts.json"  # beside scores.csv: the preset, and which run produced which cases


def add_part(scores: pd.DataFrame, parts: list[dict], new_scores: pd.DataFrame,
             new_part: dict) -> tuple[pd.DataFrame, list[dict]]:
    """Scores and parts after one more run: its cases replace the same cases of earlier runs."""
    rerun = set(new_part["cases"])
    kept = [scores[~scores["case"].isin(rerun)]] if len(scores) else []
    parts = [{**p, "cases": [c for c in p["cases"] if c not in rerun]} for p in parts]
    return pd.concat([*kept, new_scores], ignore_index=True), [p for p in parts if p["cases"]] + [new_part]


def parts_header(parts: list[dict]) -> str:
    """What was run: one run's header, or one line per part of a preset run in parts."""
    if len(parts) == 1:
        return parts[0]["header"]
    return "\n".join([f"Run in {len(parts)} parts:", ""] +
                     [f"- {', '.join(p['cases'])}: {p['header']}" for p in parts])


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation over seeds (0 for deterministic methods) and count per (case, method)."""
    columns = [c for c in METRICS if c in scores]
    grouped = scores.groupby(["case", "method"], sort=False)[columns]
    return grouped.mean().join(grouped.std(ddof=1).fillna(0.0).add_suffix("_sd")).join(grouped.size().rename("n"))


def cell(row: pd.Series, metric: str) -> str:
    """`mean ± sd` over seeds, the bare value for one run, a dash where the method has no such number."""
    mean = row.get(metric, np.nan)
    if pd.isna(mean):
        return "–"
    text = format(mean, FORMATS[metric])
    return f"{text} ± {format(row[f'{metric}_sd'], FORMATS[metric].lstrip('+'))}" if row["n"] > 1 else text


#: How much mean PSNR RL with another PSF may gain over RL with the true PSF, at the same iteration
#: rule, before the case is flagged. The true PSF is the right model, but RL stopped early is
#: regularized by its iteration count, and a PSF a few percent off changes that regularization a
#: little: a tie band, not a win. A larger gain points at an error of RL's model (its boundaries,
#: its offset) that the other PSF happens to offset, and is flagged instead of counted for that PSF.
ORACLE_TOLERANCE_DB = 0.2
FLAG = "⚠"


@dataclass(frozen=True)
class OracleBreach:
    """An RL row that beats RL with the true PSF at the same iteration rule beyond the tolerance."""

    method: str
    reference: str
    excess_db: float

    def note(self) -> str:
        return (f"{FLAG} oracle check: {self.method} scores {self.excess_db:+.2f} dB PSNR over {self.reference}, "
                f"beyond the {ORACLE_TOLERANCE_DB} dB tolerance: an artefact of RL's model, not a better PSF, "
                "and not counted as a win for that PSF")


def oracle_breaches(summary: pd.DataFrame, case: str) -> list[OracleBreach]:
    """The RL rows of `case` that fail the oracle check (`ORACLE_TOLERANCE_DB`)."""
    breaches = []
    for oracle in (False, True):
        reference = rl_label(TRUE, oracle)
        for psf in RL_PSFS[1:]:
            method = rl_label(psf, oracle)
            if (case, method) in summary.index and (case, reference) in summary.index:
                excess = compare(summary, case, method, reference)[0]
                if excess > ORACLE_TOLERANCE_DB:
                    breaches.append(OracleBreach(method, reference, excess))
    return breaches


def flagged(summary: pd.DataFrame, case: str) -> set[str]:
    """The methods of `case` that the oracle check flags."""
    return {breach.method for breach in oracle_breaches(summary, case)}


def case_table(summary: pd.DataFrame, case: str) -> str:
    """A case's full table; rows flagged by the oracle check carry a mark and a note below."""
    marked = flagged(summary, case)
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for method in METHODS:
        if (case, method) in summary.index:
            row = summary.loc[(case, method)]
            name = f"{method} {FLAG}" if method in marked else method
            lines.append(f"| {name} | " + " | ".join(cell(row, m) for m in METRICS) + " |")
    notes = [breach.note() + "." for breach in oracle_breaches(summary, case)]
    return "\n".join(lines + ([""] + notes if notes else []))


VERDICT_METRICS = (("psnr_db", "PSNR", ".2f", " dB"), ("ssim", "SSIM", ".3f", ""))


def compare(summary: pd.DataFrame, case: str, method: str, other: str,
            metric: str = "psnr_db") -> tuple[float, str]:
    """Difference `method − other` in `metric`, and whether it exceeds the combined seed spread."""
    a, b = summary.loc[(case, method)], summary.loc[(case, other)]
    difference = a[metric] - b[metric]
    spread = float(np.hypot(a[f"{metric}_sd"], b[f"{metric}_sd"]))
    word = "yes" if difference > spread else "no" if difference < -spread else "tie (within the seed spread)"
    return float(difference), word


def verdict(summary: pd.DataFrame, case: str) -> str:
    """The issue's four questions for one case, answered from mean PSNR and mean SSIM ± seed spread.

    Both metrics, because they part ways where the GAN sharpens: at 60 photons cycledecon loses to
    raw in PSNR and beats it in SSIM."""
    ours, marked = LABELS[CYCLEDECON], flagged(summary, case)
    parts = []
    for question, other in (("beats raw", RAW), ("beats RL with the theoretical PSF", rl_label(THEORETICAL)),
                            ("beats the two-generator CycleGAN", LABELS[TWO_GENERATORS])):
        if (case, other) not in summary.index:
            continue  # a method this preset does not run
        answers = []
        for metric, name, spec, unit in VERDICT_METRICS:
            difference, word = compare(summary, case, ours, other, metric)
            answers.append(f"{name} **{word}** ({difference:+{spec}}{unit})")
        caveat = f" ({other} fails the oracle check)" if other in marked else ""
        parts.append(f"{question}: " + ", ".join(answers) + caveat)
    gaps = [f"{compare(summary, case, ours, rl_label(TRUE, oracle=True), metric)[0]:+{spec}}{unit} {name}"
            for metric, name, spec, unit in VERDICT_METRICS]
    parts.append("distance to the RL oracle (true PSF, oracle iterations): " + ", ".join(gaps))
    return "; ".join(parts) + "."


def overview(summary: pd.DataFrame, cases: list[Case]) -> str:
    """One line per case: PSNR of every method, a mark on RL rows the oracle check flags."""
    present = set(summary.index.get_level_values("method"))
    methods = [m for m in METHODS if m in present]
    header = ["case", *methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in cases:
        marked = flagged(summary, case.name)
        cells = [(cell(summary.loc[(case.name, m)], "psnr_db") + (f" {FLAG}" if m in marked else ""))
                 if (case.name, m) in summary.index else "–" for m in methods]
        lines.append(f"| {case.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The README's short table: the methods a user chooses between, at the workflow's settings.
README_METHODS = (RAW, rl_label(THEORETICAL), rl_label(LEARNED), LABELS[CYCLEDECON], LABELS[NONBLIND])
#: The lines around that table in README.md, which the quick preset's run rewrites.
README_START = "<!-- quality table: written by benchmarks/quality/run.py --quick -->"
README_END = "<!-- end of quality table -->"


def readme_table(summary: pd.DataFrame, cases: list[Case]) -> str:
    """The README's results: mean PSNR per case of README_METHODS."""
    present = set(summary.index.get_level_values("method"))
    methods = [m for m in README_METHODS if m in present]
    lines = ["| case | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 1)]
    for case in cases:
        cells = [cell(summary.loc[(case.name, m)], "psnr_db") if (case.name, m) in summary.index else "–"
                 for m in methods]
        lines.append(f"| {case.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def readme_with_scores(readme: str, scores: pd.DataFrame) -> str:
    """`readme` with its results table made from `scores`, for every case of the suite they cover."""
    cases = [case for case in CASES if case.name in set(scores["case"])]
    return with_readme_table(readme, readme_table(summarize(scores), cases))


def with_readme_table(readme: str, table: str) -> str:
    """`readme` with the lines between README_START and README_END replaced by `table`."""
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    return f"{readme[:start]}\n{table}\n{readme[end:]}"


def oracle_summary(summary: pd.DataFrame, cases: list[Case]) -> str:
    """The oracle check over all cases: its rule, and every breach or none."""
    rule = (f"Oracle check: RL with the true PSF must not lose to RL with another PSF at the same iteration "
            f"rule by more than {ORACLE_TOLERANCE_DB} dB mean PSNR (a tie band; see `report.ORACLE_TOLERANCE_DB`).")
    breaches = [f"- **{case.name}**: {breach.note()}." for case in cases
                for breach in oracle_breaches(summary, case.name)]
    return "\n".join([rule, "", *breaches] if breaches else [rule + " No case breaks it."])


def case_figures(case: str, volumes: dict[str, np.ndarray], truth: np.ndarray, psfs: dict[str, np.ndarray],
                 voxel_size: VoxelSize, directory: Path) -> list[Path]:
    """Orthoslices of every method on the case's first stack (seed 0), and its PSFs."""
    panel = figures.orthoslice_panel({**volumes, TRUTH: truth}, voxel_size, directory / f"{case}_slices.png",
                                     title=f"{case}: first widefield stack, seed 0", reference=TRUTH)
    return [panel, figures.psf_panel(psfs, voxel_size, directory / f"{case}_psf.png")]


def max_differences(new: pd.DataFrame, old: pd.DataFrame) -> pd.DataFrame:
    """Largest |new − old| per method and metric between two runs' scores (a rerun check)."""
    keys = ["case", "method", "seed"]
    merged = new.merge(old, on=keys, suffixes=("", "_old"))
    columns = [c for c in ("psnr_db", "ssim") if f"{c}_old" in merged]
    differences = pd.DataFrame({c: (merged[c] - merged[f"{c}_old"]).abs() for c in columns})
    return differences.assign(method=merged["method"]).groupby("method", sort=False).max()


def document(summary: pd.DataFrame, cases: list[Case], header: str) -> str:
    """quality.md: what ran, the overview, the verdicts, then each case's full table and figures."""
    parts = ["# Quality benchmark", "", header, "",
             "PSNR and SSIM against the ground truth after the least-squares affine intensity match, averaged "
             "over a case's three widefield stacks; mean ± standard deviation over the seeds for trained "
             "methods and for RL with the learned PSF (seed 0's alone in the quick preset). Richardson–Lucy "
             "runs with every PSF at its full extent, on a domain extended beyond the stack, twice: at the "
             "workflow's iteration count (`evaluate.rl_iterations`, no ground truth needed) and at the count "
             "with the best PSNR on the first stack (\"oracle iterations\", a choice only the ground truth "
             "allows); with the true PSF it is the non-blind reference. FWHM errors are signed, relative to "
             "the true PSF. How to read and rerun this: benchmarks/quality/README.md.", "",
             "## PSNR (dB) per case", "", overview(summary, cases), "", oracle_summary(summary, cases), "",
             "## Verdicts (cycledecon, by mean PSNR and mean SSIM; 'yes' or 'no' only beyond the combined "
             "seed spread)", ""]
    parts += [f"- **{case.name}**: {verdict(summary, case.name)}" for case in cases]
    for case in cases:
        parts += ["", f"## {case.name}: {case.label}", "", case_table(summary, case.name), "",
                  f"![{case.name} slices](quality/{case.name}_slices.png)",
                  f"![{case.name} PSFs](quality/{case.name}_psf.png)"]
    return "\n".join(parts) + "\n"

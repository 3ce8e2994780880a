"""The summary of every campaign's metrics: results/summary.md for people who read text, and an HTML
page that the Snakemake report shows inline (it shows CSV tables only as downloads).

Both say what each number means, report an FRC value that sits on its floor as "≤ floor" (the finest
period the voxel size lets it measure, not a measurement), and open with warnings: a learned PSF that
fails its sanity checks (cycledecon.psf_sanity: collapsed onto one voxel, narrower than the
diffraction limit of the sheet's optics, cut short by its support) and a network whose noise/artefact
gain is above NOISE_GAIN_LIMIT. write_summary also logs each warning (logger cycledecon.summary), so
the summary rule's log holds them.
"""

from __future__ import annotations

import functools
import html
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cycledecon.atomic import atomic_path
from cycledecon.io import read_stack
from cycledecon.methods import CYCLEDECON
from cycledecon.metrics import NOISE_GAIN_LIMIT
from cycledecon.psf_sanity import COLLAPSE_SHARE, SUB_DIFFRACTION_MARGIN, diffraction_limits_um, psf_sanity
from cycledecon.voxel import VoxelSize

log = logging.getLogger(__name__)

METRIC_COLUMNS = {
    "psnr_db": "PSNR (dB)",
    "ssim": "SSIM",
    "nrmse": "NRMSE",
    "pearson_r": "Pearson r",
    "false_signal_pct": "false signal (% of range, where the truth is empty)",
    "false_signal_faces_pct": "false signal, first and last planes (%)",
    "frc_resolution_um": "FRC resolution (µm)",
    "background_std_ratio": "noise/artefact gain (background std ratio)",
}
PSF_COLUMNS = {
    "psf": "PSF",
    "lateral_fwhm_um": "lateral FWHM (µm)",
    "axial_fwhm_um": "axial FWHM (µm)",
    "correlation_to_true": "correlation with the true PSF",
    "true_energy_in_box": "true PSF energy in its box",
}
FRC = METRIC_COLUMNS["frc_resolution_um"]

EXPLANATION = [
    "Ground-truth metrics (PSNR, SSIM, NRMSE, Pearson r) compare each result with the ground truth after "
    "a least-squares affine intensity fit; they exist only where ground truth does (synthetic data).",
    "The FRC resolution is a one-image Fourier ring correlation estimate (lateral, 1/7 threshold): smaller "
    "is sharper, but a denoised output can read optimistic. It cannot go below 4 voxels (4·dx), the finest "
    "period it can measure: a value on that floor is shown as \"≤ floor\" — the result is at least that "
    "sharp, by how much the FRC cannot tell. A mean over samples of which any sits on the floor is shown "
    "the same way.",
    "The noise/artefact gain (background std ratio) is the output's standard deviation over the input's "
    "on background-only voxels (the dimmest 20 % of the smoothed input). Above "
    f"{NOISE_GAIN_LIMIT:g}, the method amplified noise or added artefacts (speckle, ringing) where the "
    "input holds only background; below 1, it smoothed the background. It does not detect hallucination "
    "— new structure that the sample does not have — which only a comparison with ground truth shows.",
    "PSF similarity: Pearson's correlation of two PSFs over the full extent of the larger, both "
    "zero-padded to it with their brightest voxels aligned; \"true PSF energy in its box\" is the share of "
    "the true PSF's energy inside a box of that PSF's size (a kernel can only model the blur its box "
    "holds). The diffraction limits are the FWHM of a diffraction-limited widefield PSF: laterally "
    "0.51·λ/NA, axially 0.88·λ/(n − √(n² − NA²)) (λ the emission wavelength, NA the objective's numerical "
    "aperture, n the immersion medium's refractive index); a learned PSF more than "
    f"{1 - SUB_DIFFRACTION_MARGIN:.0%} narrower (beyond the width measurement's error) cannot be the "
    f"microscope's. A learned PSF whose brightest voxel holds more than {COLLAPSE_SHARE:.0%} of its energy "
    "is at most about one voxel wide along every axis: it has collapsed towards a point.",
]


@dataclass(frozen=True)
class CampaignSummary:
    """One campaign's tables, and what is needed to read them: the voxel size (for the FRC floor),
    the optics of the sample sheet (for the diffraction limit) and the learned PSF (for its sanity)."""

    name: str
    metrics: pd.DataFrame
    psf: pd.DataFrame
    voxel_size: VoxelSize | None = None
    optics: dict | None = None
    source: str = ""
    learned_psf: np.ndarray | None = None

    @functools.cached_property
    def sanity(self) -> dict[str, Any] | None:
        """The learned PSF's sanity record (cycledecon.psf_sanity), None without the PSF."""
        if self.learned_psf is None or self.voxel_size is None:
            return None
        return psf_sanity(self.learned_psf, self.voxel_size, self.optics)

    @property
    def warnings(self) -> list[str]:
        psf = self.sanity["warnings"] if self.sanity is not None else []
        return psf + noise_gain_warnings(self.metrics)

    @property
    def frc_floor(self) -> float | None:
        return frc_floor_um(self.voxel_size) if self.voxel_size is not None else None


def frc_floor_um(voxel_size: VoxelSize) -> float:
    """The smallest value `cycledecon.metrics.frc_resolution` returns: 4 lateral voxels, in µm."""
    return 4 * max(voxel_size.y, voxel_size.x)


def noise_gain_warnings(metrics: pd.DataFrame) -> list[str]:
    """A warning when the network's noise/artefact gain is above NOISE_GAIN_LIMIT in any sample."""
    if "background_std_ratio" not in metrics.columns:
        return []
    rows = metrics[(metrics["method"] == CYCLEDECON) & (metrics["background_std_ratio"] > NOISE_GAIN_LIMIT)]
    if rows.empty:
        return []
    samples = "; ".join(f"sample {s}: {v:.3g}" for s, v in zip(rows["sample"], rows["background_std_ratio"]))
    return [
        f"The network's noise/artefact gain (background std ratio) is above {NOISE_GAIN_LIMIT:g} ({samples}): "
        "it amplified noise or added artefacts where the input holds only background. Try: the PSF "
        "warnings above, if any (a collapsed or too narrow PSF leaves the network a blur it does not "
        "model); the noise model (train.noise: estimate); more training steps (train.optim.steps)."
    ]


def _at_floor(values: pd.Series, floor: float | None) -> pd.Series:
    """Which FRC values sit on the floor (equal to it up to round-off in the CSV)."""
    if floor is None:
        return pd.Series(False, index=values.index)
    return values <= floor * (1 + 1e-5)


def _frc_text(value: float, on_floor: bool) -> str:
    """An FRC value for a table: "≤ value" on the floor, "not measurable" when it starts below threshold."""
    if math.isinf(value):
        return "not measurable"
    return f"≤ {value:.3g}" if on_floor else f"{value:.3g}"


def _formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers to 3 significant digits, missing values as a dash; text as it is."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "—" if math.isnan(value) else f"{value:.3g}"
        return str(value)

    return frame.astype(object).map(cell)


def mean_table(campaign: CampaignSummary) -> pd.DataFrame:
    """The metrics averaged over samples, one row per method (pipeline order), readable headers."""
    metrics = campaign.metrics
    order = list(dict.fromkeys(metrics["method"]))
    columns = [c for c in METRIC_COLUMNS if c in metrics.columns]
    mean = metrics.groupby("method", sort=False)[columns].mean().reindex(order)
    if "frc_resolution_um" in columns:
        floored = _at_floor(metrics["frc_resolution_um"], campaign.frc_floor).groupby(metrics["method"]).any()
        mean["frc_resolution_um"] = [_frc_text(v, floored[m]) for m, v in mean["frc_resolution_um"].items()]
    return _formatted(mean.reset_index().rename(columns=METRIC_COLUMNS))


def sample_table(campaign: CampaignSummary) -> pd.DataFrame:
    """Every sample and method, readable headers, FRC floors marked."""
    metrics = campaign.metrics
    columns = ["sample", "method", *(c for c in METRIC_COLUMNS if c in metrics.columns)]
    table = metrics[columns].copy()
    if "frc_resolution_um" in columns:
        floored = _at_floor(table["frc_resolution_um"], campaign.frc_floor)
        table["frc_resolution_um"] = [_frc_text(v, f) for v, f in zip(table["frc_resolution_um"], floored)]
    return _formatted(table.rename(columns=METRIC_COLUMNS))


def psf_table(campaign: CampaignSummary) -> pd.DataFrame:
    """The PSF table with readable headers (tables of older runs lack some columns)."""
    columns = [c for c in PSF_COLUMNS if c in campaign.psf.columns]
    return _formatted(campaign.psf[columns].rename(columns=PSF_COLUMNS))


def campaign_notes(campaign: CampaignSummary) -> list[str]:
    """One-line facts a reader needs beside the tables: the FRC floor, the diffraction limits and
    the learned PSF's energy measures."""
    notes = []
    if campaign.frc_floor is not None:
        notes.append(f"FRC floor (4·dx) at this voxel size: {campaign.frc_floor:.3g} µm.")
    if campaign.optics is not None:
        optics = campaign.optics
        limits = diffraction_limits_um(optics)
        notes.append(
            f"Diffraction limits of the sheet's optics (λ = {optics['wavelength_nm']:g} nm, NA {optics['na']:g}, "
            f"n {optics['immersion_ri']:g}): lateral 0.51·λ/NA = {limits['lateral_um']:.3g} µm, axial "
            f"0.88·λ/(n − √(n² − NA²)) = {limits['axial_um']:.3g} µm."
        )
    if campaign.sanity is not None:
        notes.append(energy_note(campaign.sanity))
    return notes


def energy_note(sanity: dict[str, Any]) -> str:
    """The learned PSF's largest single-voxel and single-plane shares of its energy, in words."""
    theoretical = sanity["theoretical_peak_share"]
    beside = f" (theoretical PSF {theoretical:.1%})" if theoretical is not None else ""
    return (
        f"Learned PSF energy: its brightest voxel holds {sanity['peak_share']:.1%}{beside}, its brightest z "
        f"plane {max(sanity['plane_energy']):.1%} over {len(sanity['plane_energy'])} planes; above "
        f"{sanity['collapse_share']:.0%} in one voxel it has collapsed towards a point."
    )


def load_campaign(
    metrics_csv: Path, psf_csv: Path, learned_psf: Path | None = None, optics: dict | None = None
) -> CampaignSummary:
    """A campaign's tables from its CSVs; its voxel size and the PSF checked for sanity from its
    learned PSF (written at the campaign's voxel size)."""
    stack = read_stack(learned_psf) if learned_psf is not None else None
    return CampaignSummary(
        name=Path(metrics_csv).stem,
        metrics=pd.read_csv(metrics_csv),
        psf=pd.read_csv(psf_csv),
        voxel_size=stack.voxel_size if stack is not None else None,
        optics=optics,
        source=str(metrics_csv),
        learned_psf=np.asarray(stack.data) if stack is not None else None,
    )


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub-style table of text cells (pandas' to_markdown needs tabulate)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def summary_markdown(campaigns: list[CampaignSummary]) -> str:
    """The summary as Markdown: warnings first, then per campaign the mean metrics and the PSF table."""
    parts = ["# cycledecon summary", ""]
    parts += [f"**Warning ({c.name}):** {w}\n" for c in campaigns for w in c.warnings]
    parts += ["\n\n".join(EXPLANATION), ""]
    for campaign in campaigns:
        n_samples = campaign.metrics["sample"].nunique()
        parts += [
            f"## Campaign {campaign.name}",
            "",
            f"Mean over {n_samples} widefield sample(s); per-sample values in `{campaign.source}`.",
            "",
            _markdown(mean_table(campaign)),
            "",
            "### Point spread function",
            "",
            _markdown(psf_table(campaign)),
            "",
            *(f"{note}\n" for note in campaign_notes(campaign)),
        ]
    return "\n".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 75em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.95em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; text-align: center; } td:first-child, td:nth-child(2) { text-align: left; }
.warning { background: #fff3cd; border: 1px solid #e0a800; padding: 0.6em 1em; margin: 0.8em 0; }
p.note { color: #444; margin: 0.2em 0; }
"""


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0)


def summary_html(campaigns: list[CampaignSummary]) -> str:
    """The summary as a self-contained HTML page: warnings, tables per campaign, how to read them."""
    body = ["<h1>cycledecon summary</h1>"]
    body += [f'<div class="warning"><b>Warning ({html.escape(c.name)}):</b> {html.escape(w)}</div>'
             for c in campaigns for w in c.warnings]  # fmt: skip
    for campaign in campaigns:
        n_samples = campaign.metrics["sample"].nunique()
        body += [
            f"<h2>Campaign {html.escape(campaign.name)}</h2>",
            f"<h3>Mean over {n_samples} widefield sample(s)</h3>",
            _html_table(mean_table(campaign)),
            "<h3>Point spread function</h3>",
            _html_table(psf_table(campaign)),
            *(f'<p class="note">{html.escape(note)}</p>' for note in campaign_notes(campaign)),
            "<h3>Per sample</h3>",
            _html_table(sample_table(campaign)),
        ]
    body += ["<h2>How to read these tables</h2>", *(f"<p>{html.escape(p)}</p>" for p in EXPLANATION)]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>cycledecon summary</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_summary(
    metrics_csvs: list[Path],
    psf_csvs: list[Path],
    out: Path,
    learned_psfs: list[Path] | None = None,
    optics: list[dict | None] | None = None,
    page: Path | None = None,
) -> Path:
    """Write the Markdown summary to ``out`` and, when ``page`` is given, the HTML page.

    Lists run over campaigns in one order; ``learned_psfs`` give each campaign's voxel size (FRC
    floor) and ``optics`` its sample-sheet optics (diffraction limit), each None where unknown.
    """
    n = len(metrics_csvs)
    learned_psfs = learned_psfs or [None] * n
    optics = optics or [None] * n
    campaigns = [load_campaign(*args) for args in zip(metrics_csvs, psf_csvs, learned_psfs, optics)]
    for campaign in campaigns:
        for warning in campaign.warnings:
            log.warning("campaign %s: %s", campaign.name, warning)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(summary_markdown(campaigns))
    if page is not None:
        with atomic_path(page) as tmp:
            Path(tmp).write_text(summary_html(campaigns))
    return Path(out)

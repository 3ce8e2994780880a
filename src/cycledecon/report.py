"""results/summary.md: the metrics of every campaign as text, for people who read tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cycledecon.io import atomic_path

METRIC_COLUMNS = {
    "psnr_db": "PSNR (dB)",
    "ssim": "SSIM",
    "nrmse": "NRMSE",
    "pearson_r": "Pearson r",
    "frc_resolution_um": "FRC resolution (µm)",
    "background_std_ratio": "background std ratio",
}
PSF_COLUMNS = {
    "psf": "PSF",
    "lateral_fwhm_um": "lateral FWHM (µm)",
    "axial_fwhm_um": "axial FWHM (µm)",
    "ncc_to_true": "NCC to true PSF",
    "true_energy_in_box": "true PSF energy in its box",
}

EXPLANATION = """\
Ground-truth metrics (PSNR, SSIM, NRMSE, Pearson r) compare each result with the ground truth after a
least-squares affine intensity fit; they exist only where ground truth does (synthetic data). The FRC
resolution is a one-image Fourier ring correlation estimate (lateral, 1/7 threshold): smaller is
sharper, but a denoised output can read optimistic. The background std ratio is the output's standard
deviation over the input's on background-only voxels: well above 1 (> 1.5) means the method put
structure where there was none (hallucination), below 1 means it smoothed the background.
PSF similarity: the NCC is Pearson's correlation of two PSFs over the full extent of the larger, both
zero-padded to it with their brightest voxels aligned; "true PSF energy in its box" is the share of the
true PSF's energy inside a box of that PSF's size (a kernel can only model the blur its box holds).
"""


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub-style table without extra dependencies (pandas' to_markdown needs tabulate)."""
    cells = frame.astype(object).where(frame.notna(), "—")
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in cells.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def campaign_tables(metrics_csv: Path, psf_csv: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metrics averaged per method (in pipeline order) and the PSF table, with readable headers."""
    metrics = pd.read_csv(metrics_csv)
    order = list(dict.fromkeys(metrics["method"]))
    columns = [c for c in METRIC_COLUMNS if c in metrics.columns]
    mean = metrics.groupby("method", sort=False)[columns].mean().reindex(order).reset_index()
    psf = pd.read_csv(psf_csv)
    psf_columns = [c for c in PSF_COLUMNS if c in psf.columns]  # tables of older runs lack some
    return mean.rename(columns=METRIC_COLUMNS), psf[psf_columns].rename(columns=PSF_COLUMNS)


def write_summary(metrics_csvs: list[Path], psf_csvs: list[Path], out: Path) -> Path:
    """Write the one-page summary: per campaign, the mean metrics per method and the PSF table."""
    parts = ["# cycledecon summary", "", EXPLANATION]
    for metrics_csv, psf_csv in zip(metrics_csvs, psf_csvs):
        campaign = Path(metrics_csv).stem
        n_samples = pd.read_csv(metrics_csv)["sample"].nunique()
        metrics, psf = campaign_tables(Path(metrics_csv), Path(psf_csv))
        parts += [
            f"## Campaign {campaign}",
            "",
            f"Mean over {n_samples} widefield sample(s); per-sample values in `{metrics_csv}`.",
            "",
            _markdown(metrics),
            "",
            "### Point spread function",
            "",
            _markdown(psf),
            "",
        ]
    with atomic_path(out) as tmp:
        Path(tmp).write_text("\n".join(parts))
    return Path(out)

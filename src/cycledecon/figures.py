"""Figures for the evaluation report: orthoslices, a line profile, PSFs and training losses.

Every function draws on a bare `matplotlib.figure.Figure` (rendered by Agg, no pyplot and no
global backend switch), writes a PNG atomically (temporary sibling, then `os.replace`) and
returns the written path. Physical axes are in µm from the `VoxelSize`.

Volumes from different methods live in different intensity units. Before they share one display
range, each is mapped affinely so that its own 0.5 and 99.8 percentiles land on those of a
*reference* volume: the ground truth when the caller names it, else the first entry (by
convention the raw input). The display range is then the reference's 0.5–99.8 percentiles, and
every method gets the same contrast stretch. (A least-squares fit, as `cycledecon.metrics`
uses for scoring, would shrink a blurred volume fitted to sharp beads into a grey haze.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from scipy import ndimage as ndi

from cycledecon.psf_metrics import fwhm
from cycledecon.voxel import VoxelSize

DPI = 120
DISPLAY_PERCENTILES = (0.5, 99.8)
PSF_DECADES = 4  # PSF slices show four decades below the peak


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and return the path.

    Through `cycledecon.io.atomic_path`, like every other output: the same file mode (0666 less
    the umask; mkstemp made figures 0600), the same temporary sibling, removed when a killed run
    left it, and never replacing anything but a file.
    """
    from cycledecon.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _check_volumes(volumes: Mapping[str, np.ndarray], what: str = "volumes") -> None:
    if not volumes:
        raise ValueError(f"no {what} given")
    for name, volume in volumes.items():
        if np.ndim(volume) != 3:
            raise ValueError(f"{what[:-1]} {name!r} must be (z, y, x), got shape {np.shape(volume)}")


def _percentiles(volume: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(volume, DISPLAY_PERCENTILES)
    return float(low), float(high) if high > low else float(np.max(volume))


def _matched(volumes: Mapping[str, np.ndarray], reference: str | None) -> tuple[dict, str]:
    """Check that all volumes share one shape; map each onto the reference's percentiles (float32)."""
    _check_volumes(volumes)
    shapes = {name: np.shape(v) for name, v in volumes.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"volumes must have the same shape, got {shapes}")
    reference = next(iter(volumes)) if reference is None else reference
    if reference not in volumes:
        raise ValueError(f"reference {reference!r} is not one of {list(volumes)}")
    ref_low, ref_high = _percentiles(volumes[reference])
    matched = {}
    for name, volume in volumes.items():
        low, high = _percentiles(volume)
        scale = (ref_high - ref_low) / (high - low) if high > low else 0.0
        matched[name] = ((np.asarray(volume, dtype=np.float32) - low) * scale + ref_low).astype(np.float32)
    return matched, reference


def _brightest_small_structure(volume: np.ndarray) -> tuple[int, int, int]:
    """Voxel (z, y, x) of the strongest difference-of-Gaussians response (1 vs 3 voxels).

    The band-pass prefers small bright structures (beads, filaments) over large bright blobs.
    """
    v = np.asarray(volume, dtype=np.float32)
    response = ndi.gaussian_filter(v, 1.0) - ndi.gaussian_filter(v, 3.0)
    return tuple(int(i) for i in np.unravel_index(np.argmax(response), v.shape))


def _extent(n_cols: int, d_col: float, n_rows: int, d_row: float) -> tuple[float, float, float, float]:
    """imshow extent (µm) of an image with the origin at the top left pixel's corner."""
    return (0.0, n_cols * d_col, n_rows * d_row, 0.0)


def orthoslice_panel(
    volumes: Mapping[str, np.ndarray],
    voxel_size: VoxelSize,
    path: str | os.PathLike,
    title: str = "",
    reference: str | None = None,
) -> Path:
    """Orthogonal slices of every method side by side, in one display range.

    Columns are the methods in the given order (raw | RL | cycledecon | ground truth …). Rows
    are the XY, XZ and YZ slices through the brightest small structure of the reference, and
    the XY maximum projection. Every volume is matched to the reference's percentiles (see the
    module docstring).

    Parameters
    ----------
    volumes : name → (z, y, x) volume, all the same shape.
    voxel_size : voxel size in µm; sets the physical aspect and the µm axes.
    path : PNG to write.
    title : figure title.
    reference : key whose intensities and percentiles are used; default the first key.

    Returns
    -------
    path : the written PNG.
    """
    matched, reference = _matched(volumes, reference)
    vmin, vmax = _percentiles(matched[reference])
    z, y, x = _brightest_small_structure(matched[reference])
    nz, ny, nx = matched[reference].shape
    dz, dy, dx = voxel_size.as_tuple()
    rows = [  # (label, slicer, extent, x label, y label)
        (f"XY, z = {z * dz:.1f} µm", lambda v: v[z], _extent(nx, dx, ny, dy), "x (µm)", "y (µm)"),
        (f"XZ, y = {y * dy:.1f} µm", lambda v: v[:, y, :], _extent(nx, dx, nz, dz), "x (µm)", "z (µm)"),
        (f"YZ, x = {x * dx:.1f} µm", lambda v: v[:, :, x], _extent(ny, dy, nz, dz), "y (µm)", "z (µm)"),
        ("XY max projection", lambda v: v.max(axis=0), _extent(nx, dx, ny, dy), "x (µm)", "y (µm)"),
    ]
    fig = Figure(figsize=(2.4 * len(matched) + 0.8, 2.4 * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), len(matched), squeeze=False)
    for col, (name, volume) in enumerate(matched.items()):
        axes[0, col].set_title(name)
        for row, (label, slicer, extent, xlabel, ylabel) in enumerate(rows):
            ax = axes[row, col]
            ax.imshow(
                slicer(volume), cmap="gray", vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest"
            )
            ax.set_xlabel(xlabel, fontsize="small")
            ax.tick_params(labelsize="x-small")
            if col == 0:
                ax.set_ylabel(f"{label}\n{ylabel}", fontsize="small")
    fig.suptitle(title or f"orthoslices (display range: {reference} percentiles {DISPLAY_PERCENTILES})")
    return _save(fig, path)


def line_profile(
    volumes: Mapping[str, np.ndarray],
    voxel_size: VoxelSize,
    path: str | os.PathLike,
    reference: str | None = None,
    half_width_um: float = 2.0,
) -> Path:
    """Intensity along x across the brightest small structure of the reference, all methods.

    Parameters
    ----------
    volumes : name → (z, y, x) volume, all the same shape; matched to the reference's
        percentiles first.
    voxel_size : voxel size in µm.
    path : PNG to write.
    reference : key that picks the line and sets the intensities; default the first key.
    half_width_um : half length of the line (µm), clipped to the volume.

    Returns
    -------
    path : the written PNG.
    """
    matched, reference = _matched(volumes, reference)
    z, y, x = _brightest_small_structure(matched[reference])
    half = int(round(half_width_um / voxel_size.x))
    columns = np.arange(max(0, x - half), min(matched[reference].shape[2], x + half + 1))
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for name, volume in matched.items():
        ax.plot(columns * voxel_size.x, volume[z, y, columns], label=name, marker=".", markersize=3)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel(f"intensity ({reference} units, percentile-matched)")
    ax.set_title(f"line profile at z = {z * voxel_size.z:.2f} µm, y = {y * voxel_size.y:.2f} µm")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _fwhm_label(psf: np.ndarray, voxel_size: VoxelSize) -> dict[str, str]:
    """FWHM strings for titles; 'n/a' for a PSF that does not fall to half maximum."""
    try:
        widths = fwhm(psf, voxel_size)
    except ValueError:
        return {"axial_um": "n/a", "lateral_um": "n/a"}
    return {key: f"{value:.2f} µm" for key, value in widths.items()}


def psf_panel(psfs: Mapping[str, np.ndarray], voxel_size: VoxelSize, path: str | os.PathLike) -> Path:
    """Central XY, XZ and YZ slices through the peak of each PSF, with FWHMs in the titles, and
    every PSF's energy per plane in one plot below.

    Slices are on a log scale (PSF_DECADES decades below each PSF's maximum, with a colour bar):
    a widefield PSF's out-of-focus cone is orders of magnitude dimmer than its peak yet holds
    most of its light. The per-plane energy is each plane's share of the PSF's total, against z
    in µm from the peak: it shows how far the PSF spreads light between planes. Axes are in µm
    relative to the peak, shared per column, so PSFs of different sizes are shown at one scale.

    Parameters
    ----------
    psfs : name → (z, y, x) PSF (learned, theoretical, true …); sizes may differ.
    voxel_size : voxel size in µm of every PSF.
    path : PNG to write.

    Returns
    -------
    path : the written PNG.
    """
    _check_volumes(psfs, "PSFs")
    dz, dy, dx = voxel_size.as_tuple()
    fig = Figure(figsize=(9.0, 2.6 * len(psfs) + 2.6), layout="constrained")
    mosaic = [[f"{row}{col}" for col in "xyz"] for row in range(len(psfs))] + [["energy"] * 3]
    axes = fig.subplot_mosaic(mosaic)
    norm = LogNorm(vmin=10.0**-PSF_DECADES, vmax=1.0)
    for row, (name, psf) in enumerate(psfs.items()):
        psf = np.asarray(psf, dtype=np.float64)
        planes = psf.sum(axis=(1, 2)) / psf.sum()
        psf = np.clip(psf / psf.max(), 10.0**-PSF_DECADES, None)
        z, y, x = np.unravel_index(np.argmax(psf), psf.shape)
        nz, ny, nx = psf.shape
        ez = (nz - z - 0.5) * dz, (-z - 0.5) * dz  # bottom, top: z grows downwards
        ey = (ny - y - 0.5) * dy, (-y - 0.5) * dy
        ex = (-x - 0.5) * dx, (nx - x - 0.5) * dx
        widths = _fwhm_label(psf, voxel_size)
        panels = [
            (psf[z], (*ex, *ey), f"{name} XY\nlateral FWHM {widths['lateral_um']}", "x (µm)", "y (µm)"),
            (psf[:, y, :], (*ex, *ez), f"{name} XZ\naxial FWHM {widths['axial_um']}", "x (µm)", "z (µm)"),
            (psf[:, :, x], (ey[1], ey[0], *ez), f"{name} YZ", "y (µm)", "z (µm)"),
        ]
        for col, (image, extent, label, xlabel, ylabel) in zip("xyz", panels):
            ax = axes[f"{row}{col}"]
            shown = ax.imshow(image, cmap="magma", norm=norm, extent=extent, interpolation="nearest")
            ax.set_title(label, fontsize="small")
            ax.set_xlabel(xlabel, fontsize="small")
            ax.set_ylabel(ylabel, fontsize="small")
            ax.tick_params(labelsize="x-small")
        fig.colorbar(shown, ax=[axes[f"{row}{col}"] for col in "xyz"], label="relative to peak",
                     shrink=0.9).ax.tick_params(labelsize="x-small")
        axes["energy"].plot((np.arange(nz) - z) * dz, planes, marker=".", label=name)
    axes["energy"].set_xlabel("z from the peak (µm)", fontsize="small")
    axes["energy"].set_ylabel("share of the PSF's energy", fontsize="small")
    axes["energy"].set_ylim(bottom=0)
    axes["energy"].set_title("energy per plane", fontsize="small")
    axes["energy"].legend(fontsize="x-small")
    axes["energy"].tick_params(labelsize="x-small")
    return _save(fig, path)


def loss_curves(log: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Training losses against step: one panel per numeric column, log-y where all positive.

    Parameters
    ----------
    log : frame like ``train_log.csv``: a ``step`` column and one column per logged loss;
        missing values (losses logged at other intervals) are skipped.
    path : PNG to write.

    Returns
    -------
    path : the written PNG.
    """
    if "step" not in log.columns:
        raise ValueError(f"training log needs a 'step' column, got {list(log.columns)}")
    losses = [c for c in log.select_dtypes("number").columns if c != "step"]
    if log.empty or not losses:
        raise ValueError("training log has no rows or no numeric loss columns")
    fig = Figure(figsize=(6.4, 1.8 * len(losses) + 0.6), layout="constrained")
    axes = fig.subplots(len(losses), 1, squeeze=False, sharex=True)[:, 0]
    for ax, column in zip(axes, losses):
        points = log[["step", column]].dropna()
        ax.plot(points["step"], points[column])
        if len(points) and (points[column] > 0).all():
            ax.set_yscale("log")
        ax.set_ylabel(column, fontsize="small")
        ax.tick_params(labelsize="x-small")
    axes[-1].set_xlabel("step")
    return _save(fig, path)

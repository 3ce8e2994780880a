"""Figures for the evaluation report: orthoslices, a line profile, PSFs and training losses.

Every function draws on a bare `matplotlib.figure.Figure` (rendered by Agg, no pyplot and no
global backend switch), writes a PNG atomically (`cycledecon.atomic.atomic_path`) and returns
the written path. Physical axes are in µm from the `VoxelSize`.

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

from cycledecon.atomic import atomic_path
from cycledecon.io import read_volume
from cycledecon.methods import RAW, TRUTH
from cycledecon.psf_metrics import fwhm
from cycledecon.voxel import VoxelSize

DPI = 120
DISPLAY_PERCENTILES = (0.5, 99.8)
PSF_DECADES = 4  # PSF slices show four decades below the peak
PROFILE_HALF_WIDTH_UM = 2.0  # half length of the line profile
EDGE_FRACTION = 0.125  # default share of each axis left out at both ends when choosing the plane shown


def _save(fig: Figure, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and return the path.

    Through `atomic_path`, like every other output: the same file mode (0666 less the umask), the
    same temporary sibling, removed when a killed run left it, and never replacing anything but a
    file. ``metadata`` becomes PNG text chunks, so what a figure shows (e.g. which plane) can be
    checked without reading its pixels.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata=dict(metadata or {}))
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


def display_margin(
    shape: tuple[int, ...], voxel_size: VoxelSize, margin_um: tuple[float, float, float] | None
) -> tuple[int, ...]:
    """Voxels left out at both ends of each axis when choosing the displayed point.

    ``margin_um`` (e.g. the PSF's radius) in µm, or by default an eighth of each axis; never so
    much that no voxel is left. Edges are where deconvolution's boundary artefacts live.
    """
    if margin_um is None:
        wanted = [max(1, round(EDGE_FRACTION * n)) for n in shape]
    else:
        wanted = [int(np.ceil(m / d - 1e-9)) for m, d in zip(margin_um, voxel_size.as_tuple())]
    return tuple(max(0, min(w, (n - 1) // 2)) for w, n in zip(wanted, shape))


def band_pass(volume: np.ndarray) -> np.ndarray:
    """Difference of Gaussians (1 vs 3 voxels): small bright structures (beads, filaments) stand out
    of haze and of large bright blobs."""
    v = np.asarray(volume, dtype=np.float32)
    return ndi.gaussian_filter(v, 1.0) - ndi.gaussian_filter(v, 3.0)


def plane_signal(volume: np.ndarray) -> np.ndarray:
    """Signal of small structures per z plane: the positive part of `band_pass`, summed per plane."""
    return np.clip(band_pass(volume), 0, None).sum(axis=(1, 2))


def display_point(volume: np.ndarray, margin: tuple[int, int, int] = (0, 0, 0)) -> tuple[int, int, int]:
    """Voxel (z, y, x) that the slices and the line profile pass through.

    z is the plane with the most signal of small structures (`plane_signal`) among those at
    least ``margin[0]`` planes from either end; (y, x) is the strongest `band_pass` response in
    that plane, at least ``margin[1:]`` voxels from the lateral edges.
    """
    response = band_pass(volume)
    mz, my, mx = margin
    nz, ny, nx = response.shape
    per_plane = np.clip(response, 0, None).sum(axis=(1, 2))
    z = mz + int(np.argmax(per_plane[mz : nz - mz]))
    inner = response[z, my : ny - my, mx : nx - mx]
    y, x = np.unravel_index(np.argmax(inner), inner.shape)
    return z, int(y) + my, int(x) + mx


def _point_metadata(point: tuple[int, int, int], shape: tuple[int, ...], margin: tuple[int, ...]) -> dict[str, str]:
    """PNG text chunks naming the displayed voxel, the volume's shape and the margin left out."""
    return {
        "display_voxel_zyx": " ".join(map(str, point)),
        "volume_shape_zyx": " ".join(map(str, shape)),
        "display_margin_zyx": " ".join(map(str, margin)),
    }


def _extent(n_cols: int, d_col: float, n_rows: int, d_row: float) -> tuple[float, float, float, float]:
    """imshow extent (µm) of an image with the origin at the top left pixel's corner."""
    return (0.0, n_cols * d_col, n_rows * d_row, 0.0)


def _chosen_point(
    matched: Mapping[str, np.ndarray],
    reference: str,
    voxel_size: VoxelSize,
    margin_um: tuple[float, float, float] | None,
) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    """The displayed voxel of the reference (see `display_point`) and the margin it kept from the edges."""
    margin = display_margin(matched[reference].shape, voxel_size, margin_um)
    return display_point(matched[reference], margin), margin


def orthoslice_panel(
    volumes: Mapping[str, np.ndarray],
    voxel_size: VoxelSize,
    path: str | os.PathLike,
    title: str = "",
    reference: str | None = None,
    margin_um: tuple[float, float, float] | None = None,
) -> Path:
    """Orthogonal slices of every method side by side, in one display range.

    Columns are the methods in the given order (raw | RL | cycledecon | ground truth …). Rows
    are the XY, XZ and YZ slices through the reference's `display_point` — the interior plane
    with the most signal of small structures and the brightest small structure in it — and the XY
    maximum projection. Every volume is matched to the reference's percentiles (see the module
    docstring). In the reference's column the line profile of `line_profile` is drawn on the
    XY slice and the XY plane's depth on the XZ and YZ slices.

    Parameters
    ----------
    volumes : name → (z, y, x) volume, all the same shape.
    voxel_size : voxel size in µm; sets the physical aspect and the µm axes.
    path : PNG to write.
    title : figure title.
    reference : key whose intensities and percentiles are used; default the first key.
    margin_um : (z, y, x) margin in µm kept from the edges when choosing the point, e.g. the
        PSF's radius; default an eighth of each axis (see `display_margin`).

    Returns
    -------
    path : the written PNG, whose text chunks name the displayed voxel.
    """
    matched, reference = _matched(volumes, reference)
    vmin, vmax = _percentiles(matched[reference])
    (z, y, x), margin = _chosen_point(matched, reference, voxel_size, margin_um)
    nz, ny, nx = matched[reference].shape
    dz, dy, dx = voxel_size.as_tuple()
    rows = [  # (label, slicer, extent, x label, y label)
        (f"XY, z = {z * dz:.2f} µm", lambda v: v[z], _extent(nx, dx, ny, dy), "x (µm)", "y (µm)"),
        (f"XZ, y = {y * dy:.2f} µm", lambda v: v[:, y, :], _extent(nx, dx, nz, dz), "x (µm)", "z (µm)"),
        (f"YZ, x = {x * dx:.2f} µm", lambda v: v[:, :, x], _extent(ny, dy, nz, dz), "y (µm)", "z (µm)"),
        ("XY max projection", lambda v: v.max(axis=0), _extent(nx, dx, ny, dy), "x (µm)", "y (µm)"),
    ]
    fig = Figure(figsize=(2.4 * len(matched) + 0.8, 2.4 * len(rows) + 0.8), layout="constrained")
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
        if name == reference:
            _mark_point(axes[:3, col], (z, y, x), voxel_size, nx)
    fig.suptitle(
        (f"{title}: " if title else "")
        + f"slices through the plane with the most signal in the {reference}, "
        f"{margin[0]} planes or more from the first and last"
    )
    return _save(fig, path, _point_metadata((z, y, x), (nz, ny, nx), margin))


def sample_figures(sample: str, results: Mapping[str, Path], truth: Path | None, panel: Path, profile: Path) -> None:
    """Orthogonal slices and a line profile of every method's result (method → store or TIFF) side by
    side on one display range, matched to the ground truth where there is one, else to the raw stack."""
    read = {name: read_volume(path) for name, path in results.items()}
    volumes = {name: volume for name, (volume, _) in read.items()}
    voxel_size = next(iter(read.values()))[1]
    reference = RAW
    if truth is not None:
        volumes[TRUTH] = read_volume(truth)[0]
        reference = TRUTH
    orthoslice_panel(volumes, voxel_size, panel, title=sample, reference=reference)
    line_profile(volumes, voxel_size, profile, reference=reference)


def _mark_point(axes: np.ndarray, point: tuple[int, int, int], voxel_size: VoxelSize, nx: int) -> None:
    """Draw the line profile on the XY slice and the XY plane's depth on the XZ and YZ slices."""
    z, y, x = point
    dz, dy, dx = voxel_size.as_tuple()
    columns = _profile_columns(x, nx, voxel_size)
    style = {"color": "tab:orange", "linewidth": 0.8, "alpha": 0.8}
    axes[0].plot([columns[0] * dx, (columns[-1] + 1) * dx], [(y + 0.5) * dy] * 2, **style)
    for ax in axes[1:]:
        ax.axhline((z + 0.5) * dz, linestyle="--", **style)


def _profile_columns(
    x: int, nx: int, voxel_size: VoxelSize, half_width_um: float = PROFILE_HALF_WIDTH_UM
) -> np.ndarray:
    """x indices of the line profile: ``half_width_um`` either side of ``x``, clipped to the volume."""
    half = int(round(half_width_um / voxel_size.x))
    return np.arange(max(0, x - half), min(nx, x + half + 1))


def line_profile(
    volumes: Mapping[str, np.ndarray],
    voxel_size: VoxelSize,
    path: str | os.PathLike,
    reference: str | None = None,
    half_width_um: float = PROFILE_HALF_WIDTH_UM,
    margin_um: tuple[float, float, float] | None = None,
) -> Path:
    """Intensity along x through the reference's `display_point`, all methods on one plot.

    The point is the one `orthoslice_panel` shows: the brightest small structure in the
    interior plane with the most signal of small structures.

    Parameters
    ----------
    volumes : name → (z, y, x) volume, all the same shape; matched to the reference's
        percentiles first.
    voxel_size : voxel size in µm.
    path : PNG to write.
    reference : key that picks the line and sets the intensities; default the first key.
    half_width_um : half length of the line (µm), clipped to the volume.
    margin_um : as for `orthoslice_panel`.

    Returns
    -------
    path : the written PNG, whose text chunks name the voxel the line passes through.
    """
    matched, reference = _matched(volumes, reference)
    (z, y, x), margin = _chosen_point(matched, reference, voxel_size, margin_um)
    shape = matched[reference].shape
    columns = _profile_columns(x, shape[2], voxel_size, half_width_um)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for name, volume in matched.items():
        ax.plot(columns * voxel_size.x, volume[z, y, columns], label=name, marker=".", markersize=3)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel(f"intensity ({reference} units, percentile-matched)")
    ax.set_title(
        f"line profile at z = {z * voxel_size.z:.2f} µm (plane {z} of {shape[0]}), y = {y * voxel_size.y:.2f} µm",
        fontsize="medium",
    )
    ax.legend(fontsize="small")
    return _save(fig, path, _point_metadata((z, y, x), shape, margin))


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


LOSS_PANELS = {  # panel title → {train_log column: plain name}
    "Cycle consistency (lower is better)": {
        "cycle_blurred": "widefield → deblurred → re-blurred",
        "cycle_sharp": "sharp → blurred → deblurred",
        "val_cycle": "validation, both cycles",
    },
    "Adversarial (least squares)\n0.25 (dotted) = cannot tell real from generated": {
        "adv_a": "generator, widefield domain",
        "d_a": "discriminator, widefield domain",
        "adv_b": "generator, sharp domain",
        "d_b": "discriminator, sharp domain",
    },
    "Generator": {"loss_g": "weighted total loss", "grad_norm_g": "gradient norm (before clipping)"},
    "Learned PSF": {"psf_correlation": "correlation with the reference PSF (1 = same shape)"},
}


def _smoothed(values: pd.Series) -> pd.Series:
    """A centred running mean over about a twentieth of the points, to show trends through noise."""
    window = max(1, len(values) // 20)
    return values.rolling(window, center=True, min_periods=1).mean()


def _loss_panels(log: pd.DataFrame) -> dict[str, dict[str, str]]:
    """The panels that have data: `LOSS_PANELS`, then one panel for columns it does not name."""
    numeric = [c for c in log.select_dtypes("number").columns if c != "step" and log[c].notna().any()]
    panels = {title: {c: name for c, name in names.items() if c in numeric} for title, names in LOSS_PANELS.items()}
    known = {c for names in LOSS_PANELS.values() for c in names}
    panels["Other logged values"] = {c: c for c in numeric if c not in known}
    return {title: names for title, names in panels.items() if names}


def loss_curves(log: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Training curves against step in a few panels with plain names (`LOSS_PANELS`).

    Each value is drawn faintly as logged and boldly as a running mean. Within a panel, values of
    different size share a log axis when all are positive; the generator's total loss and its
    gradient norm get one axis each. Columns the panels do not name are drawn under their own
    names in a last panel.

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
    panels = _loss_panels(log) if not log.empty else {}
    if not panels:
        raise ValueError("training log has no rows or no numeric loss columns")
    fig = Figure(figsize=(11.0, 3.2 * ((len(panels) + 1) // 2) + 0.4), layout="constrained")
    axes = fig.subplots((len(panels) + 1) // 2, 2, squeeze=False).ravel()
    for ax, (title, names) in zip(axes, panels.items()):
        twin = title == "Generator" and len(names) == 2
        for i, (column, name) in enumerate(names.items()):
            target = ax.twinx() if twin and i == 1 else ax
            _plot_curve(target, log[["step", column]].dropna(), column, name, f"C{i}")
            if twin:
                target.set_ylabel(name, color=f"C{i}", fontsize="small")
        if title.startswith("Adversarial"):
            ax.axhline(0.25, color="grey", linestyle=":", linewidth=1, label="_undecided")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("training step", fontsize="small")
        ax.tick_params(labelsize="x-small")
        if not twin:
            ax.legend(fontsize="x-small")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return _save(fig, path)


def _plot_curve(ax, points: pd.DataFrame, column: str, name: str, colour: str) -> None:
    """One logged value: faint as logged, bold as a running mean; the axis goes log when all its
    values are positive and span more than a decade."""
    steps, values = points["step"], points[column]
    ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
    ax.plot(steps, _smoothed(values), color=colour, linewidth=1.6, label=name)
    shown = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()])
    shown = shown[np.isfinite(shown)]
    spans_decades = shown.size and shown.min() > 0 and shown.max() > 10 * shown.min()
    ax.set_yscale("log" if spans_decades else "linear")

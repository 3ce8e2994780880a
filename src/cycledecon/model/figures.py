"""Training figures: loss curves and central slices of the learned PSF (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cycledecon.voxel import VoxelSize  # noqa: E402

PANELS = {
    "generator losses": ["adv_a", "adv_b", "cycle", "identity"],
    "discriminator losses": ["d_a", "d_b"],
    "validation cycle loss": ["val_cycle"],
    "PSF NCC to reference": ["psf_ncc"],
}


def plot_losses(log: pd.DataFrame, path: Path) -> None:
    """One panel per loss family against the training step (panels with no data are skipped)."""
    panels = {title: [c for c in cols if c in log and log[c].notna().any()]
              for title, cols in PANELS.items()}
    panels = {title: cols for title, cols in panels.items() if cols}
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, cols) in zip(axes[0], panels.items()):
        for col in cols:
            rows = log[["step", col]].dropna()
            ax.plot(rows["step"], rows[col], label=col, marker="." if len(rows) < 30 else None)
        ax.set(title=title, xlabel="step")
        ax.legend(fontsize="small")
    fig.tight_layout()
    _save(fig, path)


def plot_psf(learned: np.ndarray, comparison: tuple[str, np.ndarray | None], voxel_size: VoxelSize,
             path: Path) -> None:
    """XY, XZ and YZ central slices (µm axes) of the learned PSF, above the comparison PSF."""
    label, other = comparison
    rows = [("learned", learned)] + ([(label, other)] if other is not None else [])
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.2 * len(rows)), squeeze=False)
    for ax_row, (name, psf) in zip(axes, rows):
        cz, cy, cx = (n // 2 for n in psf.shape)
        views = [("XY", psf[cz], voxel_size.x, voxel_size.y),
                 ("XZ", psf[:, cy, :], voxel_size.x, voxel_size.z),
                 ("YZ", psf[:, :, cx], voxel_size.y, voxel_size.z)]
        for ax, (plane, image, dh, dv) in zip(ax_row, views):
            h, w = image.shape
            ax.imshow(image, cmap="magma", extent=(-w / 2 * dh, w / 2 * dh, h / 2 * dv, -h / 2 * dv))
            ax.set(title=f"{name} PSF, {plane}", xlabel="µm", ylabel="µm")
    fig.tight_layout()
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    """Save next to the target, then rename (atomic), and free the figure."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)

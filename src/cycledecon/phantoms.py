"""Synthetic 3D fluorescent objects of the kinds a cell biologist images.

All phantoms are float32 (z, y, x) density maps in arbitrary units (peak about 1), drawn in physical
units (µm) so that the same settings give the same objects at any voxel size.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cycledecon.voxel import VoxelSize


def _splat(volume: np.ndarray, points_vox: np.ndarray, weight: float) -> None:
    """Add `weight` at each sub-voxel point by trilinear splatting (keeps sub-voxel positions)."""
    base = np.floor(points_vox).astype(int)
    frac = points_vox - base
    for corner in np.ndindex(2, 2, 2):
        idx = base + corner
        w = np.prod(np.where(corner, frac, 1 - frac), axis=1) * weight
        inside = np.all((idx >= 0) & (idx < volume.shape), axis=1)
        np.add.at(volume, tuple(idx[inside].T), w[inside])


def filaments(
    shape: tuple[int, int, int],
    voxel_size: VoxelSize,
    rng: np.random.Generator,
    count: int = 14,
    length_um: float = 12.0,
    persistence_um: float = 4.0,
    width_um: float = 0.025,
) -> np.ndarray:
    """Microtubule-like curvilinear filaments: worm-like chains that drift through the stack.

    Parameters
    ----------
    count : number of filaments.
    length_um : contour length of each filament (µm).
    persistence_um : bending persistence length (µm); smaller gives curlier filaments.
    width_um : Gaussian half-width of the filament cross-section (µm), 25 nm ≈ a microtubule.
    """
    volume = np.zeros(shape, np.float32)
    extent = np.array(shape) * voxel_size.as_tuple()
    step = 0.5 * min(voxel_size.as_tuple())
    n_steps = int(length_um / step)
    for _ in range(count):
        position = rng.uniform(0, 1, 3) * extent
        direction = rng.normal(size=3) * np.array([0.2, 1, 1])  # mostly lateral, like cells on glass
        direction /= np.linalg.norm(direction)
        path = np.empty((n_steps, 3))
        for i in range(n_steps):
            direction += rng.normal(scale=np.sqrt(step / persistence_um), size=3) * np.array([0.3, 1, 1])
            direction /= np.linalg.norm(direction)
            position = position + step * direction
            path[i] = position
        _splat(volume, path / voxel_size.as_tuple(), weight=step / min(voxel_size.as_tuple()))
    sigma = [width_um / v for v in voxel_size.as_tuple()]
    return _peak_normalize(ndimage.gaussian_filter(volume, sigma))


def puncta(
    shape: tuple[int, int, int],
    voxel_size: VoxelSize,
    rng: np.random.Generator,
    density_per_um3: float = 0.01,
    brightness_spread: float = 0.5,
) -> np.ndarray:
    """Sub-resolution puncta (vesicles, beads): point sources with log-normal brightness."""
    volume = np.zeros(shape, np.float32)
    n_points = rng.poisson(density_per_um3 * np.prod(np.array(shape) * voxel_size.as_tuple()))
    points = rng.uniform(0, 1, (n_points, 3)) * (np.array(shape) - 1)
    for point, weight in zip(points, rng.lognormal(0.0, brightness_spread, n_points)):
        _splat(volume, point[None, :], float(weight))
    return _peak_normalize(ndimage.gaussian_filter(volume, 0.5))


def blobs(
    shape: tuple[int, int, int],
    voxel_size: VoxelSize,
    rng: np.random.Generator,
    count: int = 3,
    radius_um: tuple[float, float] = (0.8, 2.0),
    shell_fraction: float = 0.5,
    edge_um: float = 0.1,
) -> np.ndarray:
    """Blob-like nuclei and vesicles: soft-edged ellipsoids, some filled, some hollow shells."""
    grids = np.meshgrid(*[np.arange(n) * v for n, v in zip(shape, voxel_size.as_tuple())], indexing="ij")
    extent = np.array(shape) * voxel_size.as_tuple()
    volume = np.zeros(shape, np.float32)
    for _ in range(count):
        centre = rng.uniform(0, 1, 3) * extent
        radii = rng.uniform(*radius_um, 3) * np.array([0.7, 1, 1])
        r = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, radii)))
        edge = edge_um / radii.mean()
        filled = 1.0 / (1.0 + np.exp((r - 1.0) / edge))
        shell = np.exp(-(((r - 1.0) / (2 * edge)) ** 2))
        profile = shell if rng.uniform() < shell_fraction else 0.5 * filled
        volume += rng.uniform(0.5, 1.0) * profile.astype(np.float32)
    return _peak_normalize(volume)


def _peak_normalize(volume: np.ndarray, percentile: float = 100.0) -> np.ndarray:
    """Scale so the given percentile is 1 (a robust peak for sparse point clouds)."""
    peak = float(np.percentile(volume, percentile)) if percentile < 100 else float(volume.max())
    return (volume / peak).astype(np.float32) if peak > 0 else volume.astype(np.float32)


PHANTOM_KINDS = {"filaments": filaments, "puncta": puncta, "blobs": blobs}


def mixed_phantom(
    shape: tuple[int, int, int],
    voxel_size: VoxelSize,
    rng: np.random.Generator,
    weights: dict[str, float],
) -> np.ndarray:
    """A cell-like scene: the weighted sum of the phantom kinds named in `weights` (peak ≈ 1)."""
    unknown = set(weights) - set(PHANTOM_KINDS)
    if unknown:
        raise ValueError(f"unknown phantom kinds {sorted(unknown)}; choose from {sorted(PHANTOM_KINDS)}")
    volume = np.zeros(shape, np.float32)
    for kind, weight in weights.items():
        if weight > 0:
            volume += weight * PHANTOM_KINDS[kind](shape, voxel_size, rng)
    return _peak_normalize(volume)

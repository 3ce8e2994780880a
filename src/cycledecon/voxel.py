"""Physical voxel sizes, which travel with every array (µm, in (z, y, x) order)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VoxelSize:
    """Voxel size in micrometres along (z, y, x)."""

    z: float
    y: float
    x: float

    def __post_init__(self) -> None:
        for name, value in zip("zyx", self.as_tuple()):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"voxel size {name} must be a positive number of µm, got {value!r}")

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.z, self.y, self.x)

    def to_voxels(self, size_um: float | tuple[float, float, float]) -> tuple[float, float, float]:
        """Convert a length in µm (one for all axes, or per axis) into voxels per axis."""
        sizes = (size_um,) * 3 if np.isscalar(size_um) else tuple(size_um)
        return tuple(float(s) / v for s, v in zip(sizes, self.as_tuple()))

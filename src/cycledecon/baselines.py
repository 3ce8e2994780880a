"""Richardson–Lucy deconvolution, the classical baseline that cycledecon is compared with.

A baseline store records how it was made (`rl_provenance`): the PSF (its source, file, checksum,
shape and voxel size, or the optics it was computed from), the iteration count, and the boundary
handling and offset convention below, so a result can be reproduced and compared.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft

from cycledecon.config import EvaluateConfig
from cycledecon.errors import CycledeconError
from cycledecon.io import DEFAULT_NGFF_VERSION, image_name, read_ome_zarr, write_ome_zarr
from cycledecon.metrics import match_intensity, psnr
from cycledecon.psf.theory import normalize_psf, psf_from_optics
from cycledecon.resample import read_psf_on_grid
from cycledecon.voxel import VoxelSize

log = logging.getLogger(__name__)

#: Iterations when the caller gives none, the workflow's `evaluate.rl_iterations`: a fixed count,
#: since stopping rules from the data (the Poisson discrepancy principle) need stacks in photons,
#: which a sample sheet does not give.
DEFAULT_ITERATIONS = EvaluateConfig.rl_iterations
#: Voxels of the extended domain that send less than this share of their light into the measured
#: stack are not estimated (held at zero): the data say almost nothing about them.
MIN_WEIGHT = 1e-2
#: Floor of the blurred estimate in the RL ratio (data are scaled to [0, 1]), against division by
#: zero where the estimate has no light.
_FLOOR = 1e-6


@dataclass(frozen=True)
class ExtendedBlur:
    """Blur of an object on a domain larger than the measured stack, observed only on the stack.

    The object lives on a grid extended by the PSF's size less one voxel per axis (half of it on
    each side), so the light of emitters just outside the stack is modelled instead of being
    forced into its first and last planes. Convolution is circular on that grid (rounded up to a
    fast FFT size), which equals linear convolution on the measured window: no light wraps into it.
    """

    grid: tuple[int, ...]
    window: tuple[slice, ...]
    object_crop: tuple[slice, ...]
    otf: np.ndarray

    @classmethod
    def build(cls, shape: tuple[int, ...], psf: np.ndarray) -> ExtendedBlur:
        """The blur of a unit-sum `psf` for a measured stack of `shape`."""
        grid = tuple(fft.next_fast_len(n + k - 1, real=True) for n, k in zip(shape, psf.shape))
        window = tuple(slice(k - 1, k - 1 + n) for n, k in zip(shape, psf.shape))
        # the PSF centred on measured voxel i is the light of object voxel i + k // 2
        object_crop = tuple(slice(k // 2, k // 2 + n) for n, k in zip(shape, psf.shape))
        otf = fft.rfftn(psf.astype(np.float32), grid)
        return cls(grid, window, object_crop, otf)

    def forward(self, estimate: np.ndarray) -> np.ndarray:
        """The measured stack an object on the grid gives (shape of the stack)."""
        return fft.irfftn(fft.rfftn(estimate) * self.otf, self.grid)[self.window]

    def adjoint(self, values: np.ndarray) -> np.ndarray:
        """Backprojection of values on the measured voxels onto the whole grid."""
        embedded = np.zeros(self.grid, dtype=np.float32)
        embedded[self.window] = values
        return fft.irfftn(fft.rfftn(embedded) * self.otf.conj(), self.grid)


def _richardson_lucy_extended(
    positive: np.ndarray, psf: np.ndarray, counts: list[int]
) -> Iterator[tuple[int, np.ndarray]]:
    """RL of non-negative data on the extended domain (Bertero–Boccacci boundaries): the estimate
    after each of the ascending `counts` iterations, cropped back to the stack.

    The ratio data / blurred estimate is formed on measured voxels only, and each voxel's update is
    normalized by the adjoint of the ones-mask of the stack, i.e. by the share of its light that
    reaches the stack, so voxels outside the stack are updated by what the stack saw of them.
    """
    blur = ExtendedBlur.build(positive.shape, psf)
    weight = blur.adjoint(np.ones(positive.shape, dtype=np.float32))
    inverse_weight = np.where(weight >= MIN_WEIGHT, 1 / np.maximum(weight, MIN_WEIGHT), 0).astype(np.float32)
    estimate = np.where(inverse_weight > 0, np.float32(positive.mean()), np.float32(0))
    done = 0
    for count in counts:
        for _ in range(count - done):
            ratio = positive / np.maximum(blur.forward(estimate), _FLOOR)
            estimate *= blur.adjoint(ratio) * inverse_weight
            np.maximum(estimate, 0, out=estimate)  # FFT round-off can dip below zero
        done = count
        yield count, estimate[blur.object_crop].copy()


def richardson_lucy_series(image: np.ndarray, psf: np.ndarray, counts: Iterable[int]) -> dict[int, np.ndarray]:
    """Richardson–Lucy with a known PSF and boundary handling after each of several iteration counts.

    One run to the largest count, kept at every count on the way: RL is deterministic, so each
    result equals a run of that many iterations from scratch, at the cost of the longest alone.

    The object is estimated on a domain extended by the PSF's radius on every side and compared
    with the data only on the measured voxels (`ExtendedBlur`), so light from emitters outside the
    stack does not pile up in its border planes; scikit-image's RL has no such boundary option
    (it convolves with zero padding), hence the loop here. Richardson–Lucy assumes non-negative
    data without background. The image's minimum is therefore taken as a constant offset (camera
    offset plus background, noise-biased low so the rest stays non-negative) and subtracted, the
    remainder is scaled to [0, 1] for float32 headroom, deconvolved, and mapped back: the result
    is in the input's intensity units with the offset added again. RL commutes with the scaling,
    so only the offset is a modelling choice.

    Memory is a few float32 arrays of the extended grid (the stack plus the PSF's size per axis):
    for a 64 × 256 × 256 stack and a 33 × 65 × 65 PSF, 96 × 320 × 320 voxels each.

    Parameters
    ----------
    image : (z, y, x) blurred volume, any real intensities.
    psf : (z, y, x) PSF on the same voxel grid; clipped to non-negative and normalized to unit sum.
    counts : iteration counts, each at least 1 (more sharpens, and amplifies noise).

    Returns
    -------
    deconvolved : iteration count → float32 volume, same shape and units as ``image``.
    """
    counts = sorted(set(int(n) for n in counts))
    if image.ndim != psf.ndim:
        raise ValueError(f"image and PSF must have the same dimensions, got {image.shape} and {psf.shape}")
    if not counts or counts[0] < 1:
        raise ValueError(f"iteration counts must be at least 1, got {counts}")
    image = np.asarray(image, dtype=np.float32)
    offset = float(image.min())
    scale = float(image.max()) - offset
    if scale == 0:
        return {n: image.copy() for n in counts}
    series = _richardson_lucy_extended((image - offset) / scale, normalize_psf(psf), counts)
    return {n: (restored * scale + offset).astype(np.float32) for n, restored in series}


def richardson_lucy(image: np.ndarray, psf: np.ndarray, iterations: int = DEFAULT_ITERATIONS) -> np.ndarray:
    """Richardson–Lucy deconvolution with a known PSF and boundary handling, float32, in the
    input's units: `richardson_lucy_series` at one iteration count."""
    return richardson_lucy_series(image, psf, [iterations])[iterations]


def oracle_choice(results: Mapping[int, np.ndarray], truth: np.ndarray) -> tuple[int, dict[int, float]]:
    """The iteration count whose RL result scores the best PSNR against the truth.

    Only possible with a ground truth (the synthetic benchmark); it gives RL its best case.

    Parameters
    ----------
    results : iteration count → RL result (`richardson_lucy_series`).
    truth : ground-truth volume, same shape as the results.

    Returns
    -------
    best : the iteration count with the highest PSNR (the smallest one on ties).
    psnr_db : PSNR in dB after `cycledecon.metrics.match_intensity`, for every count.
    """
    if not results:
        raise ValueError("no RL results to choose from")
    psnr_db = {n: psnr(match_intensity(result, truth), truth) for n, result in results.items()}
    return max(sorted(psnr_db), key=lambda n: (psnr_db[n], -n)), psnr_db


def best_iterations(
    blurred: np.ndarray,
    psf: np.ndarray,
    truth: np.ndarray,
    candidates: Iterable[int] = (5, 10, 20, 40, 80),
) -> tuple[int, dict[int, float]]:
    """Oracle choice (`oracle_choice`) among RL runs of `blurred` with `psf` after each of the
    `candidates` iteration counts (`richardson_lucy_series`: one run to the largest)."""
    return oracle_choice(richardson_lucy_series(blurred, psf, candidates), truth)


# ------------------------------------------------------------------------- baseline stores
#: Where a baseline's PSF comes from: computed from the optics, learned by cycledecon's training,
#: or a measured/known one (the synthetic benchmark's true PSF).
PSF_SOURCES = ("theoretical", "learned", "true")


@dataclass(frozen=True)
class BaselinePSF:
    """A PSF on the stack's voxel grid and where it came from, as a baseline store records it."""

    source: str
    psf: np.ndarray
    voxel_size: VoxelSize
    path: Path | None = None
    optics: Mapping[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        """The PSF's provenance: source, shape and voxel size in µm, and the file (absolute path
        and sha256 of its bytes) or the optics it was computed from."""
        record: dict[str, Any] = {
            "source": self.source,
            "shape": [int(n) for n in self.psf.shape],
            "voxel_size_um": list(self.voxel_size.as_tuple()),
        }
        if self.path is not None:
            record["path"] = str(Path(self.path).resolve())
            record["sha256"] = _sha256(Path(self.path))
        if self.optics is not None:
            record["optics"] = dict(self.optics)
        return record


def _sha256(path: Path) -> str:
    """Checksum of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_psf(
    source: str,
    grid: VoxelSize,
    path: str | Path | None = None,
    optics: Mapping[str, Any] | None = None,
    shape: tuple[int, int, int] | None = None,
    file_voxel_size: VoxelSize | None = None,
) -> BaselinePSF:
    """The PSF of one baseline on the stack's `grid` (µm).

    "theoretical" is computed from `optics` (na, wavelength_nm, immersion_ri) at `shape`;
    "learned" and "true" are read from the file at `path` and resampled to `grid` when their voxel
    size (`file_voxel_size`, else the file's metadata, else `grid`) differs
    (`cycledecon.resample.read_psf_on_grid`).
    """
    if source not in PSF_SOURCES:
        raise CycledeconError(f"unknown PSF source {source!r}; choose one of {', '.join(PSF_SOURCES)}")
    if source == "theoretical":
        if optics is None or shape is None:
            raise CycledeconError("the theoretical PSF needs the optics (na, wavelength_nm, immersion_ri) and a shape")
        return BaselinePSF(source, psf_from_optics(tuple(shape), grid, dict(optics)), grid, optics=optics)
    if path is None:
        raise CycledeconError(f"the {source} PSF needs a file")
    return BaselinePSF(source, read_psf_on_grid(path, grid, file_voxel_size), grid, path=Path(path))


def rl_provenance(psf: BaselinePSF, iterations: int, input_path: str | Path) -> dict[str, Any]:
    """What a Richardson–Lucy store records: the method, its input, the PSF (`BaselinePSF.record`),
    the iteration count, the boundary handling (`ExtendedBlur`) and the offset convention."""
    return {
        "method": f"Richardson-Lucy, {psf.source} PSF",
        "input": str(Path(input_path).resolve()),
        "iterations": int(iterations),
        "psf": psf.record(),
        "boundary": {
            "handling": "extended domain",
            "extension_voxels": [int(k) - 1 for k in psf.psf.shape],
            "min_weight": MIN_WEIGHT,
            "description": "object estimated on a grid extended by the PSF size less one voxel per axis "
            "and compared with the data on the measured voxels only; voxels sending less than "
            "min_weight of their light into the stack are held at zero",
        },
        "offset": "the input's minimum, subtracted before RL and added back: output in the input's units",
    }


def write_baseline(
    raw_path: str | Path,
    out: str | Path,
    psf: BaselinePSF,
    iterations: int = DEFAULT_ITERATIONS,
    ngff_version: str = DEFAULT_NGFF_VERSION,
) -> Path:
    """Richardson–Lucy of an OME-Zarr stack with one PSF, written as an OME-Zarr store (NGFF
    `ngff_version`) named after the stack's image (the sample) and carrying `rl_provenance` under
    its `cycledecon` attribute."""
    data, voxel_size, attrs = read_ome_zarr(raw_path)
    log.info("Richardson-Lucy (%s PSF, %d iterations) on %s", psf.source, iterations, raw_path)
    result = richardson_lucy(np.asarray(data, dtype=np.float32), psf.psf, iterations=iterations)
    record = {**{k: attrs[k] for k in ("sample", "campaign") if k in attrs}, **rl_provenance(psf, iterations, raw_path)}
    return write_ome_zarr(
        result, out, voxel_size, attrs=record, name=image_name(raw_path), ngff_version=ngff_version
    )

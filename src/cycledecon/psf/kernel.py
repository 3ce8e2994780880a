"""The kernel training starts H from: its box and its initial values, from the config and the patches.

The box is the smallest odd one holding `train.psf.energy` of the theoretical PSF's energy, else
`size_um` or `shape_voxels`, or a `psf.file`'s own; it must fit the patches' context margin less
G's training ring (`kernel_room`) and is never cropped. H starts as the pupil model at the
campaign's optics, or as a free kernel from a file, the theoretical PSF or a broad Gaussian.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Protocol

import numpy as np
import tifffile

from cycledecon.config.train import PsfConfig, TrainConfig
from cycledecon.errors import CycledeconError
from cycledecon.psf.theory import gaussian_psf, normalize_psf, psf_from_optics
from cycledecon.voxel import VoxelSize

if TYPE_CHECKING:
    from cycledecon.psf.pupil import PupilPsf

log = logging.getLogger(__name__)


class PatchGeometry(Protocol):
    """What a patch store tells the kernel: its voxel size (µm), patch shape and context margin
    (voxels on each side), and the campaign's optics {na, wavelength_nm, immersion_ri} or None.
    The training's patch store is one."""

    voxel_size: VoxelSize
    patch_shape: tuple[int, int, int]
    margin: tuple[int, int, int]
    optics: dict[str, float] | None


def kernel_room(cfg: TrainConfig, store: PatchGeometry) -> tuple[int, int, int]:
    """Voxels of context a kernel's radius may take: the patches' margin less G's training ring
    (F(x) is computed over the ring too, and must be exact there)."""
    ring = cfg.generator_context
    if any(ring) and any(r > m for r, m in zip(ring, store.margin)):
        raise CycledeconError(f"train.generator_context: {tuple(ring)} voxels do not fit the patches' "
                              f"context margin {store.margin}; raise patches.context_um")
    return tuple(m - r for m, r in zip(store.margin, ring)) if any(store.margin) else store.margin


def starting_kernel(psf: PsfConfig, store: PatchGeometry,
                    room: tuple[int, int, int]) -> tuple[np.ndarray, PupilPsf | None]:
    """The kernel H starts from (or is frozen at), checked to fit the context `room`, and the pupil
    model that is H with the pupil parameterization (else None)."""
    pupil = pupil_psf(psf, store, room)
    initial = pupil.numpy() if pupil is not None else initial_psf(psf, store, room)
    check_kernel_fits(initial.shape, store, size_key(psf), room)
    return initial, pupil


def kernel_shape(psf: PsfConfig, store: PatchGeometry, room: tuple[int, int, int]) -> tuple[int, int, int]:
    """Odd kernel size in voxels: from `energy` and the optics when both are known (capped by the
    context `room`, see kernel_room), else from size_um (rounded up to odd) or shape_voxels."""
    if psf.energy is not None and store.optics and any(room):
        largest = tuple(2 * m + 1 for m in room)
        return energy_box(theoretical_psf(largest, store), psf.energy)
    if psf.energy is not None:
        log.warning("train.psf.energy needs the campaign's optics and patches with a context margin "
                    "(patches.context_um); using psf.size_um / psf.shape_voxels instead")
    if psf.size_um is None:
        return psf.shape_voxels
    return tuple(2 * math.ceil((n - 1) / 2) + 1 for n in store.voxel_size.to_voxels(psf.size_um))


def initial_psf(psf: PsfConfig, store: PatchGeometry, room: tuple[int, int, int]) -> np.ndarray:
    """The free kernel H starts from (or is frozen at): a file, the theoretical PSF or a broad
    Gaussian; a file is used at its full extent, never cropped."""
    if psf.file is not None:
        try:
            kernel = normalize_psf(tifffile.imread(psf.file))
        except (OSError, ValueError) as error:
            raise CycledeconError(f"train.psf.file: cannot read {psf.file} ({error})") from None
        if kernel.ndim != 3 or any(n % 2 == 0 for n in kernel.shape):
            raise CycledeconError(f"train.psf.file: {psf.file} must be a 3D PSF with odd sizes, "
                                  f"got shape {kernel.shape}")
        return kernel
    shape = kernel_shape(psf, store, room)
    if psf.init == "theoretical":
        return theoretical_psf(shape, store)
    return gaussian_psf(shape, psf.init_sigma_voxels or tuple(n / 6 for n in shape))


def pupil_psf(psf: PsfConfig, store: PatchGeometry, room: tuple[int, int, int]) -> PupilPsf | None:
    """The pupil model H is (started from the campaign's optics), or None for a free kernel or a
    kernel read from `psf.file`."""
    if psf.parameterization != "pupil" or psf.file is not None:
        return None
    if not store.optics:
        raise CycledeconError("train.psf.parameterization: 'pupil' needs the campaign's optics "
                              "(na, wavelength_nm, immersion_ri in the sample sheet), but the patch store has none")
    from cycledecon.psf.pupil import PupilPsf  # torch only where a pupil model is built

    try:
        return PupilPsf(kernel_shape(psf, store, room), store.voxel_size.as_tuple(), store.optics["na"],
                        store.optics["wavelength_nm"], store.optics["immersion_ri"], psf.spherical_terms)
    except (KeyError, ValueError) as error:
        raise CycledeconError(f"train.psf.parameterization: cannot build the pupil model ({error})") from None


def size_key(psf: PsfConfig) -> str:
    """The config key that set the kernel's size, for error messages."""
    if psf.file is not None:
        return "train.psf.file"
    if psf.energy is not None:
        return "train.psf.energy"
    return "train.psf.size_um" if psf.size_um is not None else "train.psf.shape_voxels"


def check_kernel_fits(shape: tuple[int, ...], store: PatchGeometry, key: str, room: tuple[int, int, int]) -> None:
    """A kernel must fit the context `room` (see kernel_room) or, without a margin, the patch:
    never cropped."""
    if any(store.margin):
        short = [n // 2 > m for n, m in zip(shape, room)]
        limit = f"the patches' context margin {store.margin} voxels (patches.context_um)"
        if room != store.margin:
            limit += f" less train.generator_context ({room} left)"
    else:
        short = [n // 2 >= p for n, p in zip(shape, store.patch_shape)]
        limit = f"patches {store.patch_shape} (radius must be below the patch size)"
    if any(short):
        raise CycledeconError(f"{key}: kernel {tuple(shape)} has a larger radius than {limit}; "
                              "raise patches.context_um or use a smaller PSF")


def energy_box(psf: np.ndarray, share: float) -> tuple[int, int, int]:
    """The smallest odd (z, y, x) box, centred, holding `share` of the PSF's energy; axial and
    lateral half-sizes grow together in proportion to the PSF's own box."""
    centre = [n // 2 for n in psf.shape]
    total = float(psf.sum())
    steps = max(centre)
    for step in range(steps + 1):
        radius = [round(c * step / steps) for c in centre]
        box = psf[tuple(slice(c - r, c + r + 1) for c, r in zip(centre, radius))]
        if float(box.sum()) >= share * total:
            return tuple(2 * r + 1 for r in radius)
    return tuple(psf.shape)


def theoretical_psf(shape: tuple[int, int, int], store: PatchGeometry) -> np.ndarray:
    """Widefield PSF from the campaign's optics recorded in the patch store."""
    if not store.optics:
        raise CycledeconError("train.psf: the theoretical PSF needs the campaign's optics "
                              "(na, wavelength_nm, immersion_ri), but the patch store has none")
    try:
        return psf_from_optics(shape, store.voxel_size, store.optics)
    except (KeyError, ValueError) as error:
        raise CycledeconError(f"train.psf.init: cannot compute the theoretical PSF ({error})") from None

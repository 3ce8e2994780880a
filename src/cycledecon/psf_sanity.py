"""PSF sanity: is a learned PSF one a widefield microscope can have?

A blind model can explain the blur some other way and leave H narrower than the optics allow, or
collapse it onto one voxel, after which deconvolution with it does next to nothing. `psf_sanity`
measures a learned PSF against the diffraction limit of the sheet's optics and against the
theoretical PSF, and `psf_sanity_warnings` turns what does not fit into warnings with what to try.
Training stores the record in model.pt and logs its warnings; the report shows them at its top.

The diffraction limits are the FWHM of a diffraction-limited widefield PSF (λ the emission
wavelength, NA the objective's numerical aperture, n the immersion medium's refractive index):

- lateral: 0.51·λ/NA (the Airy pattern);
- axial: 0.88·λ/(n − √(n² − NA²)), which tends to 1.77·n·λ/NA² at low NA.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from cycledecon.psf_metrics import fwhm
from cycledecon.voxel import VoxelSize

log = logging.getLogger(__name__)

LATERAL_FWHM_FACTOR = 0.51  # lateral FWHM ≈ 0.51·λ/NA
AXIAL_FWHM_FACTOR = 0.88  # axial FWHM ≈ 0.88·λ/(n − √(n² − NA²))
#: A PSF whose brightest voxel holds more than this share of its energy has collapsed. A sampled
#: Gaussian holds about 6 % in its brightest voxel at one voxel sigma (FWHM 2.4 voxels, Nyquist
#: sampling) and 21 % at 0.6 voxel sigma, so above 20 % the PSF is at most about one voxel wide
#: along every axis: nearly the identity, a blur too small for the sampling to show. Widefield
#: PSFs sampled as microscopes sample them spread out of focus and hold far less.
COLLAPSE_SHARE = 0.2
#: A width below this fraction of the diffraction limit is narrower than the optics allow: the
#: half-maximum crossing is interpolated to within a few percent, and a theoretical widefield PSF
#: measures only a few percent above the axial formula, so a correct kernel is not flagged.
SUB_DIFFRACTION_MARGIN = 0.9
#: What to try when the learned PSF fails a check, appended to its warnings.
PSF_ADVICE = (
    "Try: the optics (na, wavelength_nm, immersion_ri) in the sample sheet, which start and bound H "
    "at the theoretical PSF; a larger PSF support (train.psf.energy, train.psf.size_um); more "
    "training steps (train.optim.steps)."
)


def diffraction_limits_um(optics: dict[str, float]) -> dict[str, float]:
    """Lateral (0.51·λ/NA) and axial (0.88·λ/(n − √(n² − NA²))) FWHM, in µm, of a
    diffraction-limited widefield PSF for the sheet's optics {na, wavelength_nm, immersion_ri}."""
    wavelength_um = optics["wavelength_nm"] / 1000
    na, n = optics["na"], optics["immersion_ri"]
    if not 0 < na < n:
        raise ValueError(f"NA {na:g} must be positive and below the immersion index {n:g}")
    return {
        "lateral_um": LATERAL_FWHM_FACTOR * wavelength_um / na,
        "axial_um": AXIAL_FWHM_FACTOR * wavelength_um / (n - math.sqrt(n**2 - na**2)),
    }


def peak_share(psf: np.ndarray) -> float:
    """The share of a PSF's energy in its brightest voxel (max / sum)."""
    psf = np.asarray(psf, dtype=np.float64)
    return float(psf.max() / psf.sum())


def plane_energy(psf: np.ndarray) -> list[float]:
    """The share of a (z, y, x) PSF's energy in each z plane, in z order."""
    planes = np.asarray(psf, dtype=np.float64).sum(axis=(1, 2))
    return [float(v) for v in planes / planes.sum()]


def measured_widths(psf: np.ndarray, voxel_size: VoxelSize) -> dict[str, float | None]:
    """Lateral and axial FWHM (µm) of a PSF, each None where the PSF does not fall to half its
    maximum inside its array (its support cuts the blur short)."""
    try:
        return fwhm(psf, voxel_size)
    except ValueError:
        pass
    widths: dict[str, float | None] = {}
    for key, axes in (("axial_um", (0,)), ("lateral_um", (1, 2))):
        padded = np.pad(np.asarray(psf, dtype=np.float64), [(0, 0) if a in axes else (1, 1) for a in range(3)])
        try:
            widths[key] = fwhm(padded, voxel_size)[key]  # zero padding elsewhere: only `axes` can fail
        except ValueError:
            widths[key] = None
    return widths


def theoretical_psf_for(psf_shape: tuple[int, ...], voxel_size: VoxelSize, optics: dict[str, float]) -> np.ndarray:
    """The theoretical widefield PSF of the optics on a box at least as large as `psf_shape` and
    at least four diffraction-limited widths wide, so that its own widths are measurable."""
    from cycledecon.psf.theory import psf_from_optics  # psfmodels only where optics are known

    limits = diffraction_limits_um(optics)
    reach = voxel_size.to_voxels((4 * limits["axial_um"], 4 * limits["lateral_um"], 4 * limits["lateral_um"]))
    nz, ny, nx = (max(int(n), 2 * math.ceil(r / 2) + 1) for n, r in zip(psf_shape, reach))
    return psf_from_optics((nz, ny, nx), voxel_size, optics)


def psf_sanity(psf: np.ndarray, voxel_size: VoxelSize, optics: dict[str, float] | None = None) -> dict[str, Any]:
    """The sanity record of a learned (z, y, x) PSF, as plain data.

    Parameters
    ----------
    psf : the learned PSF, non-negative, any scale.
    voxel_size : its voxel size in µm.
    optics : the sheet's optics {na, wavelength_nm, immersion_ri}, or None where unknown.

    Returns
    -------
    dict with the learned PSF's ``lateral_fwhm_um``/``axial_fwhm_um`` (None where not measurable),
    ``peak_share`` (brightest voxel / sum), ``plane_energy`` (share per z plane); where the optics
    are known the diffraction limits ``lateral_limit_um``/``axial_limit_um`` and the theoretical
    PSF's ``theoretical_lateral_fwhm_um``, ``theoretical_axial_fwhm_um`` and
    ``theoretical_peak_share`` (None where unknown); the ``optics`` and the thresholds used; and
    ``warnings``, a list of texts (see psf_sanity_warnings).
    """
    widths = measured_widths(psf, voxel_size)
    record: dict[str, Any] = {
        "lateral_fwhm_um": widths["lateral_um"], "axial_fwhm_um": widths["axial_um"],
        "peak_share": peak_share(psf), "plane_energy": plane_energy(psf),
        "lateral_limit_um": None, "axial_limit_um": None, "theoretical_lateral_fwhm_um": None,
        "theoretical_axial_fwhm_um": None, "theoretical_peak_share": None,
        "optics": dict(optics) if optics else None,
        "collapse_share": COLLAPSE_SHARE, "sub_diffraction_margin": SUB_DIFFRACTION_MARGIN,
    }  # fmt: skip
    if optics:
        record |= theoretical_measures(np.shape(psf), voxel_size, optics)
    record["warnings"] = psf_sanity_warnings(record)
    return record


def theoretical_measures(psf_shape: tuple[int, ...], voxel_size: VoxelSize, optics: dict[str, float]) -> dict[str, Any]:
    """The diffraction limits and the theoretical PSF's widths and peak share for the optics; all
    None (and a logged warning) for optics the formulas or the PSF model cannot take."""
    try:
        limits = diffraction_limits_um(optics)
        theoretical = theoretical_psf_for(psf_shape, voxel_size, optics)
    except (KeyError, ValueError) as error:
        log.warning("cannot compare the PSF with the optics %s (%s)", optics, error)
        return {}
    widths = measured_widths(theoretical, voxel_size)
    return {
        "lateral_limit_um": limits["lateral_um"], "axial_limit_um": limits["axial_um"],
        "theoretical_lateral_fwhm_um": widths["lateral_um"], "theoretical_axial_fwhm_um": widths["axial_um"],
        "theoretical_peak_share": peak_share(theoretical),
    }  # fmt: skip


def psf_sanity_warnings(record: dict[str, Any]) -> list[str]:
    """Warnings for a sanity record: a PSF collapsed onto one voxel, one narrower than the
    diffraction limit, one cut short by its support; each says what to try."""
    warnings = []
    share, threshold = record["peak_share"], record.get("collapse_share", COLLAPSE_SHARE)
    if share > threshold:
        warnings.append(
            f"The learned PSF has collapsed towards a point: its brightest voxel holds {share:.0%} of its "
            f"energy (above {threshold:.0%}; a widefield PSF sampled at Nyquist holds a few percent). "
            "Deconvolution with it does next to nothing, and the network was trained through a kernel that "
            f"models none of the blur. {PSF_ADVICE}"
        )
    narrow = sub_diffraction_axes(record)
    if narrow:
        optics = record["optics"]
        widths = "; ".join(narrow)
        warnings.append(
            f"The learned PSF is narrower than the diffraction limit of the sheet's optics (λ = "
            f"{optics['wavelength_nm']:g} nm, NA {optics['na']:g}, n {optics['immersion_ri']:g}): {widths}. No "
            "widefield microscope has such a PSF: the model has explained part of the blur some other way; "
            f"treat the learned PSF, and Richardson–Lucy with it, with caution. {PSF_ADVICE}"
        )
    cut = [axis for axis, key in (("lateral", "lateral_fwhm_um"), ("axial", "axial_fwhm_um")) if record[key] is None]
    if cut:
        warnings.append(
            f"The learned PSF does not fall to half its maximum inside its support ({' and '.join(cut)}): "
            "its width cannot be measured and the support probably cuts the blur short. Try a larger PSF "
            "support (train.psf.energy, train.psf.size_um) and patches with more context (patches.context_um)."
        )
    return warnings


def sub_diffraction_axes(record: dict[str, Any]) -> list[str]:
    """One text per axis whose learned FWHM is below SUB_DIFFRACTION_MARGIN of its diffraction
    limit, naming the width, the formula and the limit; empty where the optics are unknown."""
    margin = record.get("sub_diffraction_margin", SUB_DIFFRACTION_MARGIN)
    found = []
    for axis, formula in (("lateral", "0.51·λ/NA"), ("axial", "0.88·λ/(n − √(n² − NA²))")):
        width, limit = record[f"{axis}_fwhm_um"], record[f"{axis}_limit_um"]
        if width is not None and limit is not None and width < margin * limit:
            found.append(f"{axis} FWHM {width:.3g} µm < {formula} = {limit:.3g} µm")
    return found


def log_psf_sanity(record: dict[str, Any], where: str) -> None:
    """Log each warning of a sanity record (on this module's logger), or one info line when none."""
    for warning in record["warnings"]:
        log.warning("%s: %s", where, warning)
    if not record["warnings"]:
        log.info("%s: learned PSF passes its sanity checks (brightest voxel %.1f %% of the energy)",
                 where, 100 * record["peak_share"])

"""Evaluation of one campaign: metrics per sample and method, and PSF measurements.

Intensity spaces, stated once: Richardson–Lucy runs on the raw (ingested) stack and writes camera
units; cycledecon runs on the normalized stack and by default writes the raw stack's units too
(`deconvolve.units: input`, the inverse of the linear normalization, offset kept as RL keeps it), or
normalized units on request or after CLAHE. Ground-truth metrics fit each result to the truth by
least squares (a·result + b, see cycledecon.metrics.match_intensity), which removes any linear
intensity mapping, so all methods are scored alike whatever their units as long as the normalization
is linear (`percentile`). With `clahe`, the network's scores also carry CLAHE's non-linearity (stated
in the report). The noise/artefact gain compares each method's output with the stack it was given
(raw for RL, the normalized stack for cycledecon) in that stack's units: a result is brought there by
the units its attributes record (`in_units_of_given`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cycledecon import figures
from cycledecon.atomic import atomic_path
from cycledecon.errors import CycledeconError
from cycledecon.io import read_ome_zarr, read_volume
from cycledecon.metrics import background_std_ratio, compare_to_truth, frc_resolution
from cycledecon.normalize import LinearInverse, linear_inverse
from cycledecon.psf.theory import psf_from_optics
from cycledecon.psf_metrics import energy_in_box, fwhm, psf_correlation
from cycledecon.resample import read_psf_on_grid
from cycledecon.voxel import VoxelSize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """A result to score: its volume, and the volume it was computed from (for the background check)."""

    name: str
    path: Path
    input_path: Path


def load_attrs(path: str | Path) -> dict:
    """The cycledecon attributes of an OME-Zarr store; a TIFF has none (empty)."""
    path = Path(path)
    if path.suffix == ".zarr" or path.is_dir():
        return read_ome_zarr(path)[2]
    return {}


def in_units_of_given(result: np.ndarray, result_attrs: dict, given_attrs: dict) -> np.ndarray:
    """`result` in the intensity units of the stack it was computed from, by their attributes.

    A uint16 cycledecon output is divided by its stored scale; an output in input units computed
    from a normalized stack is taken back through its recorded inverse, and one in normalized units
    computed from a raw stack forward through its normalization's inverse. Results without a
    `deconvolution` record (raw, Richardson–Lucy) are in their input's units already.

    Raises CycledeconError when the units cannot be matched (a CLAHE-normalized output against a
    raw stack): the background check would then compare two different scales.
    """
    record = result_attrs.get("deconvolution")
    if record is None:
        return result
    values = np.asarray(result, dtype=np.float32)
    if record.get("output_dtype") == "uint16":
        values = values / np.float32(record["uint16_scale"])
    intensity = record.get("intensity") or {"units": "normalized"}  # stores before units were recorded
    given_normalized = given_attrs.get("normalization") is not None
    if intensity["units"] == "input" and given_normalized and intensity.get("inverse") is not None:
        return LinearInverse(intensity["inverse"]["scale"], intensity["inverse"]["offset"]).undo(values)
    if intensity["units"] == "normalized" and not given_normalized:
        try:
            return linear_inverse(result_attrs.get("normalization") or {}).apply(values)
        except CycledeconError as reason:
            raise CycledeconError(f"a normalized output cannot be compared with its raw input: {reason}") from None
    return values


def score_sample(sample: str, methods: list[Method], truth_path: Path | None) -> list[dict]:
    """One row per method: ground-truth metrics (when known), FRC resolution, background ratio."""
    truth = read_volume(truth_path)[0] if truth_path is not None else None
    # each input read once, shared by the methods computed from it (and the raw method, which is its own input)
    inputs = {path: read_volume(path) for path in {m.input_path for m in methods}}
    rows = []
    for method in methods:
        result, voxel_size = inputs[method.path] if method.path in inputs else read_volume(method.path)
        given = inputs[method.input_path][0]
        row = {"sample": sample, "method": method.name}
        if truth is not None:
            row.update(compare_to_truth(result, truth))
        row["frc_resolution_um"] = frc_resolution(result, voxel_size)
        try:
            comparable = in_units_of_given(result, load_attrs(method.path), load_attrs(method.input_path))
        except CycledeconError as exc:
            raise CycledeconError(f"{method.path}: {exc}") from None
        row["background_std_ratio"] = background_std_ratio(given, comparable)
        rows.append(row)
    return rows


#: Relative difference of a voxel size beyond which a result and its ground truth are said to differ.
VOXEL_SIZE_TOLERANCE = 0.01


def score_against_truth(results: list[Path], truth_path: Path) -> pd.DataFrame:
    """Score results against one ground truth, one row per result (`cycledecon evaluate`).

    Columns: ``result`` (its path), the ground-truth metrics of `compare_to_truth` (each result
    fitted to the truth by least squares first, so any units compare) and ``frc_resolution_um``,
    the lateral resolution the result shows by itself. A result of another shape than the truth
    is refused (CycledeconError naming both files); one of another voxel size is scored with a
    warning, since shape alone does not prove the two cover the same field.
    """
    truth, truth_voxel = read_volume(truth_path)
    if np.ptp(truth) == 0:
        raise CycledeconError(f"{truth_path}: the ground truth is constant; PSNR and SSIM are undefined")
    rows = []
    for path in results:
        result, voxel_size = read_volume(path)
        if result.shape != truth.shape:
            raise CycledeconError(f"{path}: shape {result.shape} differs from the ground truth's {truth.shape} "
                                  f"({truth_path})")  # fmt: skip
        if not np.allclose(voxel_size.as_tuple(), truth_voxel.as_tuple(), rtol=VOXEL_SIZE_TOLERANCE, atol=0):
            log.warning("%s: voxel size %s µm differs from the ground truth's %s µm", path,
                        list(voxel_size.as_tuple()), list(truth_voxel.as_tuple()))  # fmt: skip
        rows.append({"result": str(path), **compare_to_truth(result, truth),
                     "frc_resolution_um": frc_resolution(result, voxel_size)})  # fmt: skip
    return pd.DataFrame(rows)


def psf_rows(
    learned: np.ndarray, voxel_size: VoxelSize, theoretical: np.ndarray | None, true: np.ndarray | None
) -> pd.DataFrame:
    """FWHM of each known PSF, its correlation with the true PSF (`psf_correlation`), and the share of
    the true PSF's energy that its box holds (how much of the real blur it can model)."""
    rows = []
    for name, psf in (("learned", learned), ("theoretical", theoretical), ("true", true)):
        if psf is None:
            continue
        widths = fwhm(psf, voxel_size)
        rows.append({
            "psf": name,
            "lateral_fwhm_um": widths["lateral_um"],
            "axial_fwhm_um": widths["axial_um"],
            "correlation_to_true": psf_correlation(psf, true) if true is not None else np.nan,
            "true_energy_in_box": energy_in_box(true, psf.shape) if true is not None else np.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def evaluate_campaign(
    sample_paths: dict[str, dict],
    learned_psf_path: Path,
    true_psf_path: Path | None,
    optics: dict | None,
    psf_shape: tuple[int, int, int],
    metrics_csv: Path,
    psf_csv: Path,
    psf_figure: Path,
    true_psf_voxel_size: tuple[float, float, float] | None = None,
) -> None:
    """Score every widefield sample of a campaign and measure its PSFs.

    `sample_paths` maps sample → {"methods": {name: (result, input)}, "truth": path or None}.
    The true PSF is put on the learned PSF's grid (see cycledecon.resample.read_psf_on_grid);
    `true_psf_voxel_size` (µm, from the config) gives its voxel size when the file should not.
    """
    rows = []
    for sample, paths in sample_paths.items():
        methods = [Method(name, Path(r), Path(i)) for name, (r, i) in paths["methods"].items()]
        truth = Path(paths["truth"]) if paths["truth"] else None
        rows += score_sample(sample, methods, truth)
    write_csv(pd.DataFrame(rows), metrics_csv)
    learned, voxel_size = read_volume(learned_psf_path)
    given = VoxelSize(*true_psf_voxel_size) if true_psf_voxel_size is not None else None
    true = read_psf_on_grid(true_psf_path, voxel_size, given) if true_psf_path is not None else None
    theoretical = psf_from_optics(psf_shape, voxel_size, optics) if optics is not None else None
    write_csv(psf_rows(learned, voxel_size, theoretical, true), psf_csv)
    psfs = {"learned": learned, "theoretical": theoretical, "true": true}
    figures.psf_panel({k: v for k, v in psfs.items() if v is not None}, voxel_size, psf_figure)

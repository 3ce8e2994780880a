"""Export of cycledecon's OME-Zarr images to formats that other viewers open.

NGFF 0.5 stores (zarr v3) are what the pipeline writes; Fiji (Bio-Formats) and older zarr viewers
open an OME-TIFF or an NGFF 0.4 store (zarr v2) instead. An export reads the store read-only,
keeps its voxel size in µm, its name and its cycledecon provenance, and writes its output
atomically: an interrupted export leaves nothing that looks finished.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import numpy as np
import tifffile

from cycledecon import __version__
from cycledecon.atomic import OutputKind, atomic_path, check_replaceable, check_writable
from cycledecon.errors import CycledeconError
from cycledecon.io import COMMAND_REMEDY, OME_ZARR_IMAGE, check_not_an_input, image_name, read_ome_zarr, write_ome_zarr
from cycledecon.voxel import VoxelSize

OME_TIFF = "ome-tiff"
NGFF_04 = "ngff-0.4"
NGFF_05 = "ngff-0.5"
#: Export formats, by the name the command line takes.
FORMATS = (OME_TIFF, NGFF_04, NGFF_05)
#: OME-XML `Creator` of the OME-TIFFs cycledecon writes; marks an earlier export as replaceable.
CREATOR = f"cycledecon {__version__}"
#: OME-TIFF pixel types (Bio-Formats reads these); other dtypes are refused with one line.
_TIFF_DTYPES = {np.dtype(t) for t in ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64")}


def is_cycledecon_ome_tiff(path: Path) -> bool:
    """Whether `path` is a plain file holding an OME-TIFF that cycledecon exported (its OME-XML
    names `CREATOR`'s program): only such a file is replaced by a new export."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            creator = tifffile.xml2dict(tif.ome_metadata or "<OME/>").get("OME", {}).get("Creator", "")
    except (tifffile.TiffFileError, ValueError, OSError, AttributeError):
        return False
    return str(creator).startswith("cycledecon")


EXPORTED_OME_TIFF = OutputKind("an OME-TIFF exported by cycledecon", is_cycledecon_ome_tiff)


def export_store(
    input_store: str | Path, output: str | Path, format: str | None = None, overwrite: bool = False
) -> Path:
    """Convert one of cycledecon's OME-Zarr images to an OME-TIFF or to an NGFF 0.4 / 0.5 store.

    Parameters
    ----------
    input_store : an OME-Zarr image (NGFF 0.5 or 0.4) with (z, y, x) axes; opened read-only.
    output : the file (`.ome.tif`) or store (`.ome.zarr`) to write; an earlier export of the same
        kind is replaced, anything else there is refused unless `overwrite`. Never the input.
    format : "ome-tiff" (physical voxel size in µm in the OME-XML, for Fiji/Bio-Formats),
        "ngff-0.4" (zarr v2, for viewers without zarr v3) or "ngff-0.5" (zarr v3); by default
        the output's name decides (`format_for`).
    overwrite : replace whatever is at `output` (still never the input).

    Returns
    -------
    The output path. Bad input or output raises a CycledeconError with one line.
    """
    input_store, output = Path(input_store), Path(output)
    format = format_for(output, format)
    if not input_store.exists():
        raise CycledeconError(f"{input_store}: not found")
    kind = EXPORTED_OME_TIFF if format == OME_TIFF else OME_ZARR_IMAGE
    check_not_an_input(output, [input_store])
    if not overwrite:
        check_replaceable(output, kind, COMMAND_REMEDY)
    check_writable(output)
    data, voxel_size, attrs = read_ome_zarr(input_store)
    if data.ndim != 3:
        raise CycledeconError(f"{input_store}: a {data.ndim}D image; export takes (z, y, x) images")
    name = image_name(input_store)
    provenance = {**attrs, "exported_from": str(input_store.resolve())}
    if format == OME_TIFF:
        return write_exported_ome_tiff(data, output, voxel_size, name, provenance, overwrite)
    chunks = tuple(int(c) for c in data.chunksize)
    return write_ome_zarr(
        data, output, voxel_size, attrs=provenance, chunks=chunks, overwrite=overwrite,
        name=name, ngff_version=format.removeprefix("ngff-"),
    )  # fmt: skip


def format_for(output: Path, format: str | None = None) -> str:
    """The export format: `format` when given, else from the output's name (`.tif`/`.tiff` an
    OME-TIFF, `.zarr` an NGFF 0.4 store, the reason to export a store); a name that does not fit
    the format is refused, as a viewer would misread it."""
    if format is not None and format not in FORMATS:
        raise CycledeconError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    suffix = output.suffix.lower()
    tiff_name, zarr_name = suffix in (".tif", ".tiff"), suffix == ".zarr"
    if format is None:
        if not (tiff_name or zarr_name):
            raise CycledeconError(f"{output}: name it .ome.tif or .ome.zarr, or give the format ({', '.join(FORMATS)})")
        return OME_TIFF if tiff_name else NGFF_04
    if (format == OME_TIFF and not tiff_name) or (format != OME_TIFF and not zarr_name):
        wanted = ".ome.tif" if format == OME_TIFF else ".ome.zarr"
        raise CycledeconError(f"{output}: {format} exports are named *{wanted}")
    return format


def write_exported_ome_tiff(
    data: da.Array,
    path: Path,
    voxel_size: VoxelSize,
    name: str,
    provenance: dict,
    overwrite: bool = False,
) -> Path:
    """Write a (z, y, x) image as a one-series OME-TIFF, one page per plane, streamed a chunk of
    planes at a time, atomically.

    The OME-XML gives PhysicalSizeX/Y/Z in µm (what Fiji's Bio-Formats importer reads as the
    calibration), the image and channel name, `CREATOR` and, as the image description, the
    store's cycledecon provenance in JSON. BigTIFF is used when the pixels need it.
    """
    dtype = np.dtype(data.dtype)
    if dtype not in _TIFF_DTYPES:
        raise CycledeconError(f"{path}: OME-TIFF cannot hold {dtype} pixels")
    metadata = {
        "axes": "ZYX",
        "Name": name,
        "Creator": CREATOR,
        "Description": json.dumps({"cycledecon": provenance}),
        "Channel": {"Name": name},
        **{f"PhysicalSize{a}": v for a, v in zip("ZYX", voxel_size.as_tuple())},
        **{f"PhysicalSize{a}Unit": "µm" for a in "ZYX"},
    }
    with atomic_path(path, EXPORTED_OME_TIFF, overwrite) as tmp:
        tifffile.imwrite(
            tmp, data=_planes(data), shape=data.shape, dtype=dtype,
            ome=True, photometric="minisblack", metadata=metadata,
        )  # fmt: skip
    return path


def _planes(data: da.Array) -> Iterator[np.ndarray]:
    """The z planes of a (z, y, x) dask array in order, computing one chunk of planes at a time."""
    start = 0
    for depth in data.chunks[0]:
        block = np.asarray(data[start : start + depth].compute())
        yield from block
        start += depth

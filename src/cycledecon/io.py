"""Reading raw stacks (TIFF, OME-TIFF, ImageJ) and reading/writing OME-Zarr with physical voxel sizes.

Stores are NGFF 0.5 (zarr v3) by default, or NGFF 0.4 (zarr v2) for viewers that read no zarr v3
yet; either carries the image's name (the sample), an `omero` display block whose window comes
from the data, and cycledecon's provenance under the `cycledecon` attribute.

Raw inputs are opened read-only and streamed through tifffile's zarr interface, so a stack larger
than memory is never loaded whole. Every write goes through `cycledecon.atomic.atomic_path`, so an
interrupted run never leaves a store that looks finished. An existing output is replaced only when
it is an earlier output of the same kind that cycledecon wrote; anything else there (a raw stack, a
model, a user's folder) is refused with one line, unless the caller says `overwrite` (the command
line's --overwrite). An output is never one of the inputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numcodecs
import numpy as np
import tifffile
import zarr
from ome_zarr.format import Format, FormatV04, FormatV05
from ome_zarr.writer import add_metadata, write_multiscale

from cycledecon.atomic import OutputKind, atomic_path, check_replaceable, check_writable
from cycledecon.config import IngestConfig
from cycledecon.errors import CycledeconError
from cycledecon.voxel import VoxelSize


#: Chunk shape (z, y, x) of written stores, the workflow's `ingest.chunks`.
DEFAULT_CHUNKS = IngestConfig.chunks
#: No pyramid level is made whose largest lateral size would fall below this.
MIN_PYRAMID_SIZE = 64
MAX_PYRAMID_LEVELS = 5
#: Most bytes of pixels read at once: one strip or tile of a raw TIFF. Microscope frames are far
#: smaller, and planes larger than this are stored tiled; a larger block is refused, not allocated.
MAX_READ_BYTES = 2**30
#: How many times its file size a compressed TIFF's pixels may claim: deflate cannot pack data
#: more than about 1032:1 and LZW a few thousand; noisy microscope stacks compress far less.
MAX_COMPRESSION_RATIO = 4096

_UNIT_TO_UM = {
    "nm": 1e-3, "nanometer": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "micrometer": 1.0,
    "\\u00B5m": 1.0, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6, "meter": 1e6,
}  # fmt: skip
_AXES_UNITS = {"z": "micrometer", "y": "micrometer", "x": "micrometer"}

#: NGFF versions the writer produces: 0.5 on zarr v3 (the default) and 0.4 on zarr v2, for viewers
#: that cannot read zarr v3 yet (Fiji's n5-zarr and MoBIE, older napari-ome-zarr).
NGFF_FORMATS: dict[str, type[Format]] = {"0.5": FormatV05, "0.4": FormatV04}
DEFAULT_NGFF_VERSION = "0.5"
#: Chunk compression of zarr v2 stores: Blosc, which every zarr v2 reader decodes (zarr-python's
#: v2 default, zstd alone, is not read by all of them).
V2_COMPRESSOR = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
#: Percentiles of the data that open the display window (`omero` start/end): a robust contrast
#: that a few hot or empty voxels do not set.
WINDOW_PERCENTILES = (0.1, 99.9)
#: Most voxels of the coarsest pyramid level read for those percentiles (a regular subsample).
WINDOW_SAMPLE_VOXELS = 2**22


@dataclass
class Stack:
    """A lazily read (z, y, x) stack with its voxel size and where that size came from."""

    data: da.Array
    voxel_size: VoxelSize
    metadata: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------- reading
def read_stack(
    path: str | Path,
    channel: int | None = None,
    voxel_size: VoxelSize | None = None,
    default_voxel_size: VoxelSize | None = None,
) -> Stack:
    """Open a TIFF, OME-TIFF or ImageJ hyperstack lazily as a (z, y, x) dask array.

    Parameters
    ----------
    path : the raw file; opened read-only.
    channel : index of the channel to keep when the stack has a channel axis of length > 1.
    voxel_size : voxel size in µm from the sample sheet; it overrides file metadata (a facility
        that states a size knows better than a mis-set acquisition field). Without it, the OME or
        ImageJ metadata is used; with neither, `default_voxel_size` when given (a caller that knows
        the grid the file was made on), else a CycledeconError is raised (never a silent 1 µm).
    """
    path = Path(path)
    if not path.is_file():
        raise CycledeconError(f"{path}: file not found")
    try:
        with _tifffile_errors() as errors, tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
            compressed = series.keyframe.compression != tifffile.COMPRESSION.NONE
            check_claimed_size(path, shape, dtype, compressed, _stored_bytes(path, series))
            file_voxel_size, source, problem = _voxel_size_from_metadata(tif)
            array = zarr.open_array(series.aszarr(), mode="r")
            check_chunk_size(path, array.chunks, dtype)
    except (tifffile.TiffFileError, ValueError, IndexError, OSError) as exc:
        raise CycledeconError(f"{path}: not a readable TIFF, or truncated ({exc})") from None
    if errors:
        raise CycledeconError(f"{path}: not a readable TIFF, or truncated ({errors[0]})")
    if dtype.kind not in "uif":
        raise CycledeconError(f"{path}: unsupported pixel type {dtype}; need integer or float")
    data = da.from_zarr(array)
    data = _to_zyx(data, axes, channel, path)
    if voxel_size is None and file_voxel_size is None and default_voxel_size is not None:
        voxel_size, source = default_voxel_size, "default"
    elif voxel_size is None:
        if file_voxel_size is None:
            raise CycledeconError(
                f"{path}: {problem}; give it (sheet columns dz_um, dy_um, dx_um, or --voxel-size Z Y X)"
            )
        voxel_size = file_voxel_size
    else:
        source = "sample sheet"
    metadata = {
        "source_path": str(path.resolve()),
        "source_axes": axes,
        "source_shape": list(shape),
        "source_dtype": str(dtype),
        "voxel_size_source": source,
        "channel": channel,
    }
    return Stack(data=data, voxel_size=voxel_size, metadata=metadata)


def check_claimed_size(path: Path, shape: Sequence[int], dtype: np.dtype, compressed: bool, stored: int) -> None:
    """Refuse a header that claims more pixel data than the file holds, before anything is read.

    Uncompressed pixels are stored as they are, so their size (shape × item size) cannot exceed the
    `stored` bytes; compressed ones cannot exceed them by more than MAX_COMPRESSION_RATIO. A forged
    header (a tiny file claiming 100000² pages) would otherwise make the reader allocate its claim.
    """
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > stored * (MAX_COMPRESSION_RATIO if compressed else 1):
        limit = f", beyond {MAX_COMPRESSION_RATIO}:1 compression" if compressed else ""
        raise CycledeconError(
            f"{path}: not a readable TIFF, or truncated (its header claims {'×'.join(map(str, shape))} {dtype}, "
            f"{_human_bytes(claimed)} of pixels, stored in {_human_bytes(stored)}{limit})"
        )


def _stored_bytes(path: Path, series: tifffile.TiffPageSeries) -> int:
    """Bytes of the files that hold a series' pages: this file, plus the others of a multi-file
    OME-TIFF (Micro-Manager splits large acquisitions into several)."""
    files = {path.resolve()} | {Path(page.parent.filehandle.path).resolve() for page in series.pages if page is not None}
    return sum(f.stat().st_size for f in files)


def check_chunk_size(path: Path, chunks: Sequence[int], dtype: np.dtype) -> None:
    """Refuse a file whose strips or tiles (the blocks read at once) exceed MAX_READ_BYTES, so that
    reading never allocates more than that per block whatever the header says."""
    block = math.prod(chunks) * dtype.itemsize
    if block > MAX_READ_BYTES:
        raise CycledeconError(
            f"{path}: its pixels are stored in blocks of {'×'.join(map(str, chunks))} {dtype} ({_human_bytes(block)}), "
            f"more than the {_human_bytes(MAX_READ_BYTES)} read at once; save it in smaller strips or tiles"
        )


def _human_bytes(count: int) -> str:
    """A byte count with a binary unit, for messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _tifffile_errors() -> Iterator[list[str]]:
    """Collect the errors tifffile logs instead of raising (it skips corrupt pages of a
    truncated file and would silently hand back fewer planes). They are held back from the log
    meanwhile (warnings pass): the first becomes the caller's one-line error."""
    messages: list[str] = []

    def collect(record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        messages.append(record.getMessage())
        return False

    logger = logging.getLogger("tifffile")
    logger.addFilter(collect)
    try:
        yield messages
    finally:
        logger.removeFilter(collect)


def _to_zyx(data: da.Array, axes: str, channel: int | None, path: Path) -> da.Array:
    """Drop singleton axes, select the channel and return (z, y, x); reject what is not a 3D stack."""
    axes = axes.upper()
    for name, size in zip(list(axes), data.shape):
        if name == "T" and size > 1:
            raise CycledeconError(f"{path}: time series ({size} time points) are not supported")
    index: list[Any] = []
    kept = ""
    for name, size in zip(axes, data.shape):
        if name == "C" and size > 1:
            if channel is None:
                raise CycledeconError(f"{path}: {size} channels; set the sample's channel in the sheet")
            if not 0 <= channel < size:
                raise CycledeconError(f"{path}: channel {channel} out of range (file has {size})")
            index.append(channel)
        elif size == 1 and name not in "YX":
            index.append(0)
        else:
            index.append(slice(None))
            kept += name
    data = data[tuple(index)]
    if data.ndim == 2:
        raise CycledeconError(f"{path}: a 2D image ({'×'.join(map(str, data.shape))}); need a 3D stack")
    if data.ndim != 3 or kept[-2:] != "YX":
        raise CycledeconError(f"{path}: unsupported dimensions {kept} {data.shape}; need (z, y, x)")
    return data


def _voxel_size_from_metadata(tif: tifffile.TiffFile) -> tuple[VoxelSize | None, str | None, str]:
    """Voxel size in µm from OME-XML or ImageJ metadata: (size, source, "") or, when the file has
    none or an unusable one, (None, None, why) for the one-line error, which only a missing sheet
    or --voxel-size size raises (either one stands in for the file's metadata)."""
    missing = "no voxel size in the file's metadata"
    try:
        if tif.is_ome and tif.ome_metadata:
            source = "OME metadata"
            image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
            sizes = []
            for axis in "ZYX":
                value = pixels.get(f"PhysicalSize{axis}")
                unit = str(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
                if value is None or unit not in _UNIT_TO_UM:
                    return None, None, missing
                sizes.append(float(value) * _UNIT_TO_UM[unit])
        elif tif.is_imagej and tif.imagej_metadata:
            source = "ImageJ metadata"
            meta = tif.imagej_metadata
            unit = str(meta.get("unit", "")).replace("\\u00B5", "µ")
            spacing = meta.get("spacing")
            if spacing is None or unit not in _UNIT_TO_UM:
                return None, None, missing
            tags = tif.pages.first.tags
            absent = [name for name in ("YResolution", "XResolution") if name not in tags]
            if absent:  # ImageJ keeps the pixel size there alone
                return None, None, f"{missing} (its ImageJ metadata has no {', '.join(absent)} tag)"
            scale = _UNIT_TO_UM[unit]
            # a resolution is pixels per unit, a rational (numerator, denominator); 0 pixels per
            # unit is an infinite pixel, refused below like any size that is not positive
            lateral = [tags[name].value for name in ("YResolution", "XResolution")]
            sizes = [float(spacing) * scale, *(d / n * scale if n else math.inf for n, d in lateral)]
        else:
            return None, None, missing
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        return None, None, f"{missing} (unreadable: {exc.__class__.__name__}: {exc})"
    for axis, size in zip("zyx", sizes):
        if not (math.isfinite(size) and size > 0):
            return None, None, f"its {source} gives voxel size {axis} = {size} µm, not a positive size"
    return VoxelSize(*sizes), source, ""


def check_values(data: da.Array, path: str | Path) -> tuple[float, float]:
    """Reject NaN/Inf and all-constant stacks in one streaming pass; return (min, max)."""
    try:
        finite, low, high = da.compute(da.isfinite(data).all(), data.min(), data.max())
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise CycledeconError(f"{path}: not a readable TIFF, or truncated ({exc})") from None
    if not finite:
        raise CycledeconError(f"{path}: contains NaN or Inf values")
    if low == high:
        raise CycledeconError(f"{path}: every voxel has the same value ({low}); nothing to deconvolve")
    return float(low), float(high)


# ------------------------------------------------------------------------------- output safety
#: The root-group attribute every OME-Zarr image cycledecon writes carries (its provenance); no
#: other tool writes it, so it marks a store as a previous cycledecon output that may be replaced.
MARKER_ATTR = "cycledecon"


def is_cycledecon_image(path: Path) -> bool:
    """Whether `path` is an OME-Zarr image store that cycledecon wrote.

    It must be a folder (not a link) whose root group (zarr v3 or v2) holds `ome` multiscales and
    cycledecon's `MARKER_ATTR` attribute, and which contains nothing but that group's metadata
    files and the pyramid levels it lists: a foreign store, or one the user put files into, is
    never replaced.
    """
    if path.is_symlink() or not path.is_dir():
        return False
    root = _root_group_attributes(path)
    if root is None:
        return False
    attrs, metadata_files = root
    try:
        levels = {d["path"] for d in _multiscale(attrs)["datasets"]}
    except (KeyError, IndexError, TypeError):
        return False
    if not isinstance(attrs.get(MARKER_ATTR), dict):
        return False
    return {entry.name for entry in path.iterdir()} <= {*metadata_files, *levels}


def _root_group_attributes(path: Path) -> tuple[dict[str, Any], set[str]] | None:
    """(attributes, names of the metadata files) of the root group of a zarr v3 or v2 store at
    `path`, read from its metadata files alone; None when `path` holds no zarr group."""
    try:
        if (path / "zarr.json").is_file():
            meta = json.loads((path / "zarr.json").read_text())
            if meta.get("node_type") != "group":
                return None
            return dict(meta.get("attributes", {})), {"zarr.json"}
        if (path / ".zgroup").is_file():
            if json.loads((path / ".zgroup").read_text()).get("zarr_format") != 2:
                return None
            zattrs = path / ".zattrs"
            return (json.loads(zattrs.read_text()) if zattrs.is_file() else {}), {".zgroup", ".zattrs"}
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _multiscale(attrs: dict[str, Any]) -> dict[str, Any]:
    """The first multiscale of a group's attributes: under `ome` in NGFF 0.5, at the top in 0.4."""
    return attrs.get("ome", attrs)["multiscales"][0]


OME_ZARR_IMAGE = OutputKind("an OME-Zarr image written by cycledecon", is_cycledecon_image)


#: How a refusal to replace an output ends for the commands that take --overwrite (ingest, deconvolve).
COMMAND_REMEDY = "move it away, choose another output, or pass --overwrite"


def check_not_an_input(output: str | Path, inputs: Sequence[str | Path]) -> None:
    """Refuse an output that is, lies inside or contains one of the command's inputs: replacing it
    would destroy what the command reads."""
    output = Path(output)
    target = output.resolve()
    for source in map(Path, inputs):
        resolved = source.resolve()
        if target == resolved:
            problem = "is an input of this command"
        elif resolved in target.parents:
            problem = f"lies inside {source}, an input of this command"
        elif target in resolved.parents:
            problem = f"contains {source}, an input of this command"
        else:
            continue
        raise CycledeconError(f"{output}: {problem}; choose another output path")


def check_output(
    output: str | Path, inputs: Sequence[str | Path], kind: OutputKind = OME_ZARR_IMAGE, overwrite: bool = False
) -> None:
    """A command's output check, run before any work: never one of its inputs (even with
    `overwrite`), only an earlier output of the same kind may be replaced (anything with
    `overwrite`), and its folder can be written."""
    check_not_an_input(output, inputs)
    if not overwrite:
        check_replaceable(output, kind, COMMAND_REMEDY)
    check_writable(output)


def pyramid_factors(shape: tuple[int, ...], voxel_size: VoxelSize) -> list[tuple[int, int, int]]:
    """Per-level (z, y, x) downsampling factors that make voxels more isotropic, never less.

    An axis is halved only while its voxel is within 1.5× of the finest axis; so a stack with
    0.1 µm pixels and 0.25 µm steps is first downsampled laterally, and in z only once the lateral
    voxels have caught up.
    """
    sizes = np.array(voxel_size.as_tuple(), dtype=float)
    dims = np.array(shape, dtype=float)
    factors = []
    for _ in range(MAX_PYRAMID_LEVELS - 1):
        step = np.where((sizes <= 1.5 * sizes.min()) & (dims >= 2), 2, 1)
        if max(dims[1:] / step[1:]) < MIN_PYRAMID_SIZE:
            break
        factors.append(tuple(int(s) for s in step))
        sizes, dims = sizes * step, np.floor(dims / step)
    return factors


def _downsample(image: da.Array, factor: tuple[int, int, int]) -> da.Array:
    """Block-mean downsampling that keeps the dtype (integers are rounded back)."""
    trimmed = image[tuple(slice(0, (n // f) * f) for n, f in zip(image.shape, factor))]
    mean = da.coarsen(np.mean, trimmed.astype(np.float32), dict(enumerate(factor)), trim_excess=True)
    if np.issubdtype(image.dtype, np.integer):
        return da.round(mean).astype(image.dtype)
    return mean.astype(image.dtype)


def _transform(scale: tuple[float, ...], translation: tuple[float, ...]) -> list[dict[str, Any]]:
    return [
        {"type": "scale", "scale": [float(v) for v in scale]},
        {"type": "translation", "translation": [float(v) for v in translation]},
    ]


def store_name(path: str | Path) -> str:
    """The image name a store's path gives: its file name without `.ome.zarr` (or `.zarr`), so
    `results/deconvolved/wf_01.ome.zarr` is `wf_01`."""
    name = Path(path).name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def ngff_format(version: str) -> Format:
    """The ome-zarr format object that writes NGFF `version` ("0.5" or "0.4")."""
    try:
        return NGFF_FORMATS[str(version)]()
    except KeyError:
        raise CycledeconError(
            f"NGFF version {version!r} cannot be written; choose one of {', '.join(NGFF_FORMATS)}"
        ) from None


def write_ome_zarr(
    data: np.ndarray | da.Array,
    path: str | Path,
    voxel_size: VoxelSize,
    attrs: dict[str, Any] | None = None,
    chunks: tuple[int, int, int] = DEFAULT_CHUNKS,
    overwrite: bool = False,
    name: str | None = None,
    ngff_version: str = DEFAULT_NGFF_VERSION,
) -> Path:
    """Write a (z, y, x) volume as an OME-Zarr image with a pyramid, atomically.

    Parameters
    ----------
    data : the full-resolution volume; a dask array is streamed chunk by chunk.
    path : the store to create (`*.ome.zarr`); replaced atomically if it is an earlier cycledecon
        image store (anything else there is refused, see `is_cycledecon_image`).
    voxel_size : voxel size in µm, written as the scale transform of level 0.
    attrs : JSON-serialisable provenance stored under the group's `cycledecon` attribute.
    chunks : on-disk chunk shape (z, y, x), clipped to the volume.
    overwrite : replace whatever is at `path` (see `atomic_path`).
    name : the multiscale's name and channel label, which viewers show (the sample); by default
        the store's file name without `.ome.zarr` (`store_name`).
    ngff_version : "0.5" (zarr v3, the default) or "0.4" (zarr v2, for viewers without zarr v3).
    """
    fmt = ngff_format(ngff_version)
    image = da.asarray(data)
    if image.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {image.shape}")
    chunks = tuple(min(c, n) for c, n in zip(chunks, image.shape))
    pyramid, transforms = _pyramid(image.rechunk(chunks), voxel_size, chunks)
    name = name or store_name(path)
    with atomic_path(path, OME_ZARR_IMAGE, overwrite) as tmp, warnings.catch_warnings():
        # ome-zarr 0.18 deprecates explicit transforms, but its own derivation from `scale` writes
        # the half-voxel translations in voxels instead of µm; ours are exact.
        warnings.filterwarnings("ignore", message=".*coordinate_transformations", category=DeprecationWarning)
        group = zarr.open_group(str(tmp), mode="w", zarr_format=fmt.zarr_format)
        write_multiscale(
            pyramid,
            group,
            fmt=fmt,
            axes=[{"name": a, "type": "space", "unit": _AXES_UNITS[a]} for a in "zyx"],
            coordinate_transformations=transforms,
            storage_options=_storage_options(chunks, fmt),
            name=name,
        )
        add_metadata(group, {"omero": omero_metadata(_written_level0(group), name)}, fmt)
        group.attrs[MARKER_ATTR] = attrs or {}
    return Path(path)


def _pyramid(
    image: da.Array, voxel_size: VoxelSize, chunks: tuple[int, ...]
) -> tuple[list[da.Array], list[list[dict[str, Any]]]]:
    """The pyramid levels of `image` (`pyramid_factors`) and each level's scale and translation."""
    pyramid, transforms = [image], [_transform(voxel_size.as_tuple(), (0.0, 0.0, 0.0))]
    for factor in pyramid_factors(image.shape, voxel_size):
        pyramid.append(_downsample(pyramid[-1], factor).rechunk(chunks))
        scale, shift = transforms[-1][0]["scale"], transforms[-1][1]["translation"]
        # a block mean's centre lies (f - 1) / 2 finer voxels past the block's first voxel
        transforms.append(
            _transform(
                tuple(s * f for s, f in zip(scale, factor)),
                tuple(t + (f - 1) / 2 * s for t, f, s in zip(shift, factor, scale)),
            )
        )
    return pyramid, transforms


def _storage_options(chunks: tuple[int, ...], fmt: Format) -> dict[str, Any]:
    """zarr array options: the chunk shape, and for zarr v2 the widely read Blosc compressor."""
    if fmt.zarr_format == 2:
        return {"chunks": chunks, "compressors": V2_COMPRESSOR}
    return {"chunks": chunks}


def _written_level0(group: zarr.Group) -> da.Array:
    """The finest level of a just-written image group, read back lazily."""
    return da.from_zarr(group[_multiscale(group.attrs.asdict())["datasets"][0]["path"]])


def display_window(image: da.Array) -> dict[str, float]:
    """The `omero` window of an image: `min`/`max` its exact range, `start`/`end` the
    `WINDOW_PERCENTILES` of a regular subsample of at most `WINDOW_SAMPLE_VOXELS` voxels, so a few
    bright or dark outliers do not set the contrast. One streamed pass over `image`; called on a
    written store, it reads what was written and recomputes nothing."""
    step = max(1, math.ceil((image.size / WINDOW_SAMPLE_VOXELS) ** (1 / image.ndim)))
    subsample = image[(slice(None, None, step),) * image.ndim]
    low, high, sample = da.compute(da.nanmin(image), da.nanmax(image), subsample)
    low, high = float(low), float(high)
    start, end = (float(v) for v in np.nanpercentile(np.asarray(sample, dtype=np.float64), WINDOW_PERCENTILES))
    if not start < end:  # a nearly constant image: show its whole range
        start, end = low, high
    return {"min": low, "max": high, "start": start, "end": end}


def omero_metadata(image: da.Array, name: str) -> dict[str, Any]:
    """The `omero` block of a one-channel (z, y, x) image: a grey channel labelled `name` whose
    display window comes from the data (`display_window`), shown from its middle plane."""
    channel = {
        "label": name,
        "color": "FFFFFF",
        "active": True,
        "coefficient": 1.0,
        "family": "linear",
        "inverted": False,
        "window": display_window(image),
    }
    return {"name": name, "channels": [channel], "rdefs": {"model": "greyscale", "defaultZ": image.shape[0] // 2}}


# ------------------------------------------------------------------------------ reading OME-Zarr
def read_volume(path: str | Path) -> tuple[np.ndarray, VoxelSize]:
    """A whole volume as float32 in memory, from an OME-Zarr store or a TIFF."""
    path = Path(path)
    if path.suffix == ".zarr" or path.is_dir():
        data, voxel_size, _ = read_ome_zarr(path)
        return np.asarray(data, dtype=np.float32), voxel_size
    stack = read_stack(path)
    return np.asarray(stack.data, dtype=np.float32), stack.voxel_size


def read_ome_zarr(path: str | Path) -> tuple[da.Array, VoxelSize, dict[str, Any]]:
    """Open level 0 of an OME-Zarr image (NGFF 0.5 or 0.4) lazily: (data, voxel size in µm,
    cycledecon attributes)."""
    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = group.attrs.asdict()
        level0 = _multiscale(attrs)["datasets"][0]
        scale = next(t["scale"] for t in level0["coordinateTransformations"] if t["type"] == "scale")
        data = da.from_zarr(group[level0["path"]])
    except (KeyError, IndexError, StopIteration, FileNotFoundError, zarr.errors.BaseZarrError) as exc:
        raise CycledeconError(f"{path}: not an OME-Zarr image ({exc.__class__.__name__}: {exc})") from None
    return data, VoxelSize(*scale[-3:]), dict(attrs.get(MARKER_ATTR, {}))


def image_name(path: str | Path) -> str:
    """The name of an OME-Zarr image: its multiscale's name, or, where that is missing or the
    group path "/" that older writers put there, the store's file name (`store_name`)."""
    try:
        name = _multiscale(zarr.open_group(str(path), mode="r").attrs.asdict()).get("name")
    except (KeyError, IndexError, TypeError, FileNotFoundError, zarr.errors.BaseZarrError):
        name = None
    return name if isinstance(name, str) and name.strip("/") else store_name(path)


def write_ome_tiff(data: np.ndarray, path: str | Path, voxel_size: VoxelSize) -> Path:
    """Write a (z, y, x) array as an OME-TIFF carrying its physical voxel size, atomically."""
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            np.asarray(data),
            ome=True,
            photometric="minisblack",
            metadata={
                "axes": "ZYX",
                "PhysicalSizeZ": voxel_size.z,
                "PhysicalSizeY": voxel_size.y,
                "PhysicalSizeX": voxel_size.x,
                "PhysicalSizeZUnit": "µm",
                "PhysicalSizeYUnit": "µm",
                "PhysicalSizeXUnit": "µm",
            },
        )
    return Path(path)

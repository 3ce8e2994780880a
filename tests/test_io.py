"""Ingest: raw stacks → OME-Zarr with exact voxel sizes; every bad input fails cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from helpers import sha256, user_folder, write_ome
from cycledecon import io
from cycledecon.ingest import ingest
from cycledecon.errors import CycledeconError
from cycledecon.voxel import VoxelSize


def read_with_ome_zarr(path: Path):
    """Read a store the way other NGFF tools would, not with our own reader."""
    node = list(Reader(parse_url(str(path)))())[0]
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    axes = [a["name"] for a in node.metadata["axes"]]
    units = {a["unit"] for a in node.metadata["axes"]}
    return node.data, scale, axes, units


def test_ome_tiff_round_trip_keeps_exact_voxel_size(tmp_path, stack):
    raw = write_ome(tmp_path / "s.ome.tif", stack, voxel_size=(0.25, 0.1, 0.1))
    out = ingest(raw, tmp_path / "s.ome.zarr")
    data, scale, axes, units = read_with_ome_zarr(out)
    assert scale == [0.25, 0.1, 0.1]
    assert axes == ["z", "y", "x"] and units == {"micrometer"}
    assert data[0].dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(data[0]), stack)


def test_imagej_spacing_round_trip(tmp_path, stack):
    raw = tmp_path / "ij.tif"
    tifffile.imwrite(raw, stack, imagej=True, resolution=(10.0, 10.0), metadata={"spacing": 0.25, "unit": "um", "axes": "ZYX"})
    out = ingest(raw, tmp_path / "ij.ome.zarr")
    _, scale, _, _ = read_with_ome_zarr(out)
    np.testing.assert_allclose(scale, [0.25, 0.1, 0.1], rtol=1e-6)  # TIFF stores 1/0.1 as a rational


def test_channel_is_selected_from_czyx(tmp_path, stack):
    two = np.stack([stack, stack // 2])
    raw = write_ome(tmp_path / "c.ome.tif", two, axes="CZYX")
    out = ingest(raw, tmp_path / "c.ome.zarr", channel=1)
    data, voxel_size, attrs = io.read_ome_zarr(out)
    np.testing.assert_array_equal(data.compute(), stack // 2)
    assert attrs["channel"] == 1 and attrs["source_axes"] == "CZYX"


def test_sheet_voxel_size_overrides_file(tmp_path, stack):
    raw = write_ome(tmp_path / "s.ome.tif", stack, voxel_size=(1.0, 1.0, 1.0))
    out = ingest(raw, tmp_path / "s.ome.zarr", voxel_size=VoxelSize(0.3, 0.13, 0.13))
    _, voxel_size, attrs = io.read_ome_zarr(out)
    assert voxel_size == VoxelSize(0.3, 0.13, 0.13)
    assert attrs["voxel_size_source"] == "sample sheet"


def test_pyramid_downsamples_lateral_first_and_keeps_dtype(tmp_path, rng):
    volume = rng.integers(0, 1000, size=(8, 256, 256), dtype=np.uint16)
    out = io.write_ome_zarr(volume, tmp_path / "p.ome.zarr", VoxelSize(0.25, 0.1, 0.1), chunks=(8, 64, 64))
    data, _, _, _ = read_with_ome_zarr(out)
    node = list(Reader(parse_url(str(out)))())[0]
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert [d.shape for d in data] == [(8, 256, 256), (8, 128, 128), (4, 64, 64)]
    assert scales[1] == [0.25, 0.2, 0.2] and scales[2] == [0.5, 0.4, 0.4]
    assert all(d.dtype == np.uint16 for d in data)
    assert data[0].chunksize == (8, 64, 64)


def _truncated(path: Path, stack: np.ndarray, keep: float = 0.33) -> Path:
    write_ome(path, stack)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return path


BAD_INPUTS = {
    "missing file": (lambda p, s: p, "file not found"),
    "not a TIFF": (lambda p, s: (p.write_text("hello"), p)[1], "not a readable TIFF, or truncated"),
    "truncated TIFF": (_truncated, "not a readable TIFF, or truncated"),
    "truncated pixel data": (lambda p, s: _truncated(p, s, keep=0.97), "not a readable TIFF, or truncated"),
    "2D image": (lambda p, s: write_ome(p, s[0], axes="YX"), "2D image"),
    "time series": (lambda p, s: write_ome(p, np.stack([s, s]), axes="TZYX"), "time series"),
    "complex dtype": (lambda p, s: write_ome(p, s.astype(np.complex64)), "unsupported pixel type"),
    "NaN values": (lambda p, s: write_ome(p, np.where(s > 3900, np.nan, s).astype(np.float32)), "NaN or Inf"),
    "Inf values": (lambda p, s: write_ome(p, np.where(s > 3900, np.inf, s).astype(np.float32)), "NaN or Inf"),
    "constant stack": (lambda p, s: write_ome(p, np.full_like(s, 7)), "same value"),
    "no voxel size": (lambda p, s: (tifffile.imwrite(p, s), p)[1], "no voxel size"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_line_and_leaves_nothing(tmp_path, stack, case):
    make, expected = BAD_INPUTS[case]
    raw = make(tmp_path / "raw.tif", stack)
    before = sha256(raw) if raw.exists() else None
    out = tmp_path / "out" / "raw.ome.zarr"
    with pytest.raises(CycledeconError) as info:
        ingest(raw, out)
    message = str(info.value)
    assert message.startswith(str(raw)) and expected in message and "\n" not in message
    assert not out.exists()
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True
    if before is not None:
        assert sha256(raw) == before


def test_interrupted_write_leaves_no_store(tmp_path, stack, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(io, "write_multiscale", fail)
    out = tmp_path / "o.ome.zarr"
    with pytest.raises(RuntimeError):
        io.write_ome_zarr(stack, out, VoxelSize(0.25, 0.1, 0.1))
    assert list(tmp_path.iterdir()) == []


def test_raw_input_is_opened_read_only(tmp_path, stack):
    raw = write_ome(tmp_path / "s.ome.tif", stack)
    raw.chmod(0o444)
    ingest(raw, tmp_path / "s.ome.zarr")
    assert oct(raw.stat().st_mode & 0o777) == "0o444"


def test_reading_a_missing_store_names_it(tmp_path):
    missing = tmp_path / "nothing.ome.zarr"
    with pytest.raises(CycledeconError, match="nothing.ome.zarr: not an OME-Zarr image"):
        io.read_ome_zarr(missing)


def test_reading_a_zarr_group_without_an_image_names_it(tmp_path):
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").attrs["note"] = "no multiscales"
    with pytest.raises(CycledeconError, match="plain.zarr: not an OME-Zarr image"):
        io.read_ome_zarr(tmp_path / "plain.zarr")


# ----------------------------------------------------------------------------- output safety
def _foreign_ome_zarr(path: Path) -> Path:
    """An OME-Zarr image another tool wrote: the same layout, without cycledecon's attribute."""
    zarr.open_group(str(path), mode="w").create_array("0", shape=(2, 4, 4), dtype="uint8")
    zarr.open_group(str(path), mode="a").attrs["ome"] = {"multiscales": [{"datasets": [{"path": "0"}]}]}
    return path


def _store_with_a_user_file(path: Path) -> Path:
    io.write_ome_zarr(np.ones((2, 4, 4), np.uint16), path, VoxelSize(1, 1, 1))
    (path / "notes.txt").write_text("mine")
    return path


FOREIGN_OUTPUTS = {
    "a file": lambda p: (p.write_bytes(b"not ours"), p)[1],
    "a user folder": user_folder,
    "an OME-Zarr from another tool": _foreign_ome_zarr,
    "our store with a user file inside": _store_with_a_user_file,
}


def _tree(path: Path) -> dict[str, str]:
    """Every file under `path` (or `path` itself) with its checksum."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): sha256(p) for p in files}


@pytest.mark.parametrize("case", sorted(FOREIGN_OUTPUTS))
def test_output_not_written_by_cycledecon_is_refused_and_kept(tmp_path, stack, case):
    raw = write_ome(tmp_path / "s.ome.tif", stack)
    out = FOREIGN_OUTPUTS[case](tmp_path / "out.ome.zarr")
    before = _tree(out)
    with pytest.raises(CycledeconError) as info:
        ingest(raw, out)
    message = str(info.value)
    assert message.startswith(f"{out}: ") and "not an OME-Zarr image written by cycledecon" in message
    assert "\n" not in message
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ome.zarr", "s.ome.tif"]


def test_ingest_onto_its_own_input_keeps_it(tmp_path, stack):
    raw = write_ome(tmp_path / "s.ome.tif", stack)
    before = sha256(raw)
    with pytest.raises(CycledeconError, match=f"^{raw}: .*is an input of this command"):
        ingest(raw, raw)
    assert sha256(raw) == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.ome.tif"]


def test_previous_store_of_the_same_kind_is_replaced(tmp_path, stack):
    out = ingest(write_ome(tmp_path / "a.ome.tif", stack), tmp_path / "s.ome.zarr")
    ingest(write_ome(tmp_path / "b.ome.tif", stack[::-1].copy()), out)
    data, _, attrs = io.read_ome_zarr(out)
    np.testing.assert_array_equal(data.compute(), stack[::-1])
    assert attrs["source_path"].endswith("b.ome.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ome.tif", "b.ome.tif", "s.ome.zarr"]


def forged_tiff(path: Path, rows: int = 100_000, cols: int = 100_000, compression: str | None = None,
                tile: tuple[int, int] | None = None, pad_to: int = 0) -> Path:
    """A small real TIFF (3 pages of 16×16 uint16) whose pages then claim `rows`×`cols` pixels in one
    strip (or in their tiles), as a hostile or corrupt header would; `pad_to` appends zeros up to
    that many bytes, so that only the claimed strip size is implausible."""
    data = np.random.default_rng(0).integers(1, 999, (3, 16, 16), np.uint16)
    tifffile.imwrite(path, data, metadata=None, photometric="minisblack", compression=compression,
                     **({"tile": tile} if tile else {"rowsperstrip": 16}))  # fmt: skip
    with tifffile.TiffFile(path, mode="r+") as tif:
        for page in tif.pages:
            for code, value in ((256, cols), (257, rows), (278, rows)):
                if code in page.tags:
                    page.tags[code].overwrite(value, dtype=4)  # LONG
    with open(path, "ab") as stream:
        stream.write(bytes(max(0, pad_to - path.stat().st_size)))
    return path


FORGED_HEADERS = {
    "uncompressed strips": ({}, r"header claims 3×100000×100000 uint16, 55\.9 GiB of pixels, stored in \d\.\d KiB\)$"),
    "deflate strips": ({"compression": "zlib"}, "header claims 3×100000×100000 uint16, .* beyond 4096:1 compression"),
    "deflate tiles": ({"compression": "zlib", "tile": (16, 16)}, "header claims 3×100000×100000 uint16, .* beyond 4096:1"),
    "one huge strip": ({"rows": 40_000, "cols": 16_384, "compression": "zlib", "pad_to": 1_000_000},
                       r"stored in blocks of 1×40000×16384 uint16 \(1\.2 GiB\), more than the 1\.0 GiB read at once"),
}  # fmt: skip


@pytest.mark.parametrize("options, message", FORGED_HEADERS.values(), ids=FORGED_HEADERS.keys())
def test_a_header_claiming_more_than_the_file_holds_is_refused_before_reading(tmp_path, options, message):
    """Checked against the file size (and, for compressed pixels, a bound on compression) and the
    size of one strip or tile, when the file is opened: nothing the header claims is allocated."""
    raw = forged_tiff(tmp_path / "forged.tif", **options)
    before = sha256(raw)
    with pytest.raises(CycledeconError) as info:
        io.read_stack(raw, voxel_size=VoxelSize(0.25, 0.1, 0.1))
    text = str(info.value)
    assert text.startswith(f"{raw}: ") and "\n" not in text and __import__("re").search(message, text), text
    assert sha256(raw) == before



# ------------------------------------------------------------------------ voxel size from metadata
def imagej_without_resolution(path: Path, stack: np.ndarray) -> Path:
    """An ImageJ hyperstack whose pages lack XResolution/YResolution (as some writers leave it):
    tifffile always writes them, so their tag codes are renamed afterwards."""
    import struct

    tifffile.imwrite(path, stack, imagej=True, metadata={"spacing": 0.25, "unit": "um", "axes": "ZYX"})
    with tifffile.TiffFile(path) as tif:
        entries = [(tag.offset, {282: 290, 283: 291}[tag.code]) for page in tif.pages
                   for tag in page.tags.values() if tag.code in (282, 283)]  # fmt: skip
    with open(path, "r+b") as stream:
        for offset, code in entries:
            stream.seek(offset)
            stream.write(struct.pack("<H", code))
    return path


def test_imagej_without_resolution_tags_takes_the_sheets_voxel_size(tmp_path, stack):
    raw = imagej_without_resolution(tmp_path / "ij.tif", stack)
    read = io.read_stack(raw, voxel_size=VoxelSize(0.3, 0.13, 0.13))
    assert read.voxel_size == VoxelSize(0.3, 0.13, 0.13) and read.metadata["voxel_size_source"] == "sample sheet"
    np.testing.assert_array_equal(read.data.compute(), stack)


def test_imagej_without_resolution_tags_and_no_voxel_size_is_one_line(tmp_path, stack):
    raw = imagej_without_resolution(tmp_path / "ij.tif", stack)
    with pytest.raises(CycledeconError) as info:
        io.read_stack(raw)
    assert str(info.value) == (
        f"{raw}: no voxel size in the file's metadata (its ImageJ metadata has no YResolution, XResolution tag); "
        "give it (sheet columns dz_um, dy_um, dx_um, or --voxel-size Z Y X)"
    )


def _zero_resolution(path: Path, stack: np.ndarray) -> Path:
    tifffile.imwrite(path, stack, imagej=True, resolution=(10.0, 10.0),
                     metadata={"spacing": 0.25, "unit": "um", "axes": "ZYX"})  # fmt: skip
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages[0].tags["XResolution"].overwrite((0, 1))
    return path


NON_POSITIVE_METADATA = {
    "OME size 0": (lambda p, s: write_ome(p, s, voxel_size=(0, 0.1, 0.1)), "its OME metadata gives voxel size z = 0.0 µm"),
    "OME size < 0": (lambda p, s: write_ome(p, s, voxel_size=(0.25, -0.1, 0.1)), "its OME metadata gives voxel size y = -0.1 µm"),
    "ImageJ spacing < 0": (lambda p, s: (tifffile.imwrite(p, s, imagej=True, resolution=(10.0, 10.0), metadata={
        "spacing": -0.25, "unit": "um", "axes": "ZYX"}), p)[1], "its ImageJ metadata gives voxel size z = -0.25 µm"),
    "ImageJ resolution 0": (_zero_resolution, "its ImageJ metadata gives voxel size x = inf µm"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(NON_POSITIVE_METADATA))
def test_non_positive_metadata_voxel_size_is_named_as_such(tmp_path, stack, case):
    make, expected = NON_POSITIVE_METADATA[case]
    raw = make(tmp_path / "raw.tif", stack)
    before = sha256(raw)
    with pytest.raises(CycledeconError) as info:
        ingest(raw, tmp_path / "out.ome.zarr")
    assert str(info.value) == (f"{raw}: {expected}, not a positive size; "
                               "give it (sheet columns dz_um, dy_um, dx_um, or --voxel-size Z Y X)")  # fmt: skip
    assert sha256(raw) == before and not (tmp_path / "out.ome.zarr").exists()
    # the sheet's voxel size stands in for the file's
    out = ingest(raw, tmp_path / "out.ome.zarr", voxel_size=VoxelSize(0.3, 0.13, 0.13))
    assert io.read_ome_zarr(out)[1] == VoxelSize(0.3, 0.13, 0.13)


# -------------------------------------------------------------------------- leftovers and modes
def _dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_killed_runs_of_the_same_output_are_removed(tmp_path, stack):
    """A killed run leaves `.NAME.partial-<pid>` (and, between its two renames, `.NAME.old-<pid>`);
    the next run of the same output removes those whose process is gone, and nothing else."""
    import subprocess
    import sys

    raw = write_ome(tmp_path / "s.ome.tif", stack)
    dead = _dead_pid()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leftovers = [f".s.ome.zarr.partial-{dead}", f".s.ome.zarr.old-{dead}"]
        kept = [f".s.ome.zarr.partial-{alive.pid}",  # a run still going
                f".other.ome.zarr.partial-{dead}",  # another output's
                f".s.ome.zarr.partial-{dead}.notes", "s.ome.zarr.partial-1"]  # not ours  # fmt: skip
        for name in leftovers + kept:
            io.write_ome_zarr(np.ones((2, 4, 4), np.uint16), tmp_path / name, VoxelSize(1, 1, 1))
        ingest(raw, tmp_path / "s.ome.zarr")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s.ome.tif", "s.ome.zarr", *kept])
    finally:
        alive.kill()
        alive.wait()


def test_overwrite_replaces_a_link_not_its_target(tmp_path, stack):
    raw = write_ome(tmp_path / "s.ome.tif", stack)
    target = user_folder(tmp_path / "mine")
    link = tmp_path / "out.ome.zarr"
    link.symlink_to(target, target_is_directory=True)
    with pytest.raises(CycledeconError, match="already exists and is not an OME-Zarr image written by cycledecon"):
        ingest(raw, link)
    ingest(raw, link, overwrite=True)
    assert io.is_cycledecon_image(link) and not link.is_symlink()
    assert [p.name for p in target.iterdir()] == ["notes.txt"] and (target / "notes.txt").read_text() == "mine"
    with pytest.raises(CycledeconError, match="is an input of this command"):  # a link to the input
        (tmp_path / "alias.tif").symlink_to(raw)
        ingest(raw, tmp_path / "alias.tif", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.tif", "mine", "out.ome.zarr", "s.ome.tif"]


def validate_ngff(path: Path, version: str) -> None:
    """Validate a store with ome-zarr-models, as its `validate` command does (warnings are errors)."""
    import warnings

    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.exceptions import ValidationWarning

    with warnings.catch_warnings(action="error", category=ValidationWarning):
        open_ome_zarr(str(path), version=version)


def _multiscale_and_omero(path: Path, version: str) -> tuple[dict, dict]:
    attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    ome = attrs["ome"] if version == "0.5" else attrs
    return ome["multiscales"][0], ome["omero"]


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_store_is_named_after_the_sample_with_a_display_window_from_the_data(tmp_path, version):
    volume = np.full((8, 64, 64), 100, np.uint16)
    volume[:, 10:30, 10:30] = 1000
    volume[4, 32, 32] = 60000  # one hot voxel: in the range, not in the window
    out = io.write_ome_zarr(volume, tmp_path / "wf_01.ome.zarr", VoxelSize(0.25, 0.1, 0.1), ngff_version=version)
    validate_ngff(out, version)
    multiscale, omero = _multiscale_and_omero(out, version)
    assert multiscale["name"] == "wf_01" and io.image_name(out) == "wf_01"
    (channel,) = omero["channels"]
    assert channel["label"] == "wf_01" and channel["color"] == "FFFFFF"
    assert channel["window"] == {"min": 100.0, "max": 60000.0, "start": 100.0, "end": 1000.0}


def test_name_can_be_given_and_old_stores_fall_back_to_the_path(tmp_path, stack):
    out = io.write_ome_zarr(stack, tmp_path / "rl_learned.ome.zarr", VoxelSize(1, 1, 1), name="wf_02")
    assert io.image_name(out) == "wf_02"
    group = zarr.open_group(str(out), mode="a")
    ome = group.attrs["ome"]
    ome["multiscales"][0]["name"] = "/"  # what earlier versions wrote
    group.attrs["ome"] = ome
    assert io.image_name(out) == "rl_learned"


def test_ngff_04_store_is_zarr_v2_and_reads_back_in_other_tools(tmp_path, stack):
    out = io.write_ome_zarr(stack, tmp_path / "s.ome.zarr", VoxelSize(0.25, 0.1, 0.1), attrs={"a": 1},
                            ngff_version="0.4")  # fmt: skip
    assert {p.name for p in out.iterdir()} >= {".zgroup", ".zattrs"} and not (out / "zarr.json").exists()
    group = zarr.open_group(str(out), mode="r", zarr_format=2)
    assert group.attrs["multiscales"][0]["version"] == "0.4"
    level0 = group[group.attrs["multiscales"][0]["datasets"][0]["path"]]
    assert level0.metadata.zarr_format == 2 and level0.metadata.dimension_separator == "/"
    assert level0.metadata.compressor.codec_id == "blosc"
    data, scale, axes, units = read_with_ome_zarr(out)
    np.testing.assert_array_equal(np.asarray(data[0]), stack)
    assert scale == [0.25, 0.1, 0.1] and axes == ["z", "y", "x"] and units == {"micrometer"}
    np.testing.assert_array_equal(io.read_ome_zarr(out)[0].compute(), stack)
    assert io.read_ome_zarr(out)[2] == {"a": 1}
    assert io.is_cycledecon_image(out)
    io.write_ome_zarr(stack // 2, out, VoxelSize(0.25, 0.1, 0.1), ngff_version="0.4")  # replaces its own
    np.testing.assert_array_equal(io.read_ome_zarr(out)[0].compute(), stack // 2)


def test_unknown_ngff_version_is_one_line(tmp_path, stack):
    with pytest.raises(CycledeconError, match="NGFF version '0.3' cannot be written; choose one of 0.5, 0.4"):
        io.write_ome_zarr(stack, tmp_path / "s.ome.zarr", VoxelSize(1, 1, 1), ngff_version="0.3")
    assert not (tmp_path / "s.ome.zarr").exists()


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_ingested_store_validates_in_either_version(tmp_path, stack, version):
    out = ingest(write_ome(tmp_path / "s.ome.tif", stack), tmp_path / "s.ome.zarr", ngff_version=version)
    validate_ngff(out, version)
    assert _multiscale_and_omero(out, version)[0]["name"] == "s"


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_store_opens_in_bioio_with_voxel_size_and_name(tmp_path, stack, version):
    """bioio with its OME-Zarr plugin, as a facility's scripts open stores (a test dependency)."""
    bioio = pytest.importorskip("bioio")
    bioio_ome_zarr = pytest.importorskip("bioio_ome_zarr")
    out = io.write_ome_zarr(stack, tmp_path / "wf_01.ome.zarr", VoxelSize(0.25, 0.1, 0.1), ngff_version=version)
    image = bioio.BioImage(out, reader=bioio_ome_zarr.Reader)
    assert tuple(image.physical_pixel_sizes) == (0.25, 0.1, 0.1)
    assert image.scenes[0] == "wf_01"
    np.testing.assert_array_equal(image.get_image_data("ZYX", T=0, C=0), stack)

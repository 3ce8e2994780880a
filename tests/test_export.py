"""Export: OME-Zarr stores → OME-TIFF (Fiji) and NGFF 0.4 (zarr v2), voxel size and name kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from helpers import sha256
from cycledecon import io
from cycledecon.errors import CycledeconError
from cycledecon.export import export_store
from cycledecon.voxel import VoxelSize
from test_io import read_with_ome_zarr, validate_ngff

VOXEL = VoxelSize(0.25, 0.13, 0.1)


@pytest.fixture
def store(tmp_path, stack) -> Path:
    return io.write_ome_zarr(stack, tmp_path / "wf_01.ome.zarr", VOXEL, attrs={"method": "test"}, chunks=(5, 16, 16))


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}


def test_ome_tiff_round_trips_voxel_size_units_name_and_pixels(tmp_path, store, stack):
    out = export_store(store, tmp_path / "wf_01.ome.tif", "ome-tiff")
    with tifffile.TiffFile(out) as tif:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        data = tif.asarray()
        assert tif.series[0].axes == "ZYX" and len(tif.pages) == stack.shape[0]
    assert [pixels[f"PhysicalSize{a}"] for a in "ZYX"] == [0.25, 0.13, 0.1]
    assert {pixels[f"PhysicalSize{a}Unit"] for a in "ZYX"} == {"µm"}
    assert image["Name"] == "wf_01" and '"method": "test"' in image["Description"]
    np.testing.assert_array_equal(data, stack)
    assert data.dtype == stack.dtype
    assert io.read_stack(out).voxel_size == VOXEL  # our own reader, as `deconvolve` would open it


def test_ngff_04_export_validates_and_opens_as_zarr_v2(tmp_path, store, stack):
    out = export_store(store, tmp_path / "wf_01_v04.ome.zarr", "ngff-0.4")
    validate_ngff(out, "0.4")
    assert (out / ".zattrs").is_file() and not (out / "zarr.json").exists()
    data, scale, axes, units = read_with_ome_zarr(out)
    np.testing.assert_array_equal(np.asarray(data[0]), stack)
    assert scale == [0.25, 0.13, 0.1] and units == {"micrometer"}
    _, _, attrs = io.read_ome_zarr(out)
    assert attrs["method"] == "test" and attrs["exported_from"] == str(store.resolve())
    assert io.image_name(out) == "wf_01"
    back = export_store(out, tmp_path / "back.ome.zarr", "ngff-0.5")  # and back to zarr v3
    validate_ngff(back, "0.5")
    np.testing.assert_array_equal(io.read_ome_zarr(back)[0].compute(), stack)


def test_export_never_modifies_its_input(tmp_path, store):
    before = _tree(store)
    export_store(store, tmp_path / "a.ome.tif")
    export_store(store, tmp_path / "b.ome.zarr", "ngff-0.4")
    assert _tree(store) == before


def test_earlier_export_is_replaced_but_a_foreign_tiff_is_kept(tmp_path, store, stack):
    out = export_store(store, tmp_path / "wf_01.ome.tif")
    export_store(store, out)
    foreign = tmp_path / "raw.ome.tif"
    tifffile.imwrite(foreign, stack, ome=True)
    before = sha256(foreign)
    refused = "raw.ome.tif: already exists and is not an OME-TIFF exported by cycledecon"
    with pytest.raises(CycledeconError, match=refused):
        export_store(store, foreign)
    assert sha256(foreign) == before
    export_store(store, foreign, overwrite=True)
    assert tifffile.imread(foreign).shape == stack.shape


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "missing.ome.zarr: not found"),
        ("not a store", "plain: not an OME-Zarr image"),
        ("onto itself", "wf_01.ome.zarr: is an input of this command; choose another output path"),
        ("bad format", "unknown export format 'png'; choose one of ome-tiff, ngff-0.4, ngff-0.5"),
        ("tiff named .zarr", "out.ome.zarr: ome-tiff exports are named \\*.ome.tif"),
        ("no format, odd name", "out.png: name it .ome.tif or .ome.zarr, or give the format"),
    ],
)
def test_bad_export_is_one_line_and_writes_nothing(tmp_path, store, case, message):
    source, output, fmt = store, tmp_path / "out.ome.tif", "ome-tiff"
    if case == "missing":
        source = tmp_path / "missing.ome.zarr"
    elif case == "not a store":
        source = tmp_path / "plain"
        source.mkdir()
    elif case == "onto itself":
        output, fmt = store, "ngff-0.5"
    elif case == "tiff named .zarr":
        output = tmp_path / "out.ome.zarr"
    elif case == "no format, odd name":
        output, fmt = tmp_path / "out.png", None
    else:
        fmt = "png"
    before = _tree(store)
    with pytest.raises(CycledeconError, match=message) as error:
        export_store(source, output, fmt)
    assert "\n" not in str(error.value)
    assert {p.name for p in tmp_path.iterdir()} <= {"wf_01.ome.zarr", "plain"}
    assert _tree(store) == before


def test_format_follows_the_output_name(tmp_path, store):
    with tifffile.TiffFile(export_store(store, tmp_path / "a.ome.tiff")) as tif:
        assert tif.is_ome
    validate_ngff(export_store(store, tmp_path / "a.ome.zarr"), "0.4")


def test_interrupted_tiff_export_leaves_nothing(tmp_path, store, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", fail)
    with pytest.raises(KeyboardInterrupt):
        export_store(store, tmp_path / "out.ome.tif")
    assert [p.name for p in tmp_path.iterdir()] == ["wf_01.ome.zarr"]

"""Sample sheet: structural problems are caught with the sheet's path and the offending names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import make_workdir, run_snakemake, write_ome

from cycledecon.errors import CycledeconError
from cycledecon.io import read_ome_zarr
from cycledecon.sheet import campaign_optics, read_sample_sheet, voxel_size_override
from cycledecon.voxel import VoxelSize

HEADER = "sample\tpath\trole\tcampaign\tdz_um\tdy_um\tdx_um\tna\twavelength_nm\timmersion_ri\n"


def sheet(tmp_path, rows: list[str], header: str = HEADER):
    path = tmp_path / "samples.tsv"
    path.write_text(header + "".join(r + "\n" for r in rows))
    return path


def test_good_sheet_reads_numbers_and_overrides(tmp_path):
    path = sheet(tmp_path, ["a\ta.tif\twidefield\tc1\t0.3\t0.1\t0.1\t1.4\t520\t1.515", "b\tb.tif\treference\tc1\t\t\t\t\t\t"])
    samples = read_sample_sheet(path)
    assert voxel_size_override(samples.loc["a"]) == VoxelSize(0.3, 0.1, 0.1)
    assert voxel_size_override(samples.loc["b"]) is None
    assert campaign_optics(samples, "c1") == {"na": 1.4, "wavelength_nm": 520.0, "immersion_ri": 1.515}


@pytest.mark.parametrize(
    ("rows", "header", "expected"),
    [
        (["a\ta.tif\twidefield\tc1", "a\tb.tif\treference\tc1"], "sample\tpath\trole\tcampaign\n", "duplicate sample name(s) a"),
        (["a\ta.tif\tconfocal\tc1"], "sample\tpath\trole\tcampaign\n", "unknown role(s) confocal"),
        (["a\ta.tif\twidefield"], "sample\tpath\trole\n", "missing column(s) campaign"),
        (["a\ta.tif\twidefield\tc1\tthin\t0.1\t0.1\t\t\t"], HEADER, "column dz_um is not a number for sample(s) a"),
        (["b\tb.tif\treference\tc1"], "sample\tpath\trole\tcampaign\n", "campaign c1 has no widefield stack"),
    ],
)
def test_bad_sheet_names_file_and_problem(tmp_path, rows, header, expected):
    path = sheet(tmp_path, rows, header)
    with pytest.raises(CycledeconError, match="^" + str(path).replace(".", r"\.") + ": ") as info:
        read_sample_sheet(path)
    assert expected in str(info.value)


def test_partial_voxel_size_is_rejected_when_the_sheet_is_read(tmp_path):
    path = sheet(tmp_path, ["a\ta.tif\twidefield\tc1\t0.3\t\t0.1\t\t\t", "r\tr.tif\treference\tc1\t\t\t\t\t\t"])
    with pytest.raises(CycledeconError) as info:
        read_sample_sheet(path)
    assert str(info.value) == f"{path}: sample a: give all of dz_um, dy_um, dx_um or none"


CHANNEL_HEADER = "sample\tpath\trole\tcampaign\tchannel\tdz_um\tdy_um\tdx_um\n"


def test_optional_cells_filled_on_some_rows_are_none_elsewhere(tmp_path):
    """A blank voxel size or channel on one row means "not given" there: None, never NaN."""
    rows = ["a\ta.tif\twidefield\tc1\t1\t0.3\t0.1\t0.1", "b\tb.tif\twidefield\tc1\t\t\t\t",
            "r\tr.tif\treference\tc1\t\t\t\t"]  # fmt: skip
    samples = read_sample_sheet(sheet(tmp_path, rows, CHANNEL_HEADER))
    assert samples.loc["a", "channel"] == 1 and isinstance(samples.loc["a", "channel"], int)
    assert samples.loc["b", "channel"] is None and samples.loc["r", "channel"] is None
    assert voxel_size_override(samples.loc["a"]) == VoxelSize(0.3, 0.1, 0.1)
    assert voxel_size_override(samples.loc["b"]) is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in samples.to_numpy().ravel())


def test_a_hash_inside_a_field_is_data_and_comment_lines_are_skipped(tmp_path):
    rows = ["# a comment line", "a\tdata/run#2/a.tif\twidefield\tc#1", "  # an indented comment",
            "r\tr.tif\treference\tc#1"]  # fmt: skip
    samples = read_sample_sheet(sheet(tmp_path, rows, "# leading comment\nsample\tpath\trole\tcampaign\n"))
    assert list(samples.index) == ["a", "r"]
    assert samples.loc["a", "path"] == "data/run#2/a.tif" and samples.loc["r", "campaign"] == "c#1"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (["a\ta.tif\twidefield\tc1\t1.5\t\t\t", "r\tr.tif\treference\tc1\t\t\t\t"],
         "column channel must be a non-negative integer; got a (1.5)"),
        (["a\ta.tif\twidefield\tc1\t-1\t\t\t", "r\tr.tif\treference\tc1\t\t\t\t"],
         "column channel must be a non-negative integer; got a (-1)"),
        (["a\ta.tif\twidefield\tc1\t\t\t\t", "b\tb.tif\twidefield\tc1\t\t\t\t"],
         "campaign c1 has no reference stack (samples a, b); training needs both roles"),
        (["a\ta.tif\twidefield\tc1\t\tinf\t0.1\t0.1", "r\tr.tif\treference\tc1\t\t\t\t"],
         "column dz_um is not finite for sample(s) a"),
        (["a\ta.tif\twidefield\tc1\t\t0\t0.1\t0.1", "r\tr.tif\treference\tc1\t\t\t\t"],
         "sample a: voxel size z must be a positive number of µm, got 0.0"),
        (["a\ta.tif\twidefield\t\t\t\t\t", "r\tr.tif\treference\tc1\t\t\t\t"], "sample a: no campaign"),
        (["\ta.tif\twidefield\tc1\t\t\t\t", "r\tr.tif\treference\tc1\t\t\t\t"], "row 1: no sample"),
        (["a\ta.tif\twidefield\tc1\t\t\t\t\textra\tmore"], "line 2 has 10 fields but the header has 8"),
        ([], "no samples (only a header line)"),
    ],
)
def test_sheet_problems_are_one_line_at_read_time(tmp_path, rows, expected):
    path = sheet(tmp_path, rows, CHANNEL_HEADER)
    with pytest.raises(CycledeconError) as info:
        read_sample_sheet(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and expected in text and "\n" not in text, text


def test_a_sheet_with_sparse_optional_columns_plans_and_ingests(tmp_path):
    """The workflow's sheet check keeps blank cells None (snakemake's validate would refill NaN):
    a channel on one row only and a voxel size on one row only plan and ingest."""
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    write_ome(raw / "two.ome.tif", rng.integers(1, 999, (2, 4, 8, 8), dtype=np.uint16), axes="CZYX")
    write_ome(raw / "one.ome.tif", rng.integers(1, 999, (4, 8, 8), dtype=np.uint16))
    rows = [f"a\t{raw / 'two.ome.tif'}\twidefield\tc1\t1\t0.5\t0.2\t0.2", f"b\t{raw / 'one.ome.tif'}\twidefield\tc1\t\t\t\t",
            f"r\t{raw / 'one.ome.tif'}\treference\tc1\t\t\t\t"]  # fmt: skip
    work = make_workdir(tmp_path, sheet=CHANNEL_HEADER + "\n".join(rows) + "\n")
    targets = ["results/zarr/a.ome.zarr", "results/zarr/b.ome.zarr"]
    assert run_snakemake(work, "-n", *targets).returncode == 0
    result = run_snakemake(work, *targets)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    _, voxel_a, attrs_a = read_ome_zarr(work / targets[0])
    _, voxel_b, attrs_b = read_ome_zarr(work / targets[1])
    assert voxel_a == VoxelSize(0.5, 0.2, 0.2) and attrs_a["voxel_size_source"] == "sample sheet"
    assert voxel_b == VoxelSize(0.25, 0.1, 0.1) and attrs_b["voxel_size_source"] == "OME metadata"


def test_demo_rows_are_those_under_the_demo_dir_and_need_the_demo_section(tmp_path):
    from cycledecon.sheet import check_demo_section, demo_rows

    sheet_path = tmp_path / "s.tsv"
    sheet_path.write_text("sample\tpath\trole\tcampaign\n"
                          "wf\tresources/demo/wf.ome.tif\twidefield\tc\nref\tdata/ref.tif\treference\tc\n")
    sheet = read_sample_sheet(sheet_path)
    assert list(demo_rows(sheet, "resources/demo")["sample"]) == ["wf"]
    assert demo_rows(sheet, None).empty
    check_demo_section(sheet, "resources/demo", sheet_path)  # a demo section: nothing to check
    with pytest.raises(CycledeconError, match=r"s\.tsv: sample\(s\) wf lie under resources/demo/.*no demo: section"):
        check_demo_section(sheet, None, sheet_path)

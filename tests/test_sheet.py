"""Sample sheet: structural problems are caught with the sheet's path and the offending names."""

from __future__ import annotations

import pytest

from cycledecon.errors import CycledeconError
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


def test_partial_voxel_size_is_rejected(tmp_path):
    samples = read_sample_sheet(sheet(tmp_path, ["a\ta.tif\twidefield\tc1\t0.3\t\t0.1\t\t\t"]))
    with pytest.raises(CycledeconError, match="give all of dz_um, dy_um, dx_um or none"):
        voxel_size_override(samples.loc["a"])

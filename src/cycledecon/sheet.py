"""The sample sheet: which raw stacks exist, their role, campaign, channel, voxel size and optics.

Each row carries its own stack's voxel size (from the file's metadata or the dz_um, dy_um, dx_um
columns): a campaign's widefield stacks share one, its reference stacks may come from another
instrument and are resampled to it before patches are cut (cycledecon.patches).

Structural problems a schema cannot express (duplicate names, a campaign without widefield or
reference stacks, a partial voxel size, a fractional channel) are caught here, each as one line
naming the sheet, so the workflow stops before any job. A blank optional cell is None ("not given")
on its own row; a line starting with '#' is a comment, but a '#' inside a field is data.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd

from cycledecon.config.demo import DemoSettings
from cycledecon.errors import CycledeconError
from cycledecon.voxel import VoxelSize

REQUIRED_COLUMNS = ("sample", "path", "role", "campaign")
OPTIONAL_COLUMNS = (
    "channel", "dz_um", "dy_um", "dx_um", "na", "wavelength_nm", "immersion_ri", "ground_truth",
)  # fmt: skip
ROLES = ("widefield", "reference")
#: Where the default config's demo rule writes the synthetic campaign (config demo.dir).
DEFAULT_DEMO_DIR = DemoSettings.dir
NUMERIC_COLUMNS = ("dz_um", "dy_um", "dx_um", "na", "wavelength_nm", "immersion_ri")
VOXEL_COLUMNS = ("dz_um", "dy_um", "dx_um")


def read_sample_sheet(path: str | Path) -> pd.DataFrame:
    """Read and check a tab-separated sample sheet; the index is the sample name.

    Blank optional cells are None, numbers are floats and `channel` an int, so NaN never reaches a
    rule; every problem is a CycledeconError starting with the sheet's path.
    """
    path = Path(path)
    if not path.is_file():
        raise CycledeconError(f"{path}: sample sheet not found")
    sheet = read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing:
        raise CycledeconError(f"{path}: missing column(s) {', '.join(missing)}")
    if sheet.empty:
        raise CycledeconError(f"{path}: no samples (only a header line)")
    for column in OPTIONAL_COLUMNS:
        if column not in sheet.columns:
            sheet[column] = None
    sheet = sheet.astype(object).where(sheet.notna(), None)
    check_required_cells(sheet, path)
    duplicated = sorted(set(sheet["sample"][sheet["sample"].duplicated()]))
    if duplicated:
        raise CycledeconError(f"{path}: duplicate sample name(s) {', '.join(duplicated)}")
    bad_roles = sorted(set(sheet["role"]) - set(ROLES))
    if bad_roles:
        raise CycledeconError(f"{path}: unknown role(s) {', '.join(map(str, bad_roles))}; use {' or '.join(ROLES)}")
    for column in NUMERIC_COLUMNS:
        sheet[column] = numeric_column(sheet, column, path)
    sheet["channel"] = channel_column(sheet, path)
    for _, row in sheet.iterrows():
        try:
            voxel_size_override(row)
        except CycledeconError as error:
            raise CycledeconError(f"{path}: {error}") from None
    check_campaigns(sheet, path)
    return sheet.set_index("sample", drop=False)


def read_table(path: Path) -> pd.DataFrame:
    """The sheet's cells as strings (NaN where blank). Whole lines starting with '#' are dropped as
    comments before parsing: pandas' comment option would also cut a row at a '#' inside a field."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise CycledeconError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})") from None
    rows = [(n, cells(line)) for n, line in enumerate(lines, start=1)
            if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    if not rows:
        raise CycledeconError(f"{path}: empty sample sheet (no header line)")
    width = len(rows[0][1])
    for number, fields in rows[1:]:
        if len(fields) > width:  # pandas would silently shift such a row's cells
            raise CycledeconError(f"{path}: line {number} has {len(fields)} fields but the header has {width}")
    text = "\n".join("\t".join(fields) for _, fields in rows)
    sheet = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, index_col=False)
    sheet.columns = [str(c).strip() for c in sheet.columns]
    return sheet


def cells(line: str) -> list[str]:
    """A line's tab-separated fields, without the blank ones trailing after the last value."""
    fields = line.split("\t")
    while fields and not fields[-1].strip():
        fields.pop()
    return fields


def check_required_cells(sheet: pd.DataFrame, path: Path) -> None:
    """Every row names its sample, path, role and campaign (row numbers count data rows from 1)."""
    for number, (_, row) in enumerate(sheet.iterrows(), start=1):
        blank = [c for c in REQUIRED_COLUMNS if given(row[c]) is None]
        if blank:
            where = f"row {number}" if given(row["sample"]) is None else f"sample {row['sample']}"
            raise CycledeconError(f"{path}: {where}: no {', '.join(blank)}")


def numeric_column(sheet: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """A column of finite floats, None where blank; text or a non-finite value names the samples."""
    values = pd.to_numeric(sheet[column], errors="coerce")
    bad = sheet["sample"][values.isna() & sheet[column].notna()].tolist()
    if bad:
        raise CycledeconError(f"{path}: column {column} is not a number for sample(s) {', '.join(bad)}")
    infinite = sheet["sample"][values.notna() & ~values.apply(lambda v: math.isfinite(v))].tolist()
    if infinite:
        raise CycledeconError(f"{path}: column {column} is not finite for sample(s) {', '.join(infinite)}")
    return pd.Series([None if pd.isna(v) else float(v) for v in values], index=sheet.index, dtype=object)


def channel_column(sheet: pd.DataFrame, path: Path) -> pd.Series:
    """The channel column as ints (a channel index in a multi-channel file), None where blank; a
    fractional or negative value is refused here rather than truncated or failing at ingest."""
    values = numeric_column(sheet, "channel", path)
    bad = [f"{s} ({sheet.loc[i, 'channel']})" for i, s, v in zip(sheet.index, sheet["sample"], values)
           if v is not None and not (v >= 0 and float(v).is_integer())]  # fmt: skip
    if bad:
        raise CycledeconError(f"{path}: column channel must be a non-negative integer; got {', '.join(bad)}")
    return pd.Series([None if v is None else int(v) for v in values], index=sheet.index, dtype=object)


def check_campaigns(sheet: pd.DataFrame, path: Path) -> None:
    """Every campaign needs widefield stacks (to deconvolve) and reference stacks (the sharp domain
    training learns from); a campaign without either would fail only after ingest and normalize."""
    for campaign, rows in sheet.groupby("campaign"):
        for role in ("widefield", "reference"):
            if role not in set(rows["role"]):
                raise CycledeconError(f"{path}: campaign {campaign} has no {role} stack "
                                      f"(samples {', '.join(rows['sample'])}); training needs both roles")


def given(value: Any) -> Any:
    """The value of an optional cell, or None when blank (None or NaN, as pandas may refill it)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def voxel_size_override(row: pd.Series) -> VoxelSize | None:
    """The sheet's voxel size for one sample, or None when the sheet leaves it to the file."""
    values = [given(row.get(c)) for c in VOXEL_COLUMNS]
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise CycledeconError(f"sample {row['sample']}: give all of dz_um, dy_um, dx_um or none")
    try:
        return VoxelSize(*map(float, values))
    except ValueError as exc:
        raise CycledeconError(f"sample {row['sample']}: {exc}") from None


def demo_rows(sheet: pd.DataFrame, demo_dir: str | None) -> pd.DataFrame:
    """The rows whose raw stacks the demo rule generates: those under `demo_dir` (none without one)."""
    if demo_dir is None:
        return sheet.iloc[0:0]
    return sheet[sheet["path"].astype(str).str.startswith(f"{str(demo_dir).rstrip('/')}/")]


def check_demo_section(sheet: pd.DataFrame, demo_dir: str | None, path: str | Path) -> None:
    """Without a `demo:` config section nothing generates the demo stacks: a row under the default
    demo folder whose file does not exist is refused here, naming the section, rather than failing
    later as a missing input."""
    if demo_dir is not None:
        return
    rows = demo_rows(sheet, DEFAULT_DEMO_DIR)
    missing = [str(s) for s, p in zip(rows["sample"], rows["path"]) if not Path(p).exists()]
    if missing:
        raise CycledeconError(f"{path}: sample(s) {', '.join(missing)} lie under {DEFAULT_DEMO_DIR}/, which the demo "
                              "rule generates, but the config has no demo: section; add it or list existing files")


def campaign_optics(sheet: pd.DataFrame, campaign: str) -> dict | None:
    """The optics (na, wavelength_nm, immersion_ri) shared by a campaign's widefield stacks, if given."""
    rows = sheet[(sheet["campaign"] == campaign) & (sheet["role"] == "widefield")]
    columns = ["na", "wavelength_nm", "immersion_ri"]
    known = rows[columns].dropna()
    if known.empty:
        return None
    distinct = known.drop_duplicates()
    if len(distinct) > 1:
        raise CycledeconError(f"campaign {campaign}: widefield samples disagree on optics {distinct.to_dict('records')}")
    return {c: float(distinct.iloc[0][c]) for c in columns}

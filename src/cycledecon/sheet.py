"""The sample sheet: which raw stacks exist, their role, campaign, channel, voxel size and optics.

Structural problems a schema cannot express (duplicate names, a campaign with no widefield stack)
are caught here, so both the workflow and the CLI report them the same way.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cycledecon.errors import CycledeconError
from cycledecon.voxel import VoxelSize

REQUIRED_COLUMNS = ("sample", "path", "role", "campaign")
OPTIONAL_COLUMNS = (
    "channel", "dz_um", "dy_um", "dx_um", "na", "wavelength_nm", "immersion_ri", "ground_truth",
)  # fmt: skip
ROLES = ("widefield", "reference")
NUMERIC_COLUMNS = ("dz_um", "dy_um", "dx_um", "na", "wavelength_nm", "immersion_ri")


def read_sample_sheet(path: str | Path) -> pd.DataFrame:
    """Read and check a tab-separated sample sheet; the index is the sample name."""
    path = Path(path)
    if not path.is_file():
        raise CycledeconError(f"{path}: sample sheet not found")
    sheet = pd.read_csv(path, sep="\t", dtype=str, comment="#").dropna(how="all")
    sheet.columns = [c.strip() for c in sheet.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing:
        raise CycledeconError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in OPTIONAL_COLUMNS:
        if column not in sheet.columns:
            sheet[column] = None
    sheet = sheet.astype(object).where(sheet.notna(), None)
    duplicated = sorted(set(sheet["sample"][sheet["sample"].duplicated()]))
    if duplicated:
        raise CycledeconError(f"{path}: duplicate sample name(s) {', '.join(duplicated)}")
    bad_roles = sorted(set(sheet["role"]) - set(ROLES))
    if bad_roles:
        raise CycledeconError(f"{path}: unknown role(s) {', '.join(map(str, bad_roles))}; use {' or '.join(ROLES)}")
    for column in (*NUMERIC_COLUMNS, "channel"):
        values = pd.to_numeric(sheet[column], errors="coerce")
        bad = sheet["sample"][values.isna() & sheet[column].notna()].tolist()
        if bad:
            raise CycledeconError(f"{path}: column {column} is not a number for sample(s) {', '.join(bad)}")
        sheet[column] = values.astype(object).where(values.notna(), None)
    for campaign, rows in sheet.groupby("campaign"):
        if "widefield" not in set(rows["role"]):
            raise CycledeconError(f"{path}: campaign {campaign} has no widefield stack")
    return sheet.set_index("sample", drop=False)


def voxel_size_override(row: pd.Series) -> VoxelSize | None:
    """The sheet's voxel size for one sample, or None when the sheet leaves it to the file."""
    values = [row.get(c) for c in ("dz_um", "dy_um", "dx_um")]
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise CycledeconError(f"sample {row['sample']}: give all of dz_um, dy_um, dx_um or none")
    try:
        return VoxelSize(*map(float, values))
    except ValueError as exc:
        raise CycledeconError(f"sample {row['sample']}: {exc}") from None


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

"""The one atomic writer: a finished output or the previous one, never a torn one, and only outputs
of the expected kind replaced; model.pt goes through it like every other output."""

from __future__ import annotations

from pathlib import Path

import pytest

from cycledecon.atomic import OutputKind, atomic_path
from cycledecon.errors import CycledeconError
from cycledecon.model.checkpoint import atomic_save
from helpers import user_folder


def test_plain_file_writer_replaces_a_file_but_never_a_folder(tmp_path):
    target = tmp_path / "table.csv"
    for text in ("old", "new"):
        with atomic_path(target) as tmp:
            tmp.write_text(text)
    assert target.read_text() == "new"
    folder = user_folder(tmp_path / "folder.csv")
    with pytest.raises(CycledeconError, match="folder.csv: already exists and is not a regular file"):
        with atomic_path(folder) as tmp:
            tmp.write_text("x")
    assert (folder / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.csv", "table.csv"]


def test_a_failed_write_keeps_the_previous_output_and_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("previous")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_a_folder_output_is_replaced_whole(tmp_path):
    store = user_folder(tmp_path / "store")
    with atomic_path(store, OutputKind("a folder", Path.is_dir)) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in store.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


def test_model_files_are_written_through_the_atomic_writer(tmp_path):
    atomic_save({"step": 1}, tmp_path / "checkpoint.pt")
    atomic_save({"step": 2}, tmp_path / "checkpoint.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    folder = user_folder(tmp_path / "model.pt")
    with pytest.raises(CycledeconError, match="model.pt: already exists and is not a regular file"):
        atomic_save({"step": 3}, folder)
    assert (folder / "notes.txt").read_text() == "mine"

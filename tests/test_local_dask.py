"""local_dask: dask's no-cluster choices where no cluster can exist, never over the caller's."""

from __future__ import annotations

import sys
import types

import dask
import dask.threaded

from cycledecon.local_dask import local_dask


def test_unset_settings_get_the_no_cluster_choices_and_are_restored(monkeypatch):
    monkeypatch.delitem(sys.modules, "distributed", raising=False)
    with local_dask():
        assert dask.config.get("scheduler") is dask.threaded.get
        assert dask.config.get("array.rechunk.method") == "tasks"
    assert dask.config.get("scheduler", None) is None


def test_the_callers_settings_are_kept(monkeypatch):
    monkeypatch.delitem(sys.modules, "distributed", raising=False)
    with dask.config.set(scheduler="synchronous"), local_dask():
        assert dask.config.get("scheduler") == "synchronous"
        assert dask.config.get("array.rechunk.method") == "tasks"


def test_nothing_is_set_once_dask_distributed_is_imported(monkeypatch):
    """A Client may then exist: dask must be left to find it."""
    monkeypatch.setitem(sys.modules, "distributed", types.ModuleType("distributed"))
    with local_dask():
        assert dask.config.get("scheduler", None) is None
        assert dask.config.get("array.rechunk.method", None) is None


def test_as_a_decorator_it_applies_at_each_call(monkeypatch):
    @local_dask()
    def scheduler_inside() -> object:
        return dask.config.get("scheduler", None)

    monkeypatch.setitem(sys.modules, "distributed", types.ModuleType("distributed"))
    assert scheduler_inside() is None
    monkeypatch.delitem(sys.modules, "distributed")
    assert scheduler_inside() is dask.threaded.get

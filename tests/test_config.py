"""The one configuration package: every section's defaults are config/config.yaml's, every key is checked."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from cycledecon.config import (
    DemoSettings,
    TruePsf,
    WorkflowConfig,
    deep_update,
    parse_workflow_config,
)
from cycledecon.errors import CycledeconError
from helpers import REPO

SHIPPED = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
#: Sections whose values are not settings with a library default: paths of this checkout's files.
PATHS = ("samples", "true_psf")


@pytest.mark.parametrize("section", [f.name for f in dataclasses.fields(WorkflowConfig) if f.name not in PATHS])
def test_library_defaults_are_the_shipped_config(section):
    """A library call without a config trains, normalizes and deconvolves as the workflow does."""
    parsed = getattr(parse_workflow_config(SHIPPED), section)
    default = DemoSettings() if section == "demo" else getattr(WorkflowConfig(), section)
    assert parsed == default, f"config.yaml's {section}: differs from the library's defaults"


def test_every_shipped_section_is_known_and_an_empty_config_takes_the_defaults():
    """Each section the shipped config writes parses; one missing from it is left to its defaults."""
    assert set(SHIPPED) <= {f.name for f in dataclasses.fields(WorkflowConfig)}
    assert parse_workflow_config({}) == WorkflowConfig()


def test_a_drift_is_caught():
    drifted = {**SHIPPED, "train": {**SHIPPED["train"], "seed": 1}}
    assert parse_workflow_config(drifted).train != WorkflowConfig().train


@pytest.mark.parametrize(("config", "key"), [
    ({"normalise": {}}, "normalise: unknown config section"),
    ({"samples": 3}, "samples:"),
    ({"ingest": {"chunks": [0, 64, 64]}}, "ingest.chunks"),
    ({"ingest": {"chunk": [32, 64, 64]}}, "ingest.chunk: unknown key"),
    ({"evaluate": {"theoretical_psf_shape": [32, 65, 65]}}, "evaluate.theoretical_psf_shape"),
    ({"evaluate": {"rl_iterations": "forty"}}, "evaluate.rl_iterations"),
    ({"demo": {"optics": {"na": 1.6}}}, "demo.optics.na"),
    ({"demo": {"structures": {"cells": 1.0}}}, "demo.structures.cells: unknown key"),
    ({"true_psf": {"demo": {"path": "psf.tif", "voxel_size_um": [0, 0.1, 0.1]}}}, "true_psf.demo.voxel_size_um"),
    ({"true_psf": {"demo": 3}}, "true_psf.demo"),
    ({"train": {"optim": {"steps": "many"}}}, "train.optim.steps"),
    ({"deconvolve": {"batch_size": 0}}, "deconvolve.batch_size"),
    ({"patches": {"n_train": 0}}, "patches.n_train"),
    ({"normalize": {"clahe": {"clip_limit": 2.0}}}, "normalize.clahe.clip_limit"),
])  # fmt: skip
def test_a_bad_key_is_named(config, key):
    with pytest.raises(CycledeconError, match=key.replace(".", r"\.")):
        parse_workflow_config(config)


def test_a_true_psf_is_a_path_or_a_path_with_its_voxel_size():
    parsed = parse_workflow_config({"true_psf": {"a": "a.tif", "b": {"path": "b.tif", "voxel_size_um": [0.2, 0.1, 0.1]}}})
    assert parsed.true_psf == {"a": TruePsf("a.tif"), "b": TruePsf("b.tif", (0.2, 0.1, 0.1))}


def test_without_a_demo_section_there_is_no_demo():
    assert parse_workflow_config({}).demo is None
    assert parse_workflow_config({"demo": {"seed": 3}}).demo == DemoSettings(seed=3)


def test_deep_update_changes_only_the_keys_given_and_neither_input():
    base = {"train": {"optim": {"steps": 10, "lr": 1e-3}, "seed": 0}, "patches": {"n_train": 4}}
    extra = {"train": {"optim": {"steps": 2}}, "demo": {"seed": 1}}
    merged = deep_update(base, extra)
    assert merged == {"train": {"optim": {"steps": 2, "lr": 1e-3}, "seed": 0}, "patches": {"n_train": 4},
                      "demo": {"seed": 1}}
    assert base["train"]["optim"]["steps"] == 10 and extra == {"train": {"optim": {"steps": 2}}, "demo": {"seed": 1}}

"""Check every stage's config section at once, so a bad key fails before any job runs."""

from __future__ import annotations

from typing import Any

from cycledecon.infer import parse_inference_config
from cycledecon.model.config import parse_config
from cycledecon.normalize import parse_normalize_config
from cycledecon.patches import parse_patch_config


def check_stage_configs(config: dict[str, Any]) -> None:
    """Parse the stage sections with the library's own parsers; a CycledeconError names the key."""
    parse_normalize_config(config.get("normalize"))
    parse_patch_config(config.get("patches"))
    parse_config(config.get("train"))
    parse_inference_config(config.get("deconvolve"))

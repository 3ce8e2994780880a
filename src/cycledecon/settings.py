"""What the Snakefile needs while it parses, importing only light modules.

Parsing (a dry run included) must work with the workflow's light dependencies, without torch or
matplotlib: a user whose jobs run in conda environments parses in a smaller one. So every stage's
config section is checked with the library's own parser where that parser's module can be imported
(a bad key then fails, named, before any job runs); a section whose parser needs a package this
environment lacks is left to its job, which parses it again when it starts. Constants the rules need
are spelled out here rather than imported from the heavy modules that define them (tests compare).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

#: Each stage's config section and the library function ("module:function") that parses it.
STAGE_PARSERS = {
    "normalize": "cycledecon.normalize:parse_normalize_config",
    "patches": "cycledecon.patches:parse_patch_config",
    "train": "cycledecon.model.config:parse_config",
    "deconvolve": "cycledecon.infer_config:parse_inference_config",
}


#: The method names of cycledecon.evaluate (RAW, RL_THEORETICAL, RL_LEARNED, CYCLEDECON).
RAW = "raw"
RL_THEORETICAL = "RL (theoretical PSF)"
RL_LEARNED = "RL (learned PSF)"
CYCLEDECON = "cycledecon"


def check_stage_configs(config: dict[str, Any]) -> list[str]:
    """Parse the stage sections with the library's own parsers; a CycledeconError names the key.

    Returns the sections left unchecked because their parser's module needs a package that is not
    installed here (their jobs check them).
    """
    unchecked = []
    for section, target in STAGE_PARSERS.items():
        parse = importable(target)
        if parse is None:
            unchecked.append(section)
        else:
            parse(config.get(section))
    return unchecked


def importable(target: str) -> Callable[..., Any] | None:
    """The function `target` ("module:function"), or None when its module needs a third-party
    package that is not installed; a missing module of cycledecon itself is a bug and is raised."""
    module, name = target.split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.partition(".")[0] == "cycledecon":
            raise
        return None

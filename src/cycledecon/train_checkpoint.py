"""checkpoint.pt: a training run's whole state (networks, optimizers, RNG states, log so far),
saved atomically, so that a rerun into the same folder resumes and ends exactly where an
uninterrupted run would have.

A checkpoint of another training — the config, the patches (a stack was added to the campaign),
the starting kernel or the code's architecture changed — is not resumed: training starts over and
overwrites it, so the rule always produces the model its inputs describe.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cycledecon.model.checkpoint import atomic_save, load_failure
from cycledecon.train_state import ARRAYS, TrainingState

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


class Checkpoint:
    """The checkpoint file at `path` of the training run whose state is `state`."""

    def __init__(self, path: Path, state: TrainingState) -> None:
        self.path, self.state = path, state

    @functools.cached_property
    def identity(self) -> dict[str, Any]:
        """What a checkpoint must share to be resumed: config, training data, starting kernel and
        architecture (constant for a run, so hashed once, not at every checkpoint)."""
        state = self.state
        data = hashlib.sha256()
        for name in ARRAYS:
            data.update(np.ascontiguousarray(state.store.arrays[name]).tobytes())
        layers = {k: list(v.shape) for k, v in state.model.state_dict().items()}
        # the starting kernel by content: a psf.file rewritten under the same name (a rerun blind
        # stage before its refine stage) is another training
        kernel = hashlib.sha256(np.ascontiguousarray(state.initial).tobytes()).hexdigest() \
            if state.initial is not None else None
        return {"config": state.cfg.to_dict(), "patches_sha256": data.hexdigest(), "layers": layers,
                "initial_psf_sha256": kernel}

    def resume(self) -> None:
        """Load the checkpoint into the state when it belongs to this very training; otherwise
        (none, unreadable or another training's) leave the state at its start."""
        state, path = self.state, self.path
        if not path.exists():
            return
        try:
            saved = torch.load(path, map_location=state.device, weights_only=True)
        except Exception as error:  # a torn or foreign file is as good as none
            log.warning("ignoring unreadable checkpoint %s (%s); starting over", path, load_failure(error, path))
            return
        if saved.get("identity") != self.identity:
            log.warning("checkpoint %s belongs to another training (config, patches or model "
                        "changed); starting over", path)
            return
        state.model.load_state_dict(saved["model"])
        state.opt_g.load_state_dict(saved["opt_g"])
        state.opt_d.load_state_dict(saved["opt_d"])
        state.sampler.set_state(saved["rng"]["sampler"])
        torch.set_rng_state(saved["rng"]["torch"])
        if state.device.type == "cuda" and saved["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"])
        state.step, state.rows = saved["step"], saved["log"]
        log.info("resuming from %s at step %d", path, state.step)

    def save(self) -> None:
        """Write the state as it is now, replacing the previous checkpoint only once complete."""
        state = self.state
        atomic_save({
            "step": state.step, "identity": self.identity, "model": state.model.state_dict(),
            "opt_g": state.opt_g.state_dict(), "opt_d": state.opt_d.state_dict(), "log": state.rows,
            "rng": {"sampler": state.sampler.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state() if state.device.type == "cuda" else None},
        }, self.path)

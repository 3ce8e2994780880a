"""model.pt as untrusted input: forged metadata, weights or PSF are one line naming the file and the
field, checked before G is allocated; the models training writes (and older ones) still load."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from cycledecon.config.train import TrainConfig
from cycledecon.errors import CycledeconError
from cycledecon.model import UNet3d, load_model, receptive_field, save_model
from cycledecon.psf.theory import gaussian_psf

GENERATOR = {"depth": 2, "base_channels": 2}
BASE_METADATA = {
    "generator": GENERATOR, "receptive_field": [26, 26, 26], "patch_shape": [8, 16, 16], "channels": 1,
    "normalization": {"method": "percentile", "percentiles": [1.0, 99.0], "clip": True},
    "voxel_size": [0.25, 0.1, 0.1],
}  # fmt: skip


def write_model(path, metadata: dict[str, Any] | None = None, channels_last: bool = False):
    """A tiny model.pt; `channels_last` stores the weights as bf16 training leaves them."""
    torch.manual_seed(0)
    generator = UNet3d(GENERATOR).eval()
    if channels_last:
        generator = generator.to(memory_format=torch.channels_last_3d)
    return save_model(path, generator, metadata or BASE_METADATA, gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)))


def current_training_metadata() -> dict[str, Any]:
    """Every key train_outputs.metadata writes today, with the same kinds of values."""
    cfg = TrainConfig().to_dict() | {"generator": GENERATOR}
    return BASE_METADATA | {
        "config": cfg, "model": "psf_layer", "receptive_field": list(receptive_field(GENERATOR)),
        "psf_shape": [5, 7, 7], "context_voxels": [3, 4, 4], "campaign": "demo",
        "optics": {"na": 1.4, "wavelength_nm": 520.0}, "steps": 40, "precision": "bf16",
        "noise_model": {"gain": 0.01, "read_noise": 0.002}, "intensity_map": {"gain": 1.0, "offset": 0.0},
        "versions": {"cycledecon": "0.1", "torch": str(torch.__version__), "numpy": np.__version__},
    }  # fmt: skip


def test_models_training_writes_load_with_their_extra_keys(tmp_path):
    path = write_model(tmp_path / "model.pt", current_training_metadata(), channels_last=True)
    generator, metadata = load_model(path)
    assert metadata["precision"] == "bf16" and metadata["psf_shape"] == [5, 7, 7]
    assert metadata["learned_psf"].shape == (5, 7, 7) and metadata["learned_psf"].dtype == np.float32
    torch.manual_seed(0)
    saved = UNet3d(GENERATOR).state_dict()
    assert all(torch.equal(generator.state_dict()[k], v) for k, v in saved.items())


def test_older_models_and_unknown_normalization_records_load(tmp_path):
    """Models from before psf_shape/precision existed, and stores normalized by a record inference
    does not apply itself (test stores use a fixed scale), are not refused."""
    metadata = BASE_METADATA | {"normalization": {"method": "fixed", "scale": 0.25}, "future_key": {"x": 1}}
    _, loaded = load_model(write_model(tmp_path / "model.pt", metadata))
    assert loaded["normalization"]["scale"] == 0.25 and "precision" not in loaded


def _set(*keys: str, value: Any) -> Callable[[dict], None]:
    """A forgery setting payload[keys[0]][keys[1]]... to `value`."""

    def forge(payload: dict) -> None:
        node = payload
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return forge


def test_models_saved_before_the_folded_up_convolution_load(tmp_path):
    """Their up-steps' weights are under `up.N.1.*` (nn.Sequential(Upsample, Conv3d))."""
    path = write_model(tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    current = dict(payload["generator_state"])
    payload["generator_state"] = {k.replace(".conv.", ".1.") if k.startswith("up.") else k: v
                                  for k, v in current.items()}  # fmt: skip
    assert any(k.startswith("up.0.1.") for k in payload["generator_state"])
    torch.save(payload, path)
    generator, _ = load_model(path)
    assert generator.state_dict().keys() == current.keys()
    assert all(torch.equal(generator.state_dict()[k], v) for k, v in current.items())


def _state(edit: Callable[[dict], None]) -> Callable[[dict], None]:
    def forge(payload: dict) -> None:
        edit(payload["generator_state"])

    return forge


WEIGHT = "down.0.0.weight"
FORGERIES = {
    "depth 40": (_set("metadata", "generator", "depth", value=40), "metadata.generator.depth: expected 1 to 6, got 40"),
    "depth 0": (_set("metadata", "generator", "depth", value=0), "metadata.generator.depth: expected 1 to 6, got 0"),
    "depth a string": (_set("metadata", "generator", "depth", value="2"), "metadata.generator.depth: expected an integer"),
    "huge channels": (_set("metadata", "generator", "base_channels", value=100000),
                      "metadata.generator.base_channels: expected 1 to 256, got 100000"),
    "huge network": (_set("metadata", "generator", value={"depth": 6, "base_channels": 256}),
                     "metadata.generator: describes a network of [0-9]+ parameters"),
    "generator a string": (_set("metadata", "generator", value="unet"), "metadata.generator: expected a mapping"),
    "unknown generator key": (_set("metadata", "generator", "layers", value=3), "metadata.generator.layers: unknown key"),
    "state a tensor": (_set("generator_state", value=torch.zeros(3)), "generator_state: expected a mapping of names"),
    "state absent": (lambda p: p.pop("generator_state"), "generator_state: expected a mapping of names"),
    "state of lists": (_state(lambda s: s.update({WEIGHT: [1.0, 2.0]})), "generator_state: expected a mapping of names"),
    "shapes of another width": (_set("metadata", "generator", "base_channels", value=3),
                                r"generator_state.down.0.0.weight: shape \(2, 1, 3, 3, 3\) does not fit"),
    "missing weight": (_state(lambda s: s.pop(WEIGHT)), "generator_state: does not fit metadata.generator .missing"),
    "extra weight": (_state(lambda s: s.update(extra=torch.zeros(2))), "generator_state: does not fit .* .unexpected extra"),
    "complex weight": (_state(lambda s: s.update({WEIGHT: s[WEIGHT].to(torch.complex64)})),
                       "generator_state.down.0.0.weight: expected a dense"),
    "zero-stride weight": (_state(lambda s: s.update({WEIGHT: torch.zeros(1).expand(2, 1, 3, 3, 3)})),
                           "generator_state: tensors claim more values than the file holds"),
    "nan weight": (_state(lambda s: s[WEIGHT].view(-1).__setitem__(0, math.nan)),
                   "generator_state.down.0.0.weight: contains NaN or Inf"),
    "psf a list": (_set("learned_psf", value=[[[1.0]]]), "learned_psf: expected a 3D float kernel"),
    "psf even": (_set("learned_psf", value=torch.ones(4, 7, 7)), r"learned_psf: expected .* got .* \(4, 7, 7\)"),
    "psf 2D": (_set("learned_psf", value=torch.ones(7, 7)), "learned_psf: expected a 3D float kernel"),
    "psf huge": (_set("learned_psf", value=torch.zeros(1).expand(2049, 1, 1)), "learned_psf: expected a 3D"),
    "psf integer": (_set("learned_psf", value=torch.ones(3, 3, 3, dtype=torch.int64)), "learned_psf: expected"),
    "psf inf": (_set("learned_psf", value=torch.full((3, 3, 3), math.inf)), "learned_psf: contains NaN or Inf"),
    "voxel size 0": (_set("metadata", "voxel_size", value=[0, 0.1, 0.1]), r"metadata.voxel_size: expected three finite sizes > 0"),
    "voxel size negative": (_set("metadata", "voxel_size", value=[0.25, -0.1, 0.1]), "metadata.voxel_size: expected"),
    "voxel size nan": (_set("metadata", "voxel_size", value=[math.nan, 0.1, 0.1]), "metadata.voxel_size: expected"),
    "voxel size text": (_set("metadata", "voxel_size", value="0.1"), "metadata.voxel_size: expected"),
    "voxel size two": (_set("metadata", "voxel_size", value=[0.1, 0.1]), "metadata.voxel_size: expected"),
    "channels text": (_set("metadata", "channels", value="one"), "metadata.channels: expected a channel count"),
    "channels 0": (_set("metadata", "channels", value=0), "metadata.channels: expected a channel count"),
    "patch shape 0": (_set("metadata", "patch_shape", value=[0, 16, 16]), "metadata.patch_shape: expected"),
    "receptive field bool": (_set("metadata", "receptive_field", value=[True, 1, 1]), "metadata.receptive_field"),
    "normalization a list": (_set("metadata", "normalization", value=[1, 99]), "metadata.normalization: expected a mapping"),
    "normalization reversed": (_set("metadata", "normalization", "percentiles", value=[99.0, 1.0]),
                               "metadata.normalization.percentiles: invalid value"),
    "metadata a list": (_set("metadata", value=[1, 2]), "metadata is .* not a mapping"),
    "long version": (_set("format_version", value="9" * 10000), "model format version .* is not supported"),
}


@pytest.mark.parametrize("forge, message", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_forged_model_is_one_line_naming_the_file_and_field(tmp_path, forge, message):
    payload = torch.load(write_model(tmp_path / "model.pt"), weights_only=True)
    forge(payload)
    forged = tmp_path / "forged.pt"
    torch.save(payload, forged)
    start = time.perf_counter()
    with pytest.raises(CycledeconError) as caught:
        load_model(forged)
    assert time.perf_counter() - start < 5
    text = str(caught.value)
    assert text.startswith(f"{forged}: ") and "\n" not in text and len(text) < 400, text
    assert __import__("re").search(message, text), text


def test_a_pickled_object_is_refused_without_torch_advice(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    payload = copy.deepcopy(torch.load(write_model(tmp_path / "model.pt"), weights_only=True))
    payload["metadata"]["campaign"] = Payload()
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(CycledeconError) as caught:
        load_model(tmp_path / "evil.pt")
    text = str(caught.value)
    assert text.startswith(f"{tmp_path / 'evil.pt'}: not a cycledecon model (it holds Python objects (")
    assert "weights_only" not in text and "\n" not in text and not (tmp_path / "ran").exists()


def test_garbage_is_unreadable_without_torch_advice(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"\x00junk, not a torch file")
    with pytest.raises(CycledeconError, match="garbage.pt: not a cycledecon model .unreadable: ") as caught:
        load_model(tmp_path / "garbage.pt")
    assert "weights_only" not in str(caught.value) and "\n" not in str(caught.value)

"""Training tests: outputs, resume, non-blind mode, errors, and blind identifiability of the PSF."""

from __future__ import annotations

import logging
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import zarr
from scipy import ndimage

import cycledecon.train as training
from cycledecon.config.train import parse_config
from cycledecon.errors import CycledeconError
from cycledecon.model import load_model
from cycledecon.model.unet import receptive_field
from cycledecon.noise import NoiseModel
from cycledecon.patches import ROOM_SUFFIX
from cycledecon.psf.kernel import kernel_room, kernel_shape
from cycledecon.psf.theory import gaussian_psf
from cycledecon.psf_metrics import psf_correlation
from cycledecon.train_checkpoint import CHECKPOINT
from cycledecon.train_state import PatchStore, resident
from helpers import FREE_KERNEL_TRAIN, deep_update

VOXEL = [0.3, 0.1, 0.1]
TINY = deep_update(FREE_KERNEL_TRAIN, {
    "generator": {"depth": 1, "base_channels": 2}, "discriminator": {"base_channels": 2},
    "psf": {"shape_voxels": [3, 5, 5]}, "optim": {"steps": 6, "batch_size": 2},
    "log_every": 1, "val_every": 3, "checkpoint_every": 2, "device": "cpu"})  # fmt: skip


def sharp_volume(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Sparse beads and straight filaments, slightly smoothed: a sharp fluorescence object."""
    volume = np.zeros(shape, np.float32)
    for _ in range(int(np.prod(shape) / 1500)):
        volume[tuple(rng.integers(0, n) for n in shape)] += rng.uniform(0.5, 1.0)
    for _ in range(int(np.prod(shape) / 8000)):
        start = rng.uniform(0, 1, 3) * shape
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        for t in np.arange(0, 40, 0.5):
            p = tuple(np.round(start + t * direction).astype(int))
            if all(0 <= c < n for c, n in zip(p, shape)):
                volume[p] = max(volume[p], 0.6)
    return ndimage.gaussian_filter(volume, 0.6)


def write_store(path, psf: np.ndarray, seed: int, patch=(16, 32, 32), volumes=8, per_volume=8,
                noise=0.002, optics=None, margin=(0, 0, 0)):
    """Unpaired store: A = objects ⊛ psf + noise, B = *other* random objects; one common scale;
    patches cut with `margin` voxels of context on each side."""
    rng = np.random.default_rng(seed)
    big = tuple(2 * p + 2 * m for p, m in zip(patch, margin))
    window = tuple(p + 2 * m for p, m in zip(patch, margin))
    sets = {}
    for domain in "AB":
        for split, n_volumes in (("train", volumes), ("val", 2)):
            patches = []
            for _ in range(n_volumes):
                volume = sharp_volume(rng, big)
                if domain == "A":
                    volume = ndimage.convolve(volume, psf, mode="reflect")
                    volume += rng.normal(0, noise, big).astype(np.float32)
                for _ in range(per_volume):
                    o = [rng.integers(0, b - w + 1) for b, w in zip(big, window)]
                    patches.append(volume[o[0]:o[0] + window[0], o[1]:o[1] + window[1],
                                          o[2]:o[2] + window[2]])
            sets[f"{domain}_{split}"] = np.stack(patches)
    scale = float(np.percentile(sets["B_train"], 99.9))
    group = zarr.open_group(str(path), mode="w")
    for name, data in sets.items():
        group.create_array(name, data=(data / scale).astype(np.float32))
    group.attrs.update({"voxel_size_um": VOXEL, "patch_shape": list(patch), "context_voxels": list(margin),
                        "campaign": "synthetic",
                        "normalization": {"method": "fixed", "scale": scale}, "optics": optics})
    return path


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "patches.zarr"
    return write_store(path, gaussian_psf((3, 5, 5), (1.0, 1.0, 1.0)), seed=1, patch=(8, 16, 16),
                       volumes=2, per_volume=3,
                       optics={"na": 1.2, "wavelength_nm": 520.0, "immersion_ri": 1.33})


def test_train_writes_a_loadable_model_and_its_reports(tiny_store, tmp_path):
    reference = gaussian_psf((3, 5, 5), (1.0, 1.0, 1.0))
    model_path = training.train(tiny_store, tmp_path / "out", TINY, reference_psf=reference)
    assert model_path == tmp_path / "out" / "model.pt"
    generator, meta = load_model(model_path, "cpu")
    assert meta["patch_shape"] == [8, 16, 16] and meta["channels"] == 1
    assert meta["voxel_size"] == VOXEL and meta["normalization"]["method"] == "fixed"
    assert meta["generator"]["depth"] == 1 and meta["receptive_field"] == list(receptive_field(meta["generator"]))
    assert meta["config"]["optim"]["steps"] == 6 and "torch" in meta["versions"]
    # the widefield patches carry Gaussian noise of 0.002 (raw units): the fitted model must say so
    # (25 %: 1,536 Haar blocks in 16 bins, and the blur leaves a little signal in them)
    noise = NoiseModel(**meta["noise_model"])
    median = torch.tensor(float(np.median(zarr.open_group(str(tiny_store))["A_train"][...])))
    assert float(noise.std(median)) == pytest.approx(0.002 / meta["normalization"]["scale"], rel=0.25)
    assert meta["intensity_map"]["gain"] > 0 and set(meta["intensity_map"]) == {"gain", "offset"}
    with tifffile.TiffFile(tmp_path / "out" / "learned_psf.ome.tif") as tif:
        assert tif.is_ome and 'PhysicalSizeZ="0.3"' in tif.ome_metadata
        psf = tif.asarray()
    assert psf.shape == (3, 5, 5) and psf.min() >= 0 and psf.sum() == pytest.approx(1, abs=1e-5)
    log = pd.read_csv(tmp_path / "out" / "train_log.csv")
    assert list(log["step"]) == [1, 2, 3, 4, 5, 6]
    assert log["val_cycle"].notna().sum() == 2 and log["psf_correlation"].notna().sum() == 2
    for figure in ("loss_curves.png", "psf.png"):
        assert (tmp_path / "out" / figure).stat().st_size > 1000


def test_model_file_holds_the_averaged_generator(tiny_store, tmp_path):
    training.train(tiny_store, tmp_path, deep_update(TINY, {"optim": {"steps": 6, "batch_size": 2, "generator_ema": 0.5}}))
    exported = torch.load(tmp_path / "model.pt", weights_only=True)["generator_state"]
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)["model"]
    averaged, last = "g_average.module.", "g."
    for name, value in exported.items():
        assert torch.equal(value, state[averaged + name])
    assert any(not torch.equal(value, state[last + name]) for name, value in exported.items())


@pytest.mark.parametrize("max_norm", [0.0, 1e-3])
def test_generator_gradient_is_clipped_only_when_asked(max_norm):
    torch.manual_seed(0)
    g = torch.nn.Conv3d(1, 2, 3)
    g(torch.rand(1, 1, 5, 5, 5)).square().sum().backward()
    before = [p.grad.clone() for p in g.parameters()]
    norm = training.clip_generator_gradient(g, max_norm)
    assert norm == pytest.approx(float(torch.linalg.vector_norm(torch.cat([b.ravel() for b in before]))))
    after = torch.linalg.vector_norm(torch.cat([p.grad.ravel() for p in g.parameters()]))
    if max_norm == 0:
        assert all(torch.equal(b, p.grad) for b, p in zip(before, g.parameters()))
    else:  # clip_grad_norm_ divides by (norm + 1e-6): the clipped norm is max_norm to ~1e-6 relative
        assert norm > 10 * max_norm and float(after) == pytest.approx(max_norm, rel=1e-4)


def test_psf_gradient_is_scaled_with_the_generators():
    """A spike in G's gradient must not reach the PSF unscaled (Adam would carry it for thousands of
    steps); F's gradient shrinks by G's clipping factor, and stays as it is when G is not clipped."""
    torch.manual_seed(0)
    g, f = torch.nn.Conv3d(1, 2, 3), torch.nn.Conv3d(2, 1, 1)
    f(g(torch.rand(1, 1, 5, 5, 5))).square().sum().backward()
    g_before = torch.cat([p.grad.ravel().clone() for p in g.parameters()])
    f_before = [p.grad.clone() for p in f.parameters()]
    max_norm = float(torch.linalg.vector_norm(g_before)) / 8
    training.clip_generator_gradient(g, max_norm, f)
    g_after = torch.cat([p.grad.ravel() for p in g.parameters()])
    factor = float(torch.linalg.vector_norm(g_after) / torch.linalg.vector_norm(g_before))
    assert factor == pytest.approx(1 / 8, rel=1e-4)  # clip_grad_norm_'s factor, max_norm / (norm + 1e-6)
    for before, p in zip(f_before, f.parameters()):
        torch.testing.assert_close(p.grad, before * factor)
    unclipped = [p.grad.clone() for p in f.parameters()]
    training.clip_generator_gradient(g, 1e6, f)
    assert all(torch.equal(b, p.grad) for b, p in zip(unclipped, f.parameters()))


def test_training_log_records_the_generator_gradient_norm(tiny_store, tmp_path):
    training.train(tiny_store, tmp_path, deep_update(TINY, {"optim": {"steps": 4, "batch_size": 2,
                                                          "generator_grad_clip": 1e-3}}))
    norms = pd.read_csv(tmp_path / "train_log.csv")["grad_norm_g"]
    assert len(norms) == 4 and (norms > 0).all() and norms.notna().all()


def test_two_generator_ablation_trains_with_the_same_loop(tiny_store, tmp_path):
    training.train(tiny_store, tmp_path, deep_update(TINY, {"model": "two_generators"}))
    psf = tifffile.imread(tmp_path / "learned_psf.ome.tif")  # F's impulse response
    assert psf.shape == (3, 5, 5) and psf.sum() == pytest.approx(1, abs=1e-5)
    assert "psf_center" not in pd.read_csv(tmp_path / "train_log.csv")


def test_refine_stage_trains_a_fresh_g_through_the_frozen_blind_kernel(tiny_store, tmp_path):
    config = deep_update(TINY, {"refine": {"steps": 4, "lr_g": 1e-4}})
    model_path = training.train(tiny_store, tmp_path, config)
    blind = tmp_path / training.BLIND_STAGE
    _, blind_meta = load_model(blind / "model.pt")
    _, meta = load_model(model_path)
    assert blind_meta["steps"] == 6 and blind_meta["config"]["refine"]["steps"] == 0
    assert meta["steps"] == 4 and meta["config"]["refine"] == {"steps": 4, "lr_g": 1e-4}
    assert meta["config"]["psf"]["learnable"] is False
    assert meta["config"]["loss"]["adversarial_b"] == 0 and meta["config"]["loss"]["cycle_blurred"] == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "learned_psf.ome.tif"),
                               tifffile.imread(blind / "learned_psf.ome.tif"), atol=1e-7)
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert list(log["step"]) == [1, 2, 3, 4] and (log["cycle_blurred"] > 0).all()  # logged, not weighed
    assert log["lr_g"].iloc[0] == pytest.approx(1e-4)
    # the same as the two trainings by hand that the quality benchmark's probes ran
    by_hand = deep_update(TINY, {"psf": {"shape_voxels": [3, 5, 5], "learnable": False,
                              "file": str(blind / "learned_psf.ome.tif")},
                      "loss": {"adversarial_b": 0, "cycle_blurred": 0},
                      "optim": {"steps": 4, "batch_size": 2, "lr_g": 1e-4}})
    second = torch.load(training.train(tiny_store, tmp_path / "by_hand", by_hand), weights_only=True)
    refined = torch.load(model_path, weights_only=True)
    assert all(torch.equal(value, second["generator_state"][name])
               for name, value in refined["generator_state"].items())


def test_refine_stage_restarts_when_only_its_blind_kernel_changes(tiny_store, tmp_path):
    first = training.train(tiny_store, tmp_path, deep_update(TINY, {"refine": {"steps": 2}}))
    before = torch.load(first, weights_only=True)["generator_state"]
    # fewer blind steps give another kernel under the same file name, while the second stage's
    # own config (its steps and lr_g come from `refine`) stays the same: it must not resume
    shorter = deep_update(TINY, {"optim": {"steps": 4, "batch_size": 2}, "refine": {"steps": 2}})
    after = torch.load(training.train(tiny_store, tmp_path, shorter), weights_only=True)["generator_state"]
    assert any(not torch.equal(before[name], after[name]) for name in before)


def test_interrupted_run_resumes_to_the_uninterrupted_result(tiny_store, tmp_path, monkeypatch):
    training.train(tiny_store, tmp_path / "whole", TINY)

    real_step, calls = training.train_step, []

    def crash_on_fourth_step(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(training, "train_step", crash_on_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        training.train(tiny_store, tmp_path / "split", TINY)
    monkeypatch.undo()
    assert not (tmp_path / "split" / "model.pt").exists()
    training.train(tiny_store, tmp_path / "split", TINY)  # resumes from the step-2 checkpoint

    whole = pd.read_csv(tmp_path / "whole" / "train_log.csv")
    split = pd.read_csv(tmp_path / "split" / "train_log.csv")
    assert list(split["step"]) == [1, 2, 3, 4, 5, 6]  # no gap, no repeat
    # Same seed, same RNG states restored: the CPU run is reproduced (up to float rounding).
    pd.testing.assert_frame_equal(whole.drop(columns="seconds"), split.drop(columns="seconds"),
                                  rtol=1e-5)
    g_whole, _ = load_model(tmp_path / "whole" / "model.pt")
    g_split, _ = load_model(tmp_path / "split" / "model.pt")
    for a, b in zip(g_whole.state_dict().values(), g_split.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_a_diverged_run_stops_with_one_line_and_writes_no_model(tiny_store, tmp_path, monkeypatch):
    real_step, calls = training.train_step, []

    def nan_on_third_step(*args):
        calls.append(1)
        terms = real_step(*args)
        return terms | {"d_a": float("nan")} if len(calls) == 3 else terms

    monkeypatch.setattr(training, "train_step", nan_on_third_step)
    with pytest.raises(CycledeconError, match=r"^training diverged at step 3 \(d_a not finite\);[^\n]*fp32"):
        training.train(tiny_store, tmp_path, TINY)
    assert len(calls) == 3 and not (tmp_path / "model.pt").exists()


def test_checkpoint_of_another_training_is_not_resumed(tiny_store, tmp_path):
    """New patches (a stack added to the campaign) or a new config must retrain, not resume."""
    first = training.train(tiny_store, tmp_path / "out", TINY)
    trained = pd.read_csv(tmp_path / "out" / "train_log.csv")
    store = zarr.open_group(str(tiny_store), mode="r+")
    store["A_train"][0] = 1.0 - store["A_train"][0]  # the campaign's data changed
    training.train(tiny_store, tmp_path / "out", TINY)
    retrained = pd.read_csv(tmp_path / "out" / "train_log.csv")
    assert list(retrained["step"]) == list(trained["step"])  # a whole new run, not a resumed one
    assert not np.allclose(retrained["loss_g"], trained["loss_g"])
    more = deep_update(TINY, {"optim": TINY["optim"] | {"steps": 8}})
    training.train(tiny_store, tmp_path / "out", more)  # another config: starts over, no error
    assert pd.read_csv(tmp_path / "out" / "train_log.csv")["step"].max() == 8
    assert first.exists()


def test_unreadable_checkpoint_is_ignored_with_our_own_words(tiny_store, tmp_path, caplog):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoint.pt").write_bytes(b"torn")
    with caplog.at_level("WARNING", logger="cycledecon.train_checkpoint"):
        training.train(tiny_store, tmp_path / "out", TINY)
    warning = next(r.getMessage() for r in caplog.records if "unreadable checkpoint" in r.getMessage())
    assert "starting over" in warning and "weights_only" not in warning
    assert (tmp_path / "out" / "model.pt").exists()


def test_non_blind_mode_keeps_the_given_psf(tiny_store, tmp_path):
    given = gaussian_psf((3, 5, 5), (0.8, 1.3, 0.9))
    tifffile.imwrite(tmp_path / "psf.tif", given, photometric="minisblack")
    config = deep_update(TINY, {"psf": {"learnable": False, "file": str(tmp_path / "psf.tif")}})
    training.train(tiny_store, tmp_path / "out", config)
    learned = tifffile.imread(tmp_path / "out" / "learned_psf.ome.tif")
    np.testing.assert_allclose(learned, given, atol=1e-7)  # exp(log(p)) round trip in float32
    assert load_model(tmp_path / "out" / "model.pt")[1]["pupil"] is None


MARGIN = (3, 6, 6)
WATER = {"na": 1.2, "wavelength_nm": 520.0, "immersion_ri": 1.33}


@pytest.fixture(scope="module")
def context_store(tmp_path_factory):
    """Patches of 8×16×16 with a context margin of 3×6×6 voxels, optics known."""
    path = tmp_path_factory.mktemp("context") / "patches.zarr"
    return write_store(path, gaussian_psf((7, 13, 13), (1.5, 2.0, 2.0)), seed=2, patch=(8, 16, 16),
                       volumes=2, per_volume=3, optics=WATER, margin=MARGIN)


def test_generator_context_trains_with_a_kernel_inside_the_margin_less_the_ring(context_store, tmp_path):
    """G's ring takes room from the kernel: F(x) must be exact over the ring too."""
    config = deep_update(TINY, {"psf": {"parameterization": "pupil", "energy": 0.9}, "generator_context": [1, 2, 2]})
    training.train(context_store, tmp_path, config)
    store = PatchStore.open(context_store)
    parsed = parse_config(config)
    room = kernel_room(parsed, store)
    assert room == (2, 4, 4)
    learned = tifffile.imread(tmp_path / "learned_psf.ome.tif")
    assert learned.shape == kernel_shape(parsed.psf, store, room)
    assert all(n // 2 <= r for n, r in zip(learned.shape, room))
    _, meta = load_model(tmp_path / "model.pt")
    assert meta["config"]["generator_context"] == [1, 2, 2]


@pytest.mark.parametrize("fill", ["mirror", "edge", "zero"])
def test_ring_refilled_at_faces_needs_the_room_and_trains_with_it(context_store, tmp_path, fill):
    config = deep_update(TINY, {"generator_context": [1, 2, 2], "ring_at_faces": fill, "augment": "lateral"})
    with pytest.raises(CycledeconError, match=rf"train\.ring_at_faces: {fill} .*rerun the patches rule"):
        training.train(context_store, tmp_path / "without", config)
    store = shutil.copytree(context_store, tmp_path / "patches.zarr")
    group = zarr.open_group(str(store), mode="a")
    for name in ("A_train", "B_train", "A_val", "B_val"):  # every patch at a corner of its stack
        group.create_array(name + ROOM_SUFFIX, data=np.zeros((group[name].shape[0], 3, 2), np.int32))
    training.train(store, tmp_path / "with", config)
    _, meta = load_model(tmp_path / "with" / "model.pt")
    assert meta["config"]["ring_at_faces"] == fill


@pytest.mark.parametrize("ring", [[4, 0, 0], [0, 7, 7]])
def test_generator_context_beyond_the_margin_is_refused(context_store, tmp_path, ring):
    with pytest.raises(CycledeconError, match=r"train\.generator_context.*patches\.context_um"):
        training.train(context_store, tmp_path, deep_update(TINY, {"generator_context": ring}))


def test_kernel_too_large_for_the_margin_less_the_ring_is_refused(context_store, tmp_path):
    config = deep_update(TINY, {"psf": {"shape_voxels": [7, 13, 13]}, "generator_context": [1, 0, 0]})
    with pytest.raises(CycledeconError, match=r"less train\.generator_context"):
        training.train(context_store, tmp_path, config)


def test_pupil_psf_with_context_is_trained_and_exported_whole(context_store, tmp_path):
    config = deep_update(TINY, {"psf": {"parameterization": "pupil", "energy": 0.9}})
    training.train(context_store, tmp_path, config)
    store = PatchStore.open(context_store)
    parsed = parse_config(config)
    expected = kernel_shape(parsed.psf, store, kernel_room(parsed, store))
    assert all(n // 2 <= m for n, m in zip(expected, MARGIN))
    learned = tifffile.imread(tmp_path / "learned_psf.ome.tif")
    assert learned.shape == expected and learned.min() >= 0
    assert float(learned.sum()) == pytest.approx(1.0, abs=1e-5)
    _, meta = load_model(tmp_path / "model.pt")
    assert meta["psf_shape"] == list(expected) and meta["context_voxels"] == list(MARGIN)
    pupil = meta["pupil"]  # the learned optics, within the projection's bound (NA ≤ nominal)
    assert pupil["nominal_na"] == WATER["na"] and 0 < pupil["effective_na"] <= WATER["na"] + 1e-6
    assert len(pupil["spherical_rad"]) == len(pupil["spherical_noll"]) == 2
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert np.isfinite(log["cycle_blurred"]).all() and np.isfinite(log["val_cycle"].dropna()).all()


def test_non_blind_mode_uses_the_whole_given_psf(context_store, tmp_path):
    given = gaussian_psf((7, 13, 13), (1.2, 2.5, 2.0))  # exactly the margin's reach: kept whole
    tifffile.imwrite(tmp_path / "psf.tif", given, photometric="minisblack")
    config = deep_update(TINY, {"psf": {"learnable": False, "file": str(tmp_path / "psf.tif")}})
    training.train(context_store, tmp_path / "out", config)
    learned = tifffile.imread(tmp_path / "out" / "learned_psf.ome.tif")
    np.testing.assert_allclose(learned, given, atol=1e-7)  # exp(log(p)) round trip in float32
    assert load_model(tmp_path / "out" / "model.pt")[1]["pupil"] is None


@pytest.mark.parametrize(("psf", "key"), [({"shape_voxels": [9, 13, 13]}, "train.psf.shape_voxels"),
                                          ({"learnable": False}, "train.psf.file")])
def test_kernel_wider_than_the_context_is_refused_not_cropped(context_store, tmp_path, psf, key):
    if "learnable" in psf:
        tifffile.imwrite(tmp_path / "psf.tif", gaussian_psf((7, 15, 15), (1.0, 2.0, 2.0)),
                         photometric="minisblack")
        psf = psf | {"file": str(tmp_path / "psf.tif")}
    with pytest.raises(CycledeconError, match=f"{key}: kernel .* context margin"):
        training.train(context_store, tmp_path / "out", deep_update(TINY, {"psf": psf}))


def test_theoretical_init_needs_optics_and_uses_them(tiny_store, tmp_path):
    config = deep_update(TINY, {"psf": {"shape_voxels": [3, 5, 5], "init": "theoretical", "learnable": False}})
    training.train(tiny_store, tmp_path, config)
    _, meta = load_model(tmp_path / "model.pt")
    assert meta["optics"]["na"] == 1.2
    assert meta["learned_psf"].shape == (3, 5, 5)


@pytest.mark.parametrize(
    ("config", "message"),
    [(deep_update(TINY, {"optim": {"stepz": 3}}), "train.optim.stepz"),
     (deep_update(TINY, {"psf": {"shape_voxels": [17, 5, 5]}}), "train.psf.shape_voxels"),
     (deep_update(TINY, {"device": "tpu"}), "train.device"),
     (deep_update(TINY, {"refine": {"steps": -1}}), "train.refine.steps"),
     (deep_update(TINY, {"model": "two_generators", "refine": {"steps": 2}}), "train.refine.steps: .*psf_layer")],
)
def test_bad_config_fails_before_training(tiny_store, tmp_path, config, message):
    with pytest.raises(CycledeconError, match=message):
        training.train(tiny_store, tmp_path, config)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_unreadable_store_is_a_user_error(tmp_path):
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(CycledeconError, match="empty.zarr: not a readable patch store"):
        training.train(tmp_path / "empty.zarr", tmp_path / "out", TINY)


def test_theoretical_init_without_optics_is_a_user_error(tmp_path):
    store = write_store(tmp_path / "p.zarr", gaussian_psf((3, 5, 5), (1, 1, 1)), seed=0,
                        patch=(8, 16, 16), volumes=1, per_volume=2)
    with pytest.raises(CycledeconError, match="optics"):
        training.train(store, tmp_path / "out", deep_update(TINY, {"psf": {"init": "theoretical"}}))


# Blind identifiability: A is beads/filaments blurred by an axially elongated Gaussian PSF, B other
# random sharp objects. The broad default start correlates 0.68 with the truth and a PSF layer that
# learns nothing stays there: 0.72 passes only if H moves towards the truth, with a margin to the worst
# of three data/training seeds (the CPU run is deterministic; figures in notes/2026-12-07-newcomer.md).
TRUE_SIGMA = (2.4, 0.8, 0.8)
IDENTIFY = deep_update(FREE_KERNEL_TRAIN, {"generator": {"depth": 2}, "psf": {"shape_voxels": [9, 11, 11]}, "optim": {"steps": 150},
                                           "log_every": 25, "val_every": 50, "checkpoint_every": 1000,
                                           "device": "cpu"})  # fmt: skip


def test_blind_training_identifies_the_psf(tmp_path):
    truth = gaussian_psf((9, 11, 11), TRUE_SIGMA)
    store = write_store(tmp_path / "patches.zarr", truth, seed=0)
    initial = gaussian_psf((9, 11, 11), (9 / 6, 11 / 6, 11 / 6))  # the default broad start
    start = time.perf_counter()
    training.train(store, tmp_path / "out", IDENTIFY, reference_psf=truth)
    elapsed = time.perf_counter() - start
    learned = tifffile.imread(tmp_path / "out" / "learned_psf.ome.tif")
    start_correlation, final_correlation = psf_correlation(initial, truth), psf_correlation(learned, truth)
    print(f"PSF correlation with the truth: {start_correlation:.3f} → {final_correlation:.3f} in {elapsed:.0f} s")
    assert start_correlation == pytest.approx(0.679, abs=0.01)  # the start the threshold was set from
    assert final_correlation > 0.72


def test_cpu_training_sets_are_the_stores_arrays_not_copies():
    patches = np.random.default_rng(0).random((3, 4, 5, 6), dtype=np.float32)
    tensor = resident(patches, torch.device("cpu"))
    assert tensor.data_ptr() == patches.ctypes.data and tensor.shape == patches.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_sets_are_copied_to_the_device_once():
    patches = np.random.default_rng(0).random((3, 4, 5, 6), dtype=np.float32)
    tensor = resident(patches, torch.device("cuda"))
    assert tensor.device.type == "cuda"
    np.testing.assert_array_equal(tensor.cpu().numpy(), patches)


def test_collapsed_psf_is_logged_and_recorded_in_the_model(tiny_store, tmp_path, caplog):
    point = np.zeros((3, 5, 5), np.float32)
    point[1, 2, 2] = 1  # a kernel forced to a single voxel: non-blind mode keeps it
    tifffile.imwrite(tmp_path / "psf.tif", point, photometric="minisblack")
    config = deep_update(TINY, {"psf": {"learnable": False, "file": str(tmp_path / "psf.tif")}})
    with caplog.at_level(logging.WARNING, logger="cycledecon.psf_sanity"):
        training.train(tiny_store, tmp_path / "out", config)
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("learned_psf.ome.tif: The learned PSF has collapsed towards a point" in m for m in logged)
    assert any("narrower than the diffraction limit" in m for m in logged)
    sanity = load_model(tmp_path / "out" / "model.pt")[1]["psf_sanity"]
    assert sanity["peak_share"] == pytest.approx(1.0) and sanity["plane_energy"] == pytest.approx([0, 1, 0], abs=1e-6)
    assert sanity["optics"]["na"] == 1.2 and sanity["lateral_limit_um"] == pytest.approx(0.51 * 0.52 / 1.2)
    assert len(sanity["warnings"]) == 2 and "collapsed" in sanity["warnings"][0]

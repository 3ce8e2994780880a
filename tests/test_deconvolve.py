"""Blockwise inference: seam-free equality with the whole-volume output, the written OME-Zarr and
its provenance, model/input checks, normalization of raw inputs, and bf16 against fp32."""

from __future__ import annotations

import json
import logging
import math

import dask
import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from scipy import ndimage

from helpers import FREE_KERNEL_TRAIN, deep_update, imported_modules, sha256, tiny_model, write_ome
from cycledecon import deconvolve
from cycledecon.errors import CycledeconError
from cycledecon.deconvolve import (
    GIB, BlockPredictor, axis_blocks, block_for_budget, block_layout, block_peak_bytes, check_voxel_size,
    default_memory_gb, deconvolve_file, deconvolve_lazy, face_padding_voxels, halo_voxels, normalized_input,
    parse_inference_config, reference_output, pad_faces,
)
from cycledecon.io import read_ome_zarr, write_ome_zarr
from cycledecon.model import UNet3d, load_model, save_model
from cycledecon.normalize import normalize_array
from cycledecon.voxel import VoxelSize

torch.set_num_threads(2)

#: Tiny but real U-Net (2 poolings): its receptive field is 26 voxels, so the halo is 28.
GENERATOR = {"depth": 2, "base_channels": 2}
VOXEL = VoxelSize(0.25, 0.1, 0.1)
NORMALIZATION = {"method": "percentile", "percentiles": [1.0, 99.0], "clip": True}
#: Blockwise and whole-volume runs do the same arithmetic on the same voxels, but torch may pick
#: different convolution algorithms for different tensor shapes: float32 rounding, ~1e-7 here.
TOLERANCE = 1e-4
#: File-level tests split their (12, 40, 44) stack in two along x; seams are tested on arrays.
#: fp32, as their comparisons are at float32 rounding (bf16 is tested on its own, below).
TWO_BLOCKS = {"block_size": [12, 40, 24], "precision": "fp32"}


def tiny_generator(seed: int = 0) -> UNet3d:
    """Random weights with non-trivial batch-norm statistics, so context matters everywhere."""
    torch.manual_seed(seed)
    generator = UNet3d(GENERATOR)
    for module in generator.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return generator.eval()


def write_model(path, channels: int = 1, normalization=NORMALIZATION):
    metadata = {
        "generator": GENERATOR, "receptive_field": [23, 23, 23], "patch_shape": [16, 32, 32],
        "channels": channels, "normalization": normalization, "voxel_size": list(VOXEL.as_tuple()),
        "config": {"generator": GENERATOR, "seed": 0}, "campaign": "test",
    }  # fmt: skip
    return save_model(path, tiny_generator(), metadata, learned_psf=None)


def blockwise(volume: np.ndarray, halo, block, face=None, batch_size: int = 4, mode: str = "edge") -> np.ndarray:
    """Blockwise fp32 output of the tiny G; `face` padding defaults to the halo."""
    predictor = BlockPredictor(tiny_generator(), torch.device("cpu"), "fp32")
    face = halo if face is None else face
    out = deconvolve_lazy(da.from_array(volume, chunks=(5, 7, 9)), predictor, block, batch_size, halo, face, mode)
    with dask.config.set(scheduler="synchronous"):
        return out.compute()


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """Odd sizes: blocks of (4, 8, 8) give three per axis, the last one ragged."""
    return np.random.default_rng(7).random((11, 19, 21)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(volume) -> np.ndarray:
    return reference_output(volume, tiny_generator(), halo_voxels(GENERATOR))


# -------------------------------------------------------------------------------------- seam-free
def test_blocks_equal_the_whole_volume_everywhere(volume, reference):
    halo = halo_voxels(GENERATOR)
    assert halo == (28, 28, 28)
    out = blockwise(volume, halo, (4, 8, 8))
    assert out.shape == volume.shape
    np.testing.assert_allclose(out, reference, rtol=0, atol=TOLERANCE)
    # the test is sensitive: G changes the volume, and blocks without a halo show seams
    assert np.abs(reference - volume).max() > 100 * TOLERANCE
    unpadded = reference_output(volume, tiny_generator(), (0, 0, 0))
    assert np.abs(blockwise(volume, (0, 0, 0), (4, 8, 8)) - unpadded).max() > 100 * TOLERANCE


#: Blocks that split every axis of the (11, 19, 21) volume, the last one ragged: three per axis,
#: and blocks of unequal sizes per axis (two along z and y, three along x).
SPLITS = [(4, 8, 8), (8, 12, 8)]


@pytest.mark.parametrize("block", SPLITS)
@pytest.mark.parametrize("face", [(0, 0, 0), (4, 4, 4), (12, 12, 12), (28, 28, 28), (0, 8, 20)])
def test_blocks_equal_the_whole_volume_for_any_face_padding(volume, face, block):
    """Interior borders keep the full halo, the faces only `face`: blockwise still equals G on the
    volume padded by `face`, at block borders and faces alike."""
    halo = halo_voxels(GENERATOR)
    expected = reference_output(volume, tiny_generator(), face)
    np.testing.assert_allclose(blockwise(volume, halo, block, face), expected, rtol=0, atol=TOLERANCE)


def test_face_padding_reaches_g_at_the_faces(volume, reference):
    """No padding and the full halo differ at the faces (where G's zero padding meets the stack
    or mirrored data), so the parameter does reach G; a padding past the halo changes nothing."""
    halo = halo_voxels(GENERATOR)
    bare = blockwise(volume, halo, (4, 8, 8), face=(0, 0, 0))
    for face in ([slice(0, 1), ...], [..., slice(-1, None)], [slice(None), slice(0, 1)]):
        assert np.abs(bare[tuple(face)] - reference[tuple(face)]).max() > 10 * TOLERANCE  # far above rounding
    wider = reference_output(volume, tiny_generator(), (36, 32, 40))
    np.testing.assert_allclose(wider, reference, rtol=0, atol=TOLERANCE)


def test_face_padding_is_rounded_to_the_pooling_grid_and_capped_at_the_halo():
    assert face_padding_voxels(GENERATOR, (0, 5, 100)) == (0, 8, 28)
    assert face_padding_voxels(GENERATOR, (4, 4, 4)) == (4, 4, 4)
    assert face_padding_voxels(GENERATOR) == tuple(min(e, 28) for e in _default_face())
    assert face_padding_voxels({"depth": 3, "base_channels": 8}, (8, 16, 0)) == (8, 16, 0)


def _default_face() -> tuple[int, ...]:
    """DEFAULT_FACE_PADDING_VOXELS rounded up to the tiny G's pooling grid."""
    return tuple(-(-e // 4) * 4 for e in deconvolve.DEFAULT_FACE_PADDING_VOXELS)


def test_blocks_read_the_halo_between_them_and_the_face_padding_at_the_faces():
    """Coordinates on the padded axis. An axis of 21 with blocks of 8, a halo of 28 and a face
    padding of 4: every block reads all of the padded 29 voxels."""
    blocks = axis_blocks(21, 8, 28, 4)
    assert [(a.start, a.stop) for a in blocks] == [(4, 12), (12, 20), (20, 25)]
    assert [(a.read_start, a.read_stop, a.crop) for a in blocks] == [(0, 29, slice(4, 12)), (0, 29, slice(12, 20)),
                                                                      (0, 29, slice(20, 25))]  # fmt: skip
    blocks = axis_blocks(100, 8, 12, 4)  # a halo of 12 between blocks, 4 at the faces
    assert blocks[0] == (4, 12, 0, 24) and blocks[0].crop == slice(4, 12)
    assert blocks[5] == (44, 52, 32, 64) and blocks[5].crop == slice(12, 20)
    assert blocks[-1] == (100, 104, 88, 108) and blocks[-1].crop == slice(12, 16)


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_face_padding_matches_numpy_even_past_the_axis_length(mode):
    data = np.arange(3 * 5 * 6, dtype=np.float32).reshape(3, 5, 6)
    padded = pad_faces(da.from_array(data, chunks=2), (7, 2, 0), mode).compute()
    np.testing.assert_array_equal(padded, np.pad(data, [(7, 7), (2, 2), (0, 0)], mode=mode))


@pytest.mark.parametrize("block", SPLITS)
def test_reflect_padded_blocks_equal_the_whole_reflect_padded_volume(volume, block):
    """deconvolve.face_padding_mode: reflect is as seam-free as edge, and it does reach G: the
    faces' output differs from the edge-padded one."""
    halo, face = halo_voxels(GENERATOR), (12, 12, 12)
    expected = reference_output(volume, tiny_generator(), face, "reflect")
    out = blockwise(volume, halo, block, face, mode="reflect")
    np.testing.assert_allclose(out, expected, rtol=0, atol=TOLERANCE)
    edge = reference_output(volume, tiny_generator(), face, "edge")
    assert np.abs(out[0] - edge[0]).max() > 10 * TOLERANCE


def test_blocks_are_whole_chunks_and_pooling_cells():
    assert block_layout((10, 100, 300), GENERATOR) == ((12, 100, 384), (12, 100, 128))
    assert block_layout((32, 200, 128), GENERATOR) == ((32, 256, 128), (32, 128, 128))
    assert block_layout((6, 10, 128), GENERATOR) == ((8, 12, 128), (8, 12, 128))


def test_face_padding_config_takes_one_number_or_three():
    assert parse_inference_config({}).face_padding_voxels is None
    assert parse_inference_config({"face_padding_voxels": 16}).face_padding_voxels == (16, 16, 16)
    assert parse_inference_config({"face_padding_voxels": [0, 8, 16]}).face_padding_voxels == (0, 8, 16)
    with pytest.raises(CycledeconError, match=r"deconvolve.face_padding_voxels: invalid value \(8, -8, 8\)"):
        parse_inference_config({"face_padding_voxels": [8, -8, 8]})
    with pytest.raises(CycledeconError, match="deconvolve.face_padding_voxels: expected a list of 3"):
        parse_inference_config({"face_padding_voxels": True})
    assert parse_inference_config({}).face_padding_mode == "edge"
    with pytest.raises(CycledeconError, match="deconvolve.face_padding_mode"):
        parse_inference_config({"face_padding_mode": "wrap"})


def test_config_names_an_unknown_or_bad_key():
    assert parse_inference_config({"block_size": [8, 64, 64]}).block_size == (8, 64, 64)
    assert parse_inference_config({}).block_size is None and parse_inference_config({}).memory_gb is None
    with pytest.raises(CycledeconError, match="deconvolve.memory_gb: invalid value 0.0"):
        parse_inference_config({"memory_gb": 0})
    with pytest.raises(CycledeconError, match="deconvolve.tile_size: unknown key"):
        parse_inference_config({"tile_size": [8, 64, 64]})
    with pytest.raises(CycledeconError, match="deconvolve.batch_size"):
        parse_inference_config({"batch_size": 0})
    with pytest.raises(CycledeconError, match="deconvolve.precision"):
        parse_inference_config({"precision": "float8"})


def test_precision_defaults_to_auto_and_takes_the_old_names():
    assert parse_inference_config({}).precision == "auto"
    assert parse_inference_config({"precision": "float32"}).precision == "fp32"
    assert parse_inference_config({"precision": "bfloat16"}).precision == "bf16"
    with pytest.raises(CycledeconError, match="deconvolve.precision: must be one of auto, bf16, fp32"):
        parse_inference_config({"precision": "float16"})


# ---------------------------------------------------------------------------------- memory budget
def budget_gb(block, shape, bf16: bool = False, face=None) -> float:
    """The budget (GiB) that `block` just fits by the estimate; a hair above it, for float rounding."""
    return block_peak_bytes(block, shape, GENERATOR, bf16, face_padding=face) / GIB * (1 + 1e-9)


@pytest.mark.parametrize("bf16", [False, True])
def test_block_for_a_budget_fits_it_and_keeps_the_seam_free_rules(bf16):
    shape = (40, 300, 260)
    smallest, whole = budget_gb((4, 4, 4), shape, bf16), budget_gb(shape, shape, bf16)
    for memory_gb in np.linspace(smallest, whole, 9):
        block = block_for_budget(shape, GENERATOR, memory_gb, bf16)
        assert block_peak_bytes(block, shape, GENERATOR, bf16) <= memory_gb * GIB
        assert block_layout(block, GENERATOR)[0] == block  # multiples of 2**depth and whole chunks
    # the whole volume once the budget allows it, and no larger than the volume needs
    assert block_for_budget(shape, GENERATOR, whole, bf16) == block_layout(shape, GENERATOR)[0] == (64, 384, 384)
    assert block_for_budget(shape, GENERATOR, 100 * whole, bf16) == (64, 384, 384)
    assert block_for_budget(shape, GENERATOR, smallest, bf16) == (4, 4, 4)


def test_a_larger_budget_never_gives_a_smaller_block():
    shape = (40, 300, 260)
    budgets = np.geomspace(budget_gb((4, 4, 4), shape), budget_gb(shape, shape), 40)
    blocks = [block_for_budget(shape, GENERATOR, memory_gb, bf16=False) for memory_gb in budgets]
    for smaller, larger in zip(blocks, blocks[1:]):
        assert all(s <= n for s, n in zip(smaller, larger)), (smaller, larger)
    assert len(set(blocks)) > 10  # the block does grow with the budget, on every axis
    assert blocks[0] == (4, 4, 4) and blocks[-1] == (64, 384, 384)


@pytest.mark.parametrize("face", [(0, 0, 0), (4, 8, 12), (28, 28, 28)])
@pytest.mark.parametrize("block", [(4, 8, 8), (8, 12, 8), (12, 20, 24)])
def test_the_memory_estimate_counts_the_largest_input_g_gets(volume, face, block):
    """Face blocks read less than interior ones: the estimate takes the largest input actually
    given to G, whatever the face padding (with the full halo at the faces: the block plus 2 halos)."""
    shapes = []
    predictor = BlockPredictor(tiny_generator(), torch.device("cpu"), "fp32")
    predictor.generator = lambda batch: (shapes.append(tuple(batch.shape[2:])), batch)[1]
    out = deconvolve_lazy(da.from_array(volume), predictor, block, 1, halo_voxels(GENERATOR), face)
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(out.compute(), volume)  # an identity G: crops put every voxel back
    largest = tuple(max(s[axis] for s in shapes) for axis in range(3))
    assert math.prod(largest) in {math.prod(s) for s in shapes}  # one block is the largest on every axis
    per_voxel = deconvolve.activation_bytes_per_voxel(GENERATOR, False) + deconvolve.BUFFER_BYTES
    estimate = block_peak_bytes(block, volume.shape, GENERATOR, False, face_padding=face)
    assert estimate == pytest.approx(deconvolve.FIXED_BYTES + math.prod(largest) * per_voxel)
    if face == (28, 28, 28):
        assert largest == tuple(min(b, n) + 56 for b, n in zip(block, volume.shape))


def test_a_budget_below_the_smallest_block_is_one_clear_error(tmp_path, files):
    memory_gb = budget_gb((4, 4, 4), (12, 40, 44)) / 2
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(CycledeconError) as info:
        deconvolve_file(files["tiff"], files["model"], out, {"memory_gb": memory_gb}, progress=False)
    message = str(info.value)
    assert message.startswith(f"deconvolve.memory_gb: {memory_gb:.3g} GiB is too small; the smallest block, "
                              "[4, 4, 4] voxels plus a halo of [28, 28, 28]"), message  # fmt: skip
    assert "\n" not in message
    assert not out.exists()


def test_blocks_chosen_for_a_budget_equal_the_whole_volume(volume, reference):
    """With the full halo as face padding, as smaller ones let every block of this small volume
    read all of it (and the budget then takes the whole volume)."""
    halo = halo_voxels(GENERATOR)
    memory_gb = (budget_gb((4, 4, 4), volume.shape, face=halo) + budget_gb(volume.shape, volume.shape, face=halo)) / 2
    block = block_for_budget(volume.shape, GENERATOR, memory_gb, bf16=False, face_padding=halo)
    assert block == (12, 12, 8)  # several blocks along y and x, one along z
    np.testing.assert_allclose(blockwise(volume, halo, block, halo), reference, rtol=0, atol=TOLERANCE)
    small = face_padding_voxels(GENERATOR)  # the default: every (4, 4, 4) block reads the whole padded volume
    assert block_for_budget(volume.shape, GENERATOR, budget_gb((4, 4, 4), volume.shape), bf16=False) == (12, 20, 24)
    assert budget_gb((4, 4, 4), volume.shape) == budget_gb(volume.shape, volume.shape) and small < halo


def test_budget_and_the_block_chosen_for_it_are_recorded_and_logged(tmp_path, files, caplog):
    shape, face = files["raw"].shape, (16, 16, 16)  # padding wide enough that small blocks read less
    memory_gb = round((budget_gb((4, 4, 4), shape, face=face) + budget_gb(shape, shape, face=face)) / 2, 3)
    with caplog.at_level(logging.INFO, logger="cycledecon.deconvolve"):
        out = deconvolve_file(files["tiff"], files["model"], tmp_path / "out.ome.zarr",
                              {"memory_gb": memory_gb, "precision": "fp32", "face_padding_voxels": list(face)},
                              progress=False)  # fmt: skip
    data, _, attrs = read_ome_zarr(out)
    record = attrs["deconvolution"]
    chosen = block_for_budget(shape, GENERATOR, memory_gb, bf16=False, face_padding=face)
    blocks = math.prod(math.ceil(n / b) for n, b in zip(shape, chosen))
    assert record["block_size"] == list(chosen) and blocks > 1
    assert record["memory_gb"] == memory_gb
    assert 0 < record["estimated_peak_gb"] <= memory_gb
    assert f"{blocks} blocks of {tuple(chosen)} (for a budget of {memory_gb:.2f} GiB)" in caplog.text
    # the budget's blocks give what one block of the whole volume gives, with the same face padding
    whole = deconvolve_file(files["tiff"], files["model"], tmp_path / "whole.ome.zarr",
                            {"block_size": list(shape), "precision": "fp32", "face_padding_voxels": list(face)},
                            progress=False)  # fmt: skip
    np.testing.assert_allclose(data.compute(), read_ome_zarr(whole)[0].compute(), rtol=0, atol=TOLERANCE)


def test_explicit_block_size_wins_over_the_budget(tmp_path, files):
    """A budget far too small for any block: ignored, as block_size is given."""
    out = deconvolve_file(files["tiff"], files["model"], tmp_path / "out.ome.zarr",
                          {**TWO_BLOCKS, "memory_gb": 0.001}, progress=False)  # fmt: skip
    record = read_ome_zarr(out)[2]["deconvolution"]
    assert record["block_size"] == [12, 40, 24]
    assert record["memory_gb"] is None


def test_default_budget_is_half_the_free_memory_at_most_the_cap(monkeypatch):
    cpu = torch.device("cpu")
    assert 0 < default_memory_gb(cpu) <= deconvolve.MEMORY_CAP_GB  # this machine's MemAvailable (or the fallback)
    for free, expected in [(6 * GIB, 3.0), (1000 * GIB, deconvolve.MEMORY_CAP_GB), (None, deconvolve.FALLBACK_MEMORY_GB)]:
        monkeypatch.setattr(deconvolve, "_free_memory_bytes", lambda device, free=free: free)
        assert default_memory_gb(cpu) == expected


# ------------------------------------------------------------------------------------- file level
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A raw OME-TIFF, a model for it and the model's float32 output, made once for this module."""
    root = tmp_path_factory.mktemp("infer")
    raw = np.random.default_rng(3).integers(100, 4000, size=(12, 40, 44), dtype=np.uint16)
    tiff = write_ome(root / "raw.ome.tif", raw, voxel_size=VOXEL.as_tuple())
    model = write_model(root / "model.pt")
    out = deconvolve_file(tiff, model, root / "out.ome.zarr", TWO_BLOCKS, progress=False)
    return {"raw": raw, "tiff": tiff, "model": model, "out": out}


def test_the_library_call_does_not_import_dask_distributed(tmp_path):
    """Outside the CLI's boundary too (a notebook calling deconvolve_file), no compute or rechunk
    leaves dask to look for a cluster, which imports dask.distributed (slow, installed with bioio)."""
    raw, model = tiny_model(tmp_path, shape=(8, 128, 128))  # wide enough for a pyramid level
    code = ("import json, sys; from cycledecon.deconvolve import deconvolve_file\n"
            "deconvolve_file(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), progress=False)")
    config = json.dumps({"block_size": [8, 64, 64]})  # blocks unlike the store's chunks: a rechunk
    assert imported_modules(code, str(raw), str(model), str(tmp_path / "out.ome.zarr"), config) == set()


def test_output_is_an_ome_zarr_with_voxel_size_and_model_identity(files):
    image = list(Reader(parse_url(str(files["out"])))())[0]
    assert image.data[0].shape == (12, 40, 44)
    assert [a["name"] for a in image.metadata["axes"]] == ["z", "y", "x"]
    scale = image.metadata["coordinateTransformations"][0][0]["scale"]
    np.testing.assert_allclose(scale, VOXEL.as_tuple())
    record = zarr.open_group(str(files["out"]), mode="r").attrs["cycledecon"]["deconvolution"]
    assert record["model_sha256"] == sha256(files["model"])
    assert record["model_path"] == str(files["model"].resolve())
    assert len(record["train_config_sha256"]) == 64
    assert record["cycledecon_version"]
    assert record["halo_voxels"] == [28, 28, 28]
    assert record["face_padding_voxels"] == list(face_padding_voxels(GENERATOR))
    assert record["boundary"] == "edge"
    assert record["precision"] == "fp32"


def test_reflect_face_padding_reaches_the_output_and_its_record(tmp_path, files):
    out = deconvolve_file(files["tiff"], files["model"], tmp_path / "reflect.ome.zarr",
                          TWO_BLOCKS | {"face_padding_mode": "reflect"}, progress=False)
    assert zarr.open_group(str(out), mode="r").attrs["cycledecon"]["deconvolution"]["boundary"] == "reflect"
    reflected, edge = read_ome_zarr(out)[0], read_ome_zarr(files["out"])[0]
    assert np.abs(edge[0] - reflected[0]).max() > 0  # the first plane sees what lies past the face


def test_raw_input_gets_the_models_normalization(tmp_path, files):
    from_raw, _, attrs = read_ome_zarr(files["out"])
    assert attrs["normalization"]["applied"]["percentile_values"]
    normalized, record = normalize_array(files["raw"], VOXEL, NORMALIZATION)
    store = write_ome_zarr(normalized, tmp_path / "norm.ome.zarr", VOXEL, attrs={"normalization": record})
    from_normalized, _, _ = read_ome_zarr(deconvolve_file(store, files["model"], tmp_path / "b.ome.zarr",
                                                          {"precision": "fp32"}, progress=False))  # fmt: skip
    np.testing.assert_allclose(from_raw.compute(), from_normalized.compute(), rtol=0, atol=TOLERANCE)
    unnormalized = reference_output(files["raw"].astype(np.float32), tiny_generator(), halo_voxels(GENERATOR))
    assert np.abs(from_raw.compute() - unnormalized).max() > 1.0


def test_uint16_output_records_its_scale(tmp_path, files):
    """Whole counts in input units (scale 1), 1e-4 steps in normalized units (scale 10000)."""
    for units, default_scale in [("input", 1.0), ("normalized", 10000.0)]:
        config = {**TWO_BLOCKS, "output_dtype": "uint16", "units": units}
        out = deconvolve_file(files["tiff"], files["model"], tmp_path / f"u_{units}.ome.zarr", config, progress=False)
        as_uint16, _, attrs = read_ome_zarr(out)
        scale = attrs["deconvolution"]["uint16_scale"]
        assert scale == attrs["deconvolution"]["intensity"]["uint16_scale"] == default_scale
        assert as_uint16.dtype == np.uint16
        as_float = deconvolve_file(files["tiff"], files["model"], tmp_path / f"f_{units}.ome.zarr",
                                   {**TWO_BLOCKS, "units": units}, progress=False)  # fmt: skip
        expected = np.clip(read_ome_zarr(as_float)[0].compute(), 0, None)
        np.testing.assert_allclose(as_uint16.compute() / scale, expected, rtol=0, atol=0.5 / scale + 1e-6)


# ------------------------------------------------------------------------------- intensity units
#: Percentile normalization without clipping: its inverse gives back every voxel, not only those
#: between the percentiles.
LINEAR = {"method": "percentile", "percentiles": [1.0, 99.0], "clip": False}
#: float32 round trip through (x − low) / (high − low) and back, for values up to 65535.
ADU_TOLERANCE = 0.02


def shift_model(path, shift: float = 0.0, normalization=LINEAR):
    """A model whose G returns its input plus `shift` (normalized units) exactly: residual U-Net
    with a zero head, its bias the shift."""
    generator = tiny_generator()
    torch.nn.init.zeros_(generator.head.weight)
    torch.nn.init.constant_(generator.head.bias, shift)
    metadata = {
        "generator": GENERATOR, "receptive_field": [23, 23, 23], "patch_shape": [16, 32, 32], "channels": 1,
        "normalization": normalization, "voxel_size": list(VOXEL.as_tuple()), "config": {}, "campaign": "test",
    }  # fmt: skip
    return save_model(path, generator, metadata, learned_psf=None)


@pytest.fixture(scope="module")
def adu(tmp_path_factory):
    """A raw stack in camera counts: offset 100, a background of 300 and bright beads up to ~60000."""
    root = tmp_path_factory.mktemp("adu")
    rng = np.random.default_rng(11)
    beads = np.zeros((12, 40, 44), np.float32)
    beads[tuple(rng.integers(0, (12, 40, 44), (25, 3)).T)] = 1
    signal = 400 + 2.5e6 * ndimage.gaussian_filter(beads, (1.0, 1.5, 1.5))
    raw = np.clip(100 + rng.poisson(signal), 0, 60000).astype(np.uint16)
    tiff = write_ome(root / "adu.ome.tif", raw, voxel_size=VOXEL.as_tuple())
    low, high = np.percentile(raw, [1.0, 99.0])
    return {"root": root, "raw": raw, "tiff": tiff, "low": float(low), "range": float(high - low)}


def test_identity_model_gives_back_the_raw_stack_in_its_units(tmp_path, adu):
    """Raw TIFF and the workflow's normalized store alike: an identity G returns the camera counts
    (to float32 rounding), so the background level is the raw one, offset included."""
    model = shift_model(tmp_path / "identity.pt")
    normalized, record = normalize_array(adu["raw"], VOXEL, LINEAR)
    store = write_ome_zarr(normalized, tmp_path / "norm.ome.zarr", VOXEL, attrs={"normalization": record})
    raw = adu["raw"].astype(np.float32)
    for name, source in [("tiff", adu["tiff"]), ("store", store)]:
        data, _, attrs = read_ome_zarr(deconvolve_file(source, model, tmp_path / f"{name}.ome.zarr", TWO_BLOCKS,
                                                       progress=False))  # fmt: skip
        out = data.compute()
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, raw, rtol=0, atol=ADU_TOLERANCE)
        background = raw < np.percentile(raw, 50)
        assert np.median(out[background]) == pytest.approx(np.median(raw[background]), rel=0.01)
        intensity = attrs["deconvolution"]["intensity"]
        assert intensity["units"] == intensity["requested_units"] == "input"
        assert intensity["inverse"]["offset"] == pytest.approx(adu["low"])
        assert intensity["inverse"]["scale"] == pytest.approx(adu["range"])
        assert intensity["clipped_voxels"] == {"negative": 0, "above_uint16": 0}


def test_output_in_input_units_is_clipped_at_zero_and_the_clipped_voxels_counted(tmp_path, adu):
    """G lowers every voxel by 500.5 counts: the output is raw − 500.5 where that is positive, 0
    elsewhere, and the attributes count exactly the voxels set to 0."""
    model = shift_model(tmp_path / "darker.pt", shift=-500.5 / adu["range"])
    data, _, attrs = read_ome_zarr(deconvolve_file(adu["tiff"], model, tmp_path / "out.ome.zarr", TWO_BLOCKS,
                                                   progress=False))  # fmt: skip
    out, raw = data.compute(), adu["raw"].astype(np.float32)
    assert out.min() == 0.0
    np.testing.assert_allclose(out, np.maximum(raw - 500.5, 0), rtol=0, atol=ADU_TOLERANCE)
    expected = int(np.count_nonzero(raw < 500.5))
    assert 0 < expected < raw.size
    record = attrs["deconvolution"]["intensity"]
    assert record["clipped_voxels"] == {"negative": expected, "above_uint16": 0}
    assert record["clip_min"] == 0.0 and record["dtype"] == "float32"


def test_uint16_in_input_units_counts_the_voxels_clipped_at_65535(tmp_path, adu, caplog):
    """G adds 6000.25 counts: whole counts raw + 6000, those above 65535 clipped, counted and warned."""
    model = shift_model(tmp_path / "brighter.pt", shift=6000.25 / adu["range"])
    with caplog.at_level(logging.WARNING, logger="cycledecon.deconvolve"):
        out = deconvolve_file(adu["tiff"], model, tmp_path / "u.ome.zarr", {**TWO_BLOCKS, "output_dtype": "uint16"},
                              progress=False)  # fmt: skip
    data, _, attrs = read_ome_zarr(out)
    raw = adu["raw"].astype(np.int64)
    assert data.dtype == np.uint16
    np.testing.assert_array_equal(data.compute(), np.clip(raw + 6000, 0, 65535))
    expected = int(np.count_nonzero(raw + 6000 > 65535))
    assert expected > 0
    assert attrs["deconvolution"]["intensity"]["clipped_voxels"] == {"negative": 0, "above_uint16": expected}
    assert f"{expected} voxel(s) exceeded 65535" in caplog.text


def test_normalized_units_reproduce_the_networks_own_output(tmp_path, files):
    """units: normalized is G on the normalized stack, negatives kept; units: input is that output
    through the recorded inverse, clipped at 0."""
    out = deconvolve_file(files["tiff"], files["model"], tmp_path / "n.ome.zarr",
                          {**TWO_BLOCKS, "units": "normalized"}, progress=False)  # fmt: skip
    data, _, attrs = read_ome_zarr(out)
    normalized, _ = normalize_array(files["raw"], VOXEL, NORMALIZATION)
    expected = reference_output(normalized, tiny_generator(), face_padding_voxels(GENERATOR))
    np.testing.assert_allclose(data.compute(), expected, rtol=0, atol=TOLERANCE)
    assert expected.min() < 0  # the old output's negatives are kept in normalized units
    intensity = attrs["deconvolution"]["intensity"]
    assert intensity["units"] == "normalized" and intensity["inverse"] is None and intensity["clip_min"] is None
    in_input, _, input_attrs = read_ome_zarr(files["out"])
    inverse = input_attrs["deconvolution"]["intensity"]["inverse"]
    back = np.maximum(expected * inverse["scale"] + inverse["offset"], 0)
    np.testing.assert_allclose(in_input.compute(), back, rtol=0, atol=TOLERANCE * inverse["scale"])
    assert input_attrs["deconvolution"]["intensity"]["clipped_voxels"]["negative"] == np.count_nonzero(
        expected * inverse["scale"] + inverse["offset"] < 0
    )


def test_clahe_output_stays_normalized_with_one_warning(tmp_path, adu, caplog):
    """CLAHE has no inverse: units input is not honoured, said once in the log and in the attributes."""
    clahe = {"method": "clahe", "percentiles": [1.0, 99.0]}
    model = shift_model(tmp_path / "clahe.pt", normalization=clahe)
    with caplog.at_level(logging.WARNING, logger="cycledecon"):
        out = deconvolve_file(adu["tiff"], model, tmp_path / "c.ome.zarr", TWO_BLOCKS, progress=False)
    data, _, attrs = read_ome_zarr(out)
    intensity = attrs["deconvolution"]["intensity"]
    assert intensity["units"] == "normalized" and intensity["requested_units"] == "input"
    assert intensity["inverse"] is None and "CLAHE" in intensity["note"]
    warnings = [r for r in caplog.records if "normalized units" in r.getMessage()]
    assert len(warnings) == 1 and "CLAHE" in warnings[0].getMessage()
    values = data.compute()
    assert 0 <= values.min() and values.max() <= 1  # CLAHE's [0, 1], through an identity G


def test_uint16_in_input_units_of_a_unit_range_stack_is_warned(tmp_path, adu, caplog):
    """A stack already scaled to [0, 1] keeps a handful of levels as whole counts: a warning says so."""
    scaled = write_ome(tmp_path / "unit.ome.tif", adu["raw"].astype(np.float32) / 65535, voxel_size=VOXEL.as_tuple())
    model = shift_model(tmp_path / "identity.pt")
    with caplog.at_level(logging.WARNING, logger="cycledecon.deconvolve"):
        deconvolve_file(scaled, model, tmp_path / "u.ome.zarr", {**TWO_BLOCKS, "output_dtype": "uint16"},
                        progress=False)  # fmt: skip
    assert "uint16 output at uint16_scale 1 keeps only" in caplog.text


def test_units_and_uint16_scale_config():
    assert parse_inference_config({}).units == "input" and parse_inference_config({}).uint16_scale is None
    assert parse_inference_config({"units": "normalized"}).units == "normalized"
    with pytest.raises(CycledeconError, match="deconvolve.units: must be one of input, normalized, got 'adu'"):
        parse_inference_config({"units": "adu"})
    with pytest.raises(CycledeconError, match="deconvolve.uint16_scale: invalid value 0.0"):
        parse_inference_config({"uint16_scale": 0})


def test_ngff_version_config_takes_strings_and_yamls_numbers():
    assert parse_inference_config({}).ngff_version == "0.5"
    assert parse_inference_config({"ngff_version": 0.4}).ngff_version == "0.4"  # YAML's unquoted 0.4
    assert parse_inference_config({"ngff_version": "0.4"}).ngff_version == "0.4"
    with pytest.raises(CycledeconError, match="deconvolve.ngff_version: must be one of 0.5, 0.4, got '0.3'"):
        parse_inference_config({"ngff_version": "0.3"})


@pytest.mark.parametrize("version, zarr_format", [("0.4", 2), ("0.5", 3)])
def test_output_is_written_in_the_ngff_version_asked_and_named_after_the_input(tmp_path, files, version,
                                                                                 zarr_format):  # fmt: skip
    """The store's multiscale and omero names are the input's (raw.ome.tif → raw), not the output's
    file name, whichever version is written; both versions read back alike."""
    out = deconvolve_file(files["tiff"], files["model"], tmp_path / "elsewhere.ome.zarr",
                          {**TWO_BLOCKS, "ngff_version": version}, progress=False)  # fmt: skip
    group = zarr.open_group(str(out), mode="r")
    assert group.metadata.zarr_format == zarr_format
    attrs = group.attrs.asdict()
    ome = attrs.get("ome", attrs)  # NGFF 0.5 nests its metadata under "ome"
    assert ome["multiscales"][0]["name"] == "raw" and ome["omero"]["name"] == "raw"
    data, voxel_size, _ = read_ome_zarr(out)
    assert voxel_size == VOXEL
    np.testing.assert_allclose(data.compute(), read_ome_zarr(files["out"])[0].compute(), rtol=0, atol=TOLERANCE)


def test_a_store_with_a_sample_attribute_names_the_output_after_the_sample(tmp_path, files):
    store = write_ome_zarr(files["raw"], tmp_path / "wf_01.ome.zarr", VOXEL, attrs={"sample": "cell_7"})
    out = deconvolve_file(store, files["model"], tmp_path / "out.ome.zarr", {"precision": "fp32"}, progress=False)
    assert deconvolve.input_name(store, read_ome_zarr(store)[2]) == "cell_7"
    assert zarr.open_group(str(out), mode="r").attrs["ome"]["multiscales"][0]["name"] == "cell_7"


def test_interrupted_run_leaves_no_store(tmp_path, files, monkeypatch):
    """Interrupted after some blocks were written: nothing that looks like an output remains."""
    calls = []
    run = BlockPredictor.__call__

    def fail_on_second(self, blocks):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run(self, blocks)

    monkeypatch.setattr(BlockPredictor, "__call__", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        deconvolve_file(files["tiff"], files["model"], tmp_path / "out.ome.zarr", TWO_BLOCKS,
                        progress=False)  # fmt: skip
    assert len(calls) == 2
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------- bad inputs
def test_corrupt_and_foreign_model_files_are_clear_errors(tmp_path, files):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CycledeconError, match="not a cycledecon model"):
        deconvolve_file(files["tiff"], corrupt, tmp_path / "out.ome.zarr", progress=False)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CycledeconError, match="not a cycledecon model"):
        deconvolve_file(files["tiff"], foreign, tmp_path / "out.ome.zarr", progress=False)


def test_model_for_another_channel_count_is_a_clear_error(tmp_path, files):
    model = write_model(tmp_path / "model.pt", channels=2)
    with pytest.raises(CycledeconError, match="1 channel.*trained on 2"):
        deconvolve_file(files["tiff"], model, tmp_path / "out.ome.zarr", progress=False)
    assert not (tmp_path / "out.ome.zarr").exists()


def test_voxel_size_far_from_the_training_data_is_warned(caplog):
    metadata = {"voxel_size": [0.25, 0.1, 0.1]}
    with caplog.at_level(logging.WARNING, logger="cycledecon.deconvolve"):
        check_voxel_size(VoxelSize(0.26, 0.105, 0.1), metadata, "a.tif")  # 4 % and 5 %: fine
        assert not caplog.records
        check_voxel_size(VoxelSize(0.25, 0.13, 0.13), metadata, "b.tif")
    assert "wrong scale" in caplog.text


def test_input_normalized_otherwise_than_the_model_expects_is_warned(caplog):
    data = da.zeros((4, 8, 8), dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="cycledecon.deconvolve"):
        model = {"normalization": NORMALIZATION}
        normalized_input(data, VOXEL, {"normalization": {**NORMALIZATION, "applied": {}}}, model)
        assert not caplog.records
        normalized_input(data, VOXEL, {"normalization": {"method": "clahe"}}, model)
    assert "model was trained with" in caplog.text


BAD_VALUES = {
    "one Inf voxel": (lambda s: np.where(np.arange(s.size).reshape(s.shape) == 5, np.inf, s), "contains NaN or Inf"),
    "one NaN voxel": (lambda s: np.where(np.arange(s.size).reshape(s.shape) == 5, np.nan, s), "contains NaN or Inf"),
    "constant stack": (lambda s: np.full_like(s, 7.0), "every voxel has the same value"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
@pytest.mark.parametrize("kind", ["tiff", "zarr"])
def test_bad_values_are_refused_naming_the_file(tmp_path, files, case, kind):
    """The same check and message as ingest, for a raw TIFF and for an OME-Zarr input alike."""
    make, expected = BAD_VALUES[case]
    volume = make(files["raw"].astype(np.float32)).astype(np.float32)
    if kind == "tiff":
        path = write_ome(tmp_path / "bad.ome.tif", volume, voxel_size=VOXEL.as_tuple())
    else:
        path = write_ome_zarr(volume, tmp_path / "bad.ome.zarr", VOXEL)
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(CycledeconError) as info:
        deconvolve_file(path, files["model"], out, TWO_BLOCKS, progress=False)
    assert str(info.value).startswith(f"{path}: {expected}")
    assert not out.exists()


def test_output_onto_the_model_keeps_it(tmp_path, files):
    model = tmp_path / "model.pt"
    model.write_bytes(files["model"].read_bytes())
    with pytest.raises(CycledeconError, match=f"^{model}: .*is an input of this command"):
        deconvolve_file(files["tiff"], model, model, TWO_BLOCKS, progress=False)
    assert sha256(model) == sha256(files["model"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_output_inside_the_input_store_is_refused(tmp_path, files):
    store = write_ome_zarr(files["raw"], tmp_path / "in.ome.zarr", VOXEL)
    before = sorted(p.name for p in store.iterdir())
    out = store / "deconvolved.ome.zarr"
    with pytest.raises(CycledeconError, match=f"^{out}: lies inside {store}, an input of this command"):
        deconvolve_file(store, files["model"], out, TWO_BLOCKS, progress=False)
    assert sorted(p.name for p in store.iterdir()) == before


# -------------------------------------------------------------------------------------- precision
def test_fp32_runs_the_network_exactly_as_before(volume):
    """fp32 is the arithmetic of the code before the precision policy: G on the plain float32
    batch, no autocast, weights in their default layout; bit for bit."""
    halo = halo_voxels(GENERATOR)
    block = np.pad(volume[:4, :8, :8], [(h, h) for h in halo], mode="reflect")
    predictor = BlockPredictor(tiny_generator(), torch.device("cpu"), "fp32")
    assert not predictor.precision.bf16
    with torch.inference_mode():
        before = tiny_generator()(torch.from_numpy(block)[None, None])[0, 0].numpy()
    (out,) = predictor([block])
    np.testing.assert_array_equal(out, before)


def test_bf16_puts_the_weights_channels_last_and_returns_float32(volume):
    halo = halo_voxels(GENERATOR)
    predictor = BlockPredictor(tiny_generator(), torch.device("cpu"), "bf16")
    convs = [m for m in predictor.generator.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last_3d) for c in convs)
    assert not convs[0].weight.is_contiguous()
    block = np.pad(volume[:4, :8, :8], [(h, h) for h in halo], mode="reflect")
    (out,) = predictor([block])
    assert out.dtype == np.float32 and out.shape == block.shape


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for a few dozen steps on test_train's synthetic store (blurred beads and
    filaments), and a fresh stack of the same kind scaled as its training data."""
    from cycledecon.psf.theory import gaussian_psf
    from cycledecon.train import train
    from test_train import sharp_volume, write_store

    root = tmp_path_factory.mktemp("trained")
    psf = gaussian_psf((3, 5, 5), (1.0, 1.0, 1.0))
    store = write_store(root / "patches.zarr", psf, seed=1, patch=(8, 16, 16), volumes=2, per_volume=3)
    config = deep_update(FREE_KERNEL_TRAIN, {
        "generator": {"depth": 2, "base_channels": 4}, "discriminator": {"base_channels": 2},
        "psf": {"shape_voxels": [3, 5, 5]}, "optim": {"steps": 40, "batch_size": 2},
        "log_every": 10, "val_every": 40, "checkpoint_every": 40, "device": "cpu"})  # fmt: skip
    model = train(store, root / "model", config)
    scale = load_model(model, "cpu")[1]["normalization"]["scale"]
    blurred = ndimage.convolve(sharp_volume(np.random.default_rng(5), (16, 48, 48)), psf, mode="reflect")
    return model, (blurred / scale).astype(np.float32)


def trained_output(model, stack: np.ndarray, precision: str) -> np.ndarray:
    generator, metadata = load_model(model, "cpu")
    assert metadata["steps"] == 40
    predictor = BlockPredictor(generator, torch.device("cpu"), precision)
    halo = halo_voxels(metadata["generator"])
    out = deconvolve_lazy(da.from_array(stack, chunks=(8, 16, 16)), predictor, (16, 32, 32), 1, halo, halo)
    with dask.config.set(scheduler="synchronous"):
        return out.compute()


def test_bf16_output_of_a_trained_model_stays_close_to_fp32(trained):
    """bf16 keeps 8 significant bits: each rounding of an activation or weight is off by up to
    2**-9 (spacing 2**-8 ≈ 0.4 %) of its value, and G's dozen convolutions (fp32 accumulation)
    compound a few of those. Bound: the largest difference within 2 % of the fp32 output's
    dynamic range (≈ 5 bf16 spacings), the mean within 0.5 %; far below G's own change of the
    stack, and a real failure (wrong layout, a layer left in bf16 output) is far above it."""
    model, stack = trained
    fp32, bf16 = trained_output(model, stack, "fp32"), trained_output(model, stack, "bf16")
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape == stack.shape
    span = float(fp32.max() - fp32.min())
    difference = np.abs(bf16 - fp32)
    assert 0 < difference.max() <= 0.02 * span, (difference.max() / span)
    assert difference.mean() <= 0.005 * span, (difference.mean() / span)
    assert np.abs(fp32 - stack).max() > 0.1 * span  # G does change the stack: the bound means something

"""Where the networks run: the device each choice picks on each kind of machine, and the precision
policy (each choice on the CPU, ``auto`` following the hardware, bad choices)."""

from __future__ import annotations

import pytest
import torch

import cycledecon.precision as precision
from cycledecon.config.devices import PRECISIONS
from cycledecon.errors import CycledeconError
from cycledecon.model.float32 import run_in_float32
from cycledecon.precision import Precision, resolve_device, resolve_precision

CPU = torch.device("cpu")


def machine(monkeypatch, *present: str) -> None:
    """Make torch see exactly the accelerators in `present` ("cuda", "mps")."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: "cuda" in present)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: "mps" in present)


@pytest.mark.parametrize(
    ("present", "device"), [(("cuda", "mps"), "cuda"), (("cuda",), "cuda"), (("mps",), "mps"), ((), "cpu")]
)
def test_auto_takes_cuda_then_mps_then_the_cpu(monkeypatch, present, device):
    machine(monkeypatch, *present)
    assert resolve_device("auto") == torch.device(device)


@pytest.mark.parametrize("choice", ["cuda", "mps", "cpu"])
def test_an_available_device_is_taken_as_asked(monkeypatch, choice):
    machine(monkeypatch, "cuda", "mps")
    assert resolve_device(choice) == torch.device(choice)


@pytest.mark.parametrize("choice", ["cuda", "mps"])
def test_a_missing_device_is_a_user_error_naming_the_setting(monkeypatch, choice):
    machine(monkeypatch)
    with pytest.raises(CycledeconError, match=f"^deconvolve.device: {choice} is not available on this machine"):
        resolve_device(choice, "deconvolve.device")
    assert resolve_device("cpu", "deconvolve.device") == CPU


@pytest.mark.parametrize("choice", ["gpu", "cuda:0", "CPU", ""])
def test_a_bad_device_names_the_valid_ones(choice):
    with pytest.raises(ValueError, match="train.device must be one of auto, cuda, mps, cpu"):
        resolve_device(choice, "train.device")


@pytest.mark.parametrize(("choice", "bf16"), [("bf16", True), ("fp32", False)])
def test_forced_choices_ignore_the_hardware(monkeypatch, choice, bf16):
    for native in (True, False):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        resolved = resolve_precision(choice, CPU)
        assert resolved == Precision(bf16=bf16) and resolved.name == choice


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_the_cpu_follows_native_bf16(monkeypatch, native):
    # cpu_has_native_bf16 is functools.cache'd: patch the name resolve_precision looks up
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", CPU).bf16 is native
    assert resolve_precision("auto", CPU).name == ("bf16" if native else "fp32")


@pytest.mark.parametrize("supported", [True, False])
def test_auto_on_cuda_follows_the_gpu(monkeypatch, supported):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: not supported)  # not consulted
    assert resolve_precision("auto", torch.device("cuda")).bf16 is supported


def test_auto_on_mps_stays_in_float32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)  # the host CPU does not decide
    assert not resolve_precision("auto", torch.device("mps")).bf16
    assert resolve_precision("bf16", torch.device("mps")).bf16


@pytest.mark.parametrize("choice", ["float32", "bfloat16", "float16", "AUTO", ""])
def test_a_bad_choice_names_the_valid_ones(choice):
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32"):
        resolve_precision(choice, CPU)


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 amx_bf16 amx_tile\n", True),
        ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\nbugs\t\t: bf16\n", False),
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, tmp_path, cpuinfo, native):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(precision, "Path", lambda path: tmp_path / "cpuinfo")
    assert precision.cpu_has_native_bf16.__wrapped__() is native  # uncached


def test_bf16_autocasts_and_lays_out_channels_last():
    conv = torch.nn.Conv3d(2, 3, 3)
    policy = Precision(bf16=True)
    assert policy.prepare(conv) is conv and conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    batch = policy.layout(torch.rand(2, 2, 4, 5, 6))
    assert batch.is_contiguous(memory_format=torch.channels_last_3d) and not batch.is_contiguous()
    with policy.autocast(CPU):
        assert conv(batch).dtype == torch.bfloat16


def test_fp32_changes_nothing():
    conv = torch.nn.Conv3d(2, 3, 3)
    policy = Precision(bf16=False)
    assert policy.prepare(conv) is conv and conv.weight.is_contiguous()
    batch = torch.rand(2, 2, 4, 5, 6)
    assert policy.layout(batch) is batch
    with policy.autocast(CPU):
        assert conv(batch).dtype == torch.float32
    assert PRECISIONS == ("auto", "bf16", "fp32")


def test_float32_parts_run_in_float32_only_while_gradients_are_computed():
    """run_in_float32 guards bf16 backward passes; inference keeps bf16 (and its fast kernels)."""
    conv = torch.nn.Conv3d(2, 3, 3)
    batch = torch.rand(1, 2, 4, 5, 6)
    with Precision(bf16=True).autocast(CPU):
        assert run_in_float32(conv, batch).dtype == torch.float32
        with torch.inference_mode():
            assert run_in_float32(conv, batch).dtype == torch.bfloat16
    assert run_in_float32(conv, batch).dtype == torch.float32  # no autocast: as it comes

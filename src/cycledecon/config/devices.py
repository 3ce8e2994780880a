"""The device and precision choices that training and deconvolution share (cycledecon.precision
applies them); here, without torch, so the config and the CLI can check them."""

from __future__ import annotations

from typing import Literal, get_args

Device = Literal["auto", "cuda", "mps", "cpu"]  # auto takes the first of the others that is available
DEVICES: tuple[str, ...] = get_args(Device)
PrecisionChoice = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionChoice)

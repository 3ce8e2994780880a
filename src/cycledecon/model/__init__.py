"""The cycle-consistent deconvolution model: generator, PSF layer, discriminators, model files."""

from cycledecon.model.checkpoint import load_model, save_model
from cycledecon.model.config import GeneratorConfig, TrainConfig, parse_config
from cycledecon.model.cyclegan import CycleModel, build_model
from cycledecon.model.psf_layer import PsfLayer, fft_convolve, kernel_ncc
from cycledecon.model.unet import UNet3d, receptive_field

__all__ = [
    "CycleModel", "GeneratorConfig", "PsfLayer", "TrainConfig", "UNet3d", "build_model",
    "fft_convolve", "kernel_ncc", "load_model", "parse_config", "receptive_field", "save_model",
]

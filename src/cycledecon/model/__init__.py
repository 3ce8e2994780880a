"""The cycle-consistent deconvolution model: generator, PSF layer, discriminators, model files."""

from cycledecon.model.checkpoint import load_model, save_model
from cycledecon.model.cyclegan import CycleModel, build_model
from cycledecon.model.psf_layer import PsfLayer, fft_convolve
from cycledecon.model.unet import UNet3d, receptive_field

__all__ = ["CycleModel", "PsfLayer", "UNet3d", "build_model", "fft_convolve", "load_model", "receptive_field", "save_model"]

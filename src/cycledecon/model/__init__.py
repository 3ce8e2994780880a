"""The cycle-consistent deconvolution model: generator, discriminators, the cycle, model files
(the PSF layer H is cycledecon.psf.layer)."""

from cycledecon.model.checkpoint import load_model, save_model
from cycledecon.model.cyclegan import CycleModel, build_model
from cycledecon.model.unet import UNet3d, receptive_field

__all__ = ["CycleModel", "UNet3d", "build_model", "load_model", "receptive_field", "save_model"]

"""cycledecon: blind deconvolution of 3D widefield stacks with a cycle-consistent CNN and a learnable PSF."""

__version__ = "0.1.0"

"""cycledecon: blind deconvolution of 3D widefield stacks with a cycle-consistent CNN and a learnable PSF."""

from cycledecon.host_memory import use_huge_pages_for_tensors

__version__ = "0.1.0"

use_huge_pages_for_tensors()  # before torch's first large tensor: it reads the switch once

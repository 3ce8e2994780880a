"""PSF modelling: the theoretical widefield PSF (`theory`), the kernel's extent and start for
training (`kernel`), and the learnable PSF that is the forward operator H (`pupil`, `layer`).

Import the submodules themselves: `theory` and `kernel` need no torch (light modules use them),
`pupil` and `layer` do.
"""

"""The forward operator H: convolution of a volume with one learnable, normalized 3D PSF.

The kernel is either free (softmax(logits): non-negative and unit sum after any optimizer step, a
blur conserves intensity) or a physical pupil model (cycledecon.psf.pupil), which holds a whole
widefield PSF with a few parameters. Convolution is done by FFT.

Two boundary models: with a *context margin* (sharp patches cropped larger than the patch by at
least the kernel radius) H keeps only the centre, where every voxel has received all the light the
kernel spreads into it — the light from outside the patch enters as in the microscope. Without one
(margin 0), the volume is reflect-padded by the kernel radius, which is only sound for kernels
much smaller than the patch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cycledecon.psf.pupil import PupilPsf

SPATIAL = (-3, -2, -1)
MIN_SIGNAL_SHARE = 0.1  # of the widefield variance, after the noise is taken out (match_intensity)
Margin = tuple[int, int, int]
NO_MARGIN: Margin = (0, 0, 0)


def fft_convolve(volume: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """True (flipped) convolution of (..., z, y, x) volumes with an odd (z, y, x) kernel, same size.

    The volume is reflect-padded by the kernel radius, so each padded axis must be shorter than
    twice the volume; computed in float32 whatever the autocast state (cuFFT has no bf16 path).
    """
    with torch.autocast(volume.device.type, enabled=False):
        volume, kernel = volume.float(), kernel.float()
        radius = [s // 2 for s in kernel.shape]
        pad = (radius[2], radius[2], radius[1], radius[1], radius[0], radius[0])
        padded = F.pad(volume, pad, mode="reflect")
        size = padded.shape[-3:]
        embedded = F.pad(kernel, (0, size[2] - kernel.shape[2], 0, size[1] - kernel.shape[1],
                                  0, size[0] - kernel.shape[0]))
        centred = torch.roll(embedded, shifts=[-r for r in radius], dims=SPATIAL)
        spectrum = torch.fft.rfftn(padded, dim=SPATIAL) * torch.fft.rfftn(centred, dim=SPATIAL)
        window = tuple(slice(r, r + n) for r, n in zip(radius, volume.shape[-3:]))
        return _irfftn_window(spectrum, tuple(size), window)


def fft_convolve_valid(volume: torch.Tensor, kernel: torch.Tensor, margin: Margin,
                       centre: torch.Tensor | None = None) -> torch.Tensor:
    """Convolution of (..., z, y, x) volumes with an odd kernel, returning only the centre: the
    volume less `margin` voxels on each side, each at least the kernel's radius there.

    A circular FFT convolution of the volume's own size is exact on that centre (overlap-save), so
    nothing is padded; float32 (or float64) whatever the autocast state. With `centre`, the volumes'
    middles are replaced by it first (`with_centre`); the volumes' gradient then leaves that middle
    out, and `centre`'s is transformed back on its own window only.
    """
    _check_room(kernel, margin)
    return _ValidFftConvolution.apply(volume, None, kernel, tuple(volume.shape[-3:]), tuple(margin), centre)


def convolve_spectrum_valid(spectrum: torch.Tensor, size: tuple[int, int, int], kernel: torch.Tensor,
                            margin: Margin) -> torch.Tensor:
    """`fft_convolve_valid` of fixed volumes of spatial `size` given by their rfftn `spectrum`, so
    they are transformed once for every kernel they meet (no gradient flows to them)."""
    _check_room(kernel, margin)
    return _ValidFftConvolution.apply(None, spectrum, kernel, tuple(size), tuple(margin), None)


def with_centre(volume: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """A copy of (..., z, y, x) `volume` whose middle, of `centre`'s spatial size, holds `centre`."""
    combined = volume.clone()
    combined[(..., *_middle(volume.shape[-3:], centre.shape[-3:]))] = centre
    return combined


def _middle(size: tuple[int, ...], inner: tuple[int, ...]) -> tuple[slice, slice, slice]:
    return tuple(slice((n - c) // 2, (n - c) // 2 + c) for n, c in zip(size, inner))


def _check_room(kernel: torch.Tensor, margin: Margin) -> None:
    radius = [s // 2 for s in kernel.shape]
    if any(r > m for r, m in zip(radius, margin)):
        raise ValueError(f"kernel radius {tuple(radius)} exceeds the context margin {tuple(margin)}")


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def _irfftn_window(spectrum: torch.Tensor, size: tuple[int, int, int],
                   window: tuple[slice, slice, slice]) -> torch.Tensor:
    """irfftn over the last three axes (real `size`), computed only on `window`: each axis is
    transformed back once the axes before it were cut to the window, so discarded rows cost nothing."""
    partial = torch.fft.ifft(spectrum, dim=-3)[..., window[0], :, :]
    partial = torch.fft.ifft(partial, dim=-2)[..., window[1], :]
    return torch.fft.irfft(partial, n=size[2], dim=-1)[..., window[2]]


class _ValidFftConvolution(torch.autograd.Function):
    """The valid FFT convolution with its gradients written out as FFT correlations.

    Forward: the kernel, zero-padded to the volume's size, and the volume are multiplied as rfftn
    spectra and transformed back; the centred output at position p is the circular convolution's
    sample p + radius, exact on the centre, and only that window is transformed back. Backward, with
    g the output's gradient placed in that window: the volume's gradient is g correlated with the
    kernel, the kernel's is g correlated with the volume (summed over the batch, transformed back on
    the kernel's support only), both one rfftn of g and one irfftn each. Autograd's own backward of
    rfftn takes a full complex transform plus copies, for the same result.
    """

    @staticmethod
    def forward(ctx, volume: torch.Tensor | None, spectrum: torch.Tensor | None, kernel: torch.Tensor,
                size: tuple[int, int, int], margin: Margin, centre: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast(kernel.device.type, enabled=False):
            if spectrum is None:
                if centre is not None:
                    volume = with_centre(_at_least_float32(volume), _at_least_float32(centre))
                spectrum = torch.fft.rfftn(_at_least_float32(volume), dim=SPATIAL)
            kernel_spectrum = torch.fft.rfftn(_at_least_float32(kernel), s=size, dim=SPATIAL)
            window = tuple(slice(m + k // 2, n - m + k // 2) for n, m, k in zip(size, margin, kernel.shape))
            out = _irfftn_window(spectrum * kernel_spectrum, size, window)
        ctx.save_for_backward(spectrum, kernel_spectrum)
        ctx.size, ctx.window, ctx.kernel_shape = size, window, tuple(kernel.shape)
        ctx.volume_dtype, ctx.kernel_dtype = None if volume is None else volume.dtype, kernel.dtype
        ctx.centre_window = None if centre is None else _middle(size, centre.shape[-3:])
        ctx.centre_dtype = None if centre is None else centre.dtype
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        spectrum, kernel_spectrum = ctx.saved_tensors
        grad_volume = grad_kernel = grad_centre = None
        with torch.autocast(grad_out.device.type, enabled=False):
            grad_out = grad_out.to(kernel_spectrum.real.dtype)
            placed = grad_out.new_zeros((*grad_out.shape[:-3], *ctx.size))
            placed[(..., *ctx.window)] = grad_out
            grad_spectrum = torch.fft.rfftn(placed, dim=SPATIAL)
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[5]:
                correlated = grad_spectrum * kernel_spectrum.conj()
            if ctx.needs_input_grad[0]:
                grad_volume = torch.fft.irfftn(correlated, s=ctx.size, dim=SPATIAL)
                if ctx.centre_window is not None:
                    grad_volume[(..., *ctx.centre_window)] = 0  # replaced by the centre
                grad_volume = grad_volume.to(ctx.volume_dtype)
            if ctx.needs_input_grad[5]:
                grad_centre = _irfftn_window(correlated, ctx.size, ctx.centre_window).to(ctx.centre_dtype)
            if ctx.needs_input_grad[2]:
                batch_dims = tuple(range(grad_spectrum.dim() - 3))
                summed = (grad_spectrum * spectrum.conj()).sum(dim=batch_dims)
                kernel_window = tuple(slice(0, k) for k in ctx.kernel_shape)
                grad_kernel = _irfftn_window(summed, ctx.size, kernel_window).to(ctx.kernel_dtype)
        return grad_volume, None, grad_kernel, None, None, grad_centre


def crop_margin(volume: torch.Tensor, margin: Margin) -> torch.Tensor:
    """The centre of (..., z, y, x) volumes without `margin` voxels on each side."""
    return volume[..., margin[0] : volume.shape[-3] - margin[0], margin[1] : volume.shape[-2] - margin[1],
                  margin[2] : volume.shape[-1] - margin[2]]


def convolve(volume: torch.Tensor, kernel: torch.Tensor, margin: Margin,
             centre: torch.Tensor | None = None) -> torch.Tensor:
    """Valid convolution cropped by `margin` when there is one, else the reflect-padded one; with
    `centre`, of the volumes whose middles it replaces (see fft_convolve_valid)."""
    if any(margin):
        return fft_convolve_valid(volume, kernel, margin, centre)
    return fft_convolve(volume if centre is None else with_centre(volume, centre), kernel)


class PsfLayer(nn.Module):
    """H(x) = gain · (x ⊛ h) + offset with h a free kernel or a pupil model's PSF.

    gain and offset map the sharp domain's intensity units to the widefield domain's: the two are
    normalized separately (each stack to its own percentiles), and blurring a sparse sharp stack
    lowers its peaks many times. They are not learned but follow the kernel in closed form (after
    `match_intensity`): with a fixed sample x_ref of sharp training patches and the widefield
    patches' mean μ and signal standard deviation σ (their noise taken out), gain = σ / std(h ⊛
    x_ref) and offset = μ − gain · mean(h ⊛ x_ref). Intensity then carries no information about h,
    and the discriminator must judge the blur's shape; a learned gain coupled to the kernel's width
    instead (see the project notes).

    A free kernel can start in a *Gaussian phase*: h is an anisotropic Gaussian with three
    learnable widths (started at the initial kernel's second moments) until `release()` turns it
    into free logits, so the widths are found first and the shape afterwards.

    Parameters
    ----------
    initial : odd (z, y, x) non-negative kernel to start from (normalized here); ignored with a pupil.
    learnable : false freezes h (non-blind deconvolution with a known PSF).
    symmetric : average a free h with its x, y and xy mirror images (still non-negative, unit sum).
    gaussian_phase : start a free kernel in the Gaussian phase (only when learnable).
    pupil : a PupilPsf that is h (its parameters are learned unless `learnable` is false).
    """

    def __init__(self, initial: np.ndarray, learnable: bool = True, symmetric: bool = True,
                 gaussian_phase: bool = False, pupil: PupilPsf | None = None) -> None:
        super().__init__()
        self.pupil = pupil.requires_grad_(learnable) if pupil is not None else None
        free = learnable and pupil is None
        if pupil is not None:
            initial = pupil.numpy()
        start = torch.as_tensor(np.asarray(initial, dtype=np.float32))
        start = start.clamp_min(0) / start.clamp_min(0).sum()
        self.logits = nn.Parameter(torch.log(start.clamp_min(1e-12)), requires_grad=free)
        self.log_sigma = nn.Parameter(torch.log(_second_moments(start)), requires_grad=free)
        self.register_buffer("gaussian_phase", torch.tensor(gaussian_phase and free))
        self.symmetric = symmetric and free
        self.learnable = learnable
        self.register_buffer("ema_kernel", self.kernel().detach().clone())
        self.register_buffer("sharp_reference", None)
        # with a context margin, the reference's spectrum: it is convolved with every step's kernel
        self.register_buffer("reference_spectrum", None, persistent=False)
        self.register_buffer("blurred_moments", None)
        self.reference_margin: Margin = NO_MARGIN

    def kernel(self) -> torch.Tensor:
        """The current PSF, (z, y, x), non-negative, unit sum."""
        if self.pupil is not None:
            return self.pupil()
        if self.gaussian_phase:
            return self._gaussian()
        h = torch.softmax(self.logits.flatten(), dim=0).view(self.logits.shape)
        if self.symmetric:  # one axis at a time: a + b == b + a makes each mirror exact in float
            h = (h + h.flip(-1)) / 2
            h = (h + h.flip(-2)) / 2
        return h

    def free_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(widths and pupil parameters, free logits) that an optimizer should update."""
        if self.pupil is not None:
            return [p for p in self.pupil.parameters() if p.requires_grad], []
        return ([self.log_sigma] if self.log_sigma.requires_grad else [],
                [self.logits] if self.logits.requires_grad else [])

    def _gaussian(self) -> torch.Tensor:
        r2 = sum((c / s) ** 2 for c, s in zip(_centred_grids(self.logits), self.log_sigma.exp()))
        h = torch.exp(-0.5 * r2)
        return h / h.sum()

    @torch.no_grad()
    def release(self) -> None:
        """End the Gaussian phase: the free logits take over from the current Gaussian."""
        if self.gaussian_phase:
            self.logits.copy_(torch.log(self._gaussian().clamp_min(1e-12)))
            self.gaussian_phase.fill_(False)

    def forward(self, volume: torch.Tensor, margin: Margin = NO_MARGIN,
                centre: torch.Tensor | None = None) -> torch.Tensor:
        """H of (n, 1, z, y, x) volumes, with their middles replaced by `centre` when given; with a
        margin, only their centre (see the module doc)."""
        kernel = self.kernel()
        gain, offset = self.intensity(kernel)
        return gain * convolve(volume, kernel, margin, centre) + offset

    def intensity(self, kernel: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain, offset) for `kernel` (default: the current one); (1, 0) before `match_intensity`."""
        if self.sharp_reference is None:
            return self.logits.new_ones(()), self.logits.new_zeros(())
        kernel = self.kernel() if kernel is None else kernel
        if self.reference_spectrum is not None:
            size = tuple(self.sharp_reference.shape[-3:])
            reference = convolve_spectrum_valid(self.reference_spectrum, size, kernel, self.reference_margin)
        else:
            reference = convolve(self.sharp_reference, kernel, self.reference_margin)
        mean, std = self.blurred_moments
        gain = std / reference.std().clamp_min(1e-12)
        return gain, mean - gain * reference.mean()

    @torch.no_grad()
    def match_intensity(self, sharp: torch.Tensor, blurred: torch.Tensor, noise_variance: float = 0.0,
                        reference_size: int = 8, margin: Margin = NO_MARGIN) -> None:
        """Tie H's output units to the widefield domain: keep `reference_size` evenly spaced sharp
        patches (n, 1, z, y, x; with their context `margin`) and the mean and signal standard
        deviation of all blurred ones, on H's device (the patch sets themselves can stay where they
        are).

        The blurred patches' variance includes their noise (`noise_variance`, their mean noise
        variance), which H(x) gets separately from the noise model: matched to the total, H(x) would get
        too much contrast wherever noise is a sizeable share of the variance, and G would learn on
        inputs less noisy, relative to their signal, than the real ones. The signal keeps at least
        MIN_SIGNAL_SHARE of the variance, so that H(x) of stacks that are nearly all noise still has
        contrast."""
        index = torch.linspace(0, len(sharp) - 1, min(reference_size, len(sharp))).round().long()
        device = self.logits.device
        variance = float(blurred.var())
        signal_std = max(variance - noise_variance, MIN_SIGNAL_SHARE * variance) ** 0.5
        self.sharp_reference = sharp[index].to(device, torch.float32)
        self.reference_margin = tuple(margin)
        self.reference_spectrum = torch.fft.rfftn(self.sharp_reference, dim=SPATIAL) if any(margin) else None
        self.blurred_moments = torch.tensor([float(blurred.mean()), signal_std], device=device)

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """Fold the current kernel into the moving average that is saved and evaluated."""
        self.ema_kernel.mul_(decay).add_(self.kernel(), alpha=1 - decay)

    def center_penalty(self) -> torch.Tensor:
        """Squared offset of the kernel's centre of mass from the central voxel, in kernel radii.

        Blind deconvolution cannot tell a shifted PSF from a shifted object; pinning the centre
        removes that ambiguity (G would otherwise learn a compensating shift).
        """
        h = self.kernel()
        penalty = h.new_zeros(())
        for axis, n in zip(SPATIAL, h.shape):
            coords = torch.arange(n, device=h.device, dtype=h.dtype) - n // 2
            marginal = h.sum(dim=[a for a in SPATIAL if a != axis])
            penalty = penalty + (marginal @ coords / max(n // 2, 1)) ** 2
        return penalty

    def smooth_penalty(self) -> torch.Tensor:
        """Relative roughness: squared neighbour differences over the squared kernel (scale-free)."""
        h = self.kernel()
        rough = sum((h.diff(dim=axis) ** 2).sum() for axis in SPATIAL)
        return rough / (h**2).sum()


def _centred_grids(like: torch.Tensor) -> list[torch.Tensor]:
    """Voxel offsets from the centre along z, y and x, broadcastable to `like`'s shape."""
    grids = []
    for axis, n in enumerate(like.shape):
        shape = [1, 1, 1]
        shape[axis] = n
        grids.append((torch.arange(n, device=like.device, dtype=like.dtype) - n // 2).view(shape))
    return grids


def _second_moments(kernel: torch.Tensor) -> torch.Tensor:
    """RMS width (voxels) of a centred kernel along z, y, x; at least 0.3 so log() stays finite."""
    widths = [((kernel * g**2).sum() / kernel.sum()).sqrt() for g in _centred_grids(kernel)]
    return torch.stack(widths).clamp_min(0.3)

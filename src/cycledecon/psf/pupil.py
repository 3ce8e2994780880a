"""A learnable widefield PSF from a physical pupil: the vectorial Debye (Richards–Wolf) model.

Image formation: an unpolarized emitter on the optical axis, seen through an aplanatic objective of
numerical aperture NA in a medium of index n, gives at lateral distance r and defocus z

    PSF(z, r) ∝ |I₀|² + 2·|I₁|² + |I₂|²,
    I₀ = ∫₀^α √cos θ · sin θ · (1 + cos θ) · J₀(k r sin θ) · e^{i(k z cos θ + Φ(θ))} dθ,
    I₁ = ∫₀^α √cos θ · sin² θ · J₁(k r sin θ) · e^{i(…)} dθ,
    I₂ = ∫₀^α √cos θ · sin θ · (1 − cos θ) · J₂(k r sin θ) · e^{i(…)} dθ,

with k = 2πn/λ, sin α = NA/n and Φ(θ) = Σⱼ cⱼ·Zⱼ(sin θ / sin α) a rotationally symmetric pupil
phase (Zernike spherical terms, Noll 11, 22, 37: what a refractive-index mismatch or a coverslip
error adds). The kernel is that PSF on the (z, y, x) voxel grid, normalized to unit sum over its
box: it holds the whole out-of-focus cone, is non-negative and band-limited by construction, and
depends on a handful of numbers — the spherical coefficients (radians) and the effective NA, which
may fall below the objective's nominal NA (an underfilled pupil) but never exceed it (`project`) —
so it stays identifiable at any box size. The box is centred on the nominal
focus, which the model keeps fixed (defocus is not learned).

The integrals are evaluated by the trapezoid rule on a fine θ grid and a radial grid, then
interpolated onto the voxel grid; the NA enters through a soft aperture so it has a gradient.
Written out here because the libraries that compute this model (psfmodels) are not differentiable.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from cycledecon.psf.theory import check_odd_shape

SPHERICAL_NOLL = (11, 22, 37)  # rotationally symmetric Zernike terms, radial orders 4, 6, 8
THETA_SAMPLES = 256
RADIAL_OVERSAMPLING = 4  # radial grid step: the finer lateral voxel size over this
APERTURE_EDGE = 2e-3  # width of the soft aperture, in sin θ


def spherical_zernike(order: int, rho: torch.Tensor) -> torch.Tensor:
    """Noll-normalized rotationally symmetric Zernike polynomial Z_n^0 (n even) on [0, 1]."""
    total = torch.zeros_like(rho)
    for s in range(order // 2 + 1):
        coefficient = ((-1) ** s * math.factorial(order - s)
                       / (math.factorial(s) * math.factorial(order // 2 - s) ** 2))
        total = total + coefficient * rho ** (order - 2 * s)
    return math.sqrt(order + 1) * total


class PupilPsf(nn.Module):
    """Widefield PSF of one objective on an odd (z, y, x) box, differentiable in its pupil.

    Parameters
    ----------
    shape : odd (z, y, x) kernel size in voxels.
    voxel_size_um : (z, y, x) voxel size in µm.
    na, wavelength_nm, immersion_ri : the objective's nominal optics (the sample sheet's); the
        effective NA starts at the nominal one.
    spherical_terms : how many of SPHERICAL_NOLL are learned (0: only the NA).
    """

    def __init__(self, shape: tuple[int, int, int], voxel_size_um: tuple[float, float, float],
                 na: float, wavelength_nm: float, immersion_ri: float, spherical_terms: int = 2) -> None:
        super().__init__()
        check_odd_shape(shape)
        if not 0 < na < immersion_ri:
            raise ValueError(f"NA {na} must lie between 0 and the immersion index {immersion_ri}")
        if not 0 <= spherical_terms <= len(SPHERICAL_NOLL):
            raise ValueError(f"spherical_terms must be 0–{len(SPHERICAL_NOLL)}, got {spherical_terms}")
        self.shape = tuple(int(s) for s in shape)
        self.na, self.ri = float(na), float(immersion_ri)
        wavelength_um = wavelength_nm / 1000.0
        self.wavenumber = 2 * math.pi * self.ri / wavelength_um
        dz, dy, dx = (float(v) for v in voxel_size_um)
        theta = torch.linspace(0.0, math.asin(self.na / self.ri), THETA_SAMPLES, dtype=torch.float64)
        z = (torch.arange(self.shape[0], dtype=torch.float64) - self.shape[0] // 2) * dz
        y = (torch.arange(self.shape[1], dtype=torch.float64) - self.shape[1] // 2) * dy
        x = (torch.arange(self.shape[2], dtype=torch.float64) - self.shape[2] // 2) * dx
        r_voxels = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
        step = min(dy, dx) / RADIAL_OVERSAMPLING
        radii = torch.arange(0.0, float(r_voxels.max()) + 2 * step, step, dtype=torch.float64)
        self.register_buffer("theta", theta, persistent=False)
        self.register_buffer("z_um", z, persistent=False)
        self.register_buffer("bessel", self._bessel_terms(theta, radii).float(), persistent=False)
        # linear interpolation of the radial profile onto the voxel grid: index and weight
        position = r_voxels / step
        self.register_buffer("radial_index", position.floor().long(), persistent=False)
        self.register_buffer("radial_weight", position - position.floor(), persistent=False)
        self.spherical = nn.Parameter(torch.zeros(spherical_terms, dtype=torch.float32))
        self.log_na_scale = nn.Parameter(torch.zeros((), dtype=torch.float32))

    def _bessel_terms(self, theta: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        """(3, r, θ) integrands of I₀, I₁, I₂ without the pupil phase, times the trapezoid weights."""
        sin, cos = torch.sin(theta), torch.cos(theta)
        argument = self.wavenumber * radii[:, None] * sin[None, :]
        j0, j1 = torch.special.bessel_j0(argument), torch.special.bessel_j1(argument)
        safe = torch.where(argument > 1e-8, argument, torch.ones_like(argument))
        j2 = torch.where(argument > 1e-8, 2 * j1 / safe - j0, torch.zeros_like(argument))
        root = torch.sqrt(cos)
        weights = torch.full_like(theta, float(theta[1] - theta[0]))
        weights[0] = weights[-1] = weights[0] / 2
        terms = [root * sin * (1 + cos) * j0, root * sin**2 * j1, root * sin * (1 - cos) * j2]
        return torch.stack(terms) * weights

    def effective_na(self) -> torch.Tensor:
        """The current NA: the nominal one × exp(log_na_scale), log_na_scale ≤ 0 (see `project`)."""
        return self.na * self.log_na_scale.double().exp()

    @torch.no_grad()
    def project(self) -> None:
        """Keep the effective NA at or below the nominal one after an optimizer step: a lens passes
        no more than its aperture, and a blind fit that may widen the pupil drifts to the
        narrowest PSF the cycle losses prefer."""
        self.log_na_scale.clamp_(max=0.0)

    def pupil(self) -> torch.Tensor:
        """Complex pupil over θ: soft aperture at the effective NA times e^{iΦ(θ)}, (θ,)."""
        sin_alpha = self.effective_na() / self.ri
        sin = torch.sin(self.theta)
        aperture = torch.sigmoid((sin_alpha - sin) / APERTURE_EDGE)
        rho = torch.clamp(sin / sin_alpha, max=1.0)
        phase = torch.zeros_like(rho)
        for coefficient, noll in zip(self.spherical.double(), SPHERICAL_NOLL):
            phase = phase + coefficient * spherical_zernike(_radial_order(noll), rho)
        return aperture * torch.exp(1j * phase)

    def radial_profile(self) -> torch.Tensor:
        """PSF(z, r) on the radial grid, (z, r), unnormalized."""
        defocus = torch.exp(1j * self.wavenumber * self.z_um[:, None] * torch.cos(self.theta)[None, :])
        spectrum = (defocus * self.pupil()[None, :]).to(torch.complex64)  # (z, θ); phases in float64
        integrals = torch.einsum("krt,zt->kzr", self.bessel.to(spectrum.dtype), spectrum)
        power = integrals.real**2 + integrals.imag**2
        return power[0] + 2 * power[1] + power[2]

    def forward(self) -> torch.Tensor:
        """The PSF (z, y, x), float32, non-negative, unit sum over the box."""
        profile = self.radial_profile()
        low = profile[:, self.radial_index]
        high = profile[:, self.radial_index + 1]
        kernel = low + (high - low) * self.radial_weight
        return (kernel / kernel.sum()).float()

    @torch.no_grad()
    def summary(self) -> dict[str, float | list[float]]:
        """The learned optics, for model.pt and the report: effective and nominal NA, and the
        spherical Zernike coefficients (radians) with their Noll indices."""
        return {"effective_na": float(self.effective_na()), "nominal_na": self.na,
                "spherical_noll": list(SPHERICAL_NOLL[: len(self.spherical)]),
                "spherical_rad": [float(c) for c in self.spherical]}

    @torch.no_grad()
    def numpy(self) -> np.ndarray:
        """The current PSF as a float32 array."""
        return self().cpu().numpy()


def _radial_order(noll: int) -> int:
    """Radial order n of a rotationally symmetric Noll index (11 → 4, 22 → 6, 37 → 8)."""
    return int(math.floor(math.sqrt(2 * noll - 1) + 0.5)) - 1

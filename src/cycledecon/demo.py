"""The synthetic imaging campaign that `make demo`, the tests and the benchmarks run on.

Image formation, stated once:

* the *sharp* domain is a phantom seen at the resolution of a much better instrument: the phantom
  convolved with a narrow Gaussian (`sharp_sigma_um`); it is what reference stacks show and what the
  ground truth of a widefield stack is;
* a *widefield* stack is the phantom convolved with the theoretical widefield PSF (psfmodels), scaled
  so its brightest voxel expects `peak_photons` photo-electrons, with Poisson shot noise, Gaussian read
  noise (`read_noise_e`, electrons rms) and a camera offset (`offset_adu`), digitised to uint16 with
  one ADU per electron.

Reference stacks are drawn from *different* random phantoms than any widefield stack: training is
unpaired, and the demo must not leak the answer.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np
from scipy import ndimage, signal

from cycledecon.config.demo import DemoSettings
from cycledecon.io import write_ome_tiff
from cycledecon.phantoms import mixed_phantom
from cycledecon.psf.theory import widefield_psf


def sample_rng(seed: int, sample: str) -> np.random.Generator:
    """A generator seeded by the campaign seed and the sample's name: stable, independent streams."""
    return np.random.default_rng([seed, zlib.crc32(sample.encode())])


def true_psf(settings: DemoSettings) -> np.ndarray:
    """The widefield PSF the demo images are formed with (unit sum)."""
    o = settings.optics
    return widefield_psf(
        settings.psf_shape, settings.voxel_size, o.na, o.wavelength_nm, o.immersion_ri,
        sample_ri=o.sample_ri, depth_um=o.depth_um,
    )  # fmt: skip


def _phantom_with_margin(settings: DemoSettings, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
    """A phantom larger than the stack by the PSF's half-size, so out-of-view objects blur in."""
    margin = tuple(p // 2 for p in settings.psf_shape)
    padded = tuple(n + 2 * m for n, m in zip(settings.shape, margin))
    crop = tuple(slice(m, m + n) for m, n in zip(margin, settings.shape))
    return mixed_phantom(padded, settings.voxel_size, rng, dataclasses.asdict(settings.structures)), crop


def _sharp(phantom: np.ndarray, settings: DemoSettings) -> np.ndarray:
    sigma = [s / v for s, v in zip(settings.sharp_sigma_um, settings.voxel_size_um)]
    return ndimage.gaussian_filter(phantom, sigma).astype(np.float32)


def _camera(expected_electrons: np.ndarray, settings: DemoSettings, rng: np.random.Generator) -> np.ndarray:
    """Shot noise, read noise and offset, digitised to uint16 (1 ADU per electron)."""
    electrons = rng.poisson(np.clip(expected_electrons, 0, None)).astype(np.float32)
    electrons += rng.normal(0.0, settings.read_noise_e, electrons.shape).astype(np.float32)
    return np.clip(np.round(electrons + settings.offset_adu), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def widefield_stack(
    settings: DemoSettings, psf: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One widefield acquisition and its ground truth: (uint16 stack, float32 sharp truth)."""
    phantom, crop = _phantom_with_margin(settings, rng)
    blurred = signal.fftconvolve(phantom, psf, mode="same")[crop]
    truth = _sharp(phantom, settings)[crop]
    scale = settings.peak_photons / max(float(blurred.max()), 1e-12)
    return _camera(blurred * scale, settings, rng), truth


def reference_stack(settings: DemoSettings, rng: np.random.Generator) -> np.ndarray:
    """One sharp reference acquisition of an unrelated scene (uint16)."""
    phantom, crop = _phantom_with_margin(settings, rng)
    sharp = _sharp(phantom, settings)[crop]
    scale = settings.reference_peak_photons / max(float(sharp.max()), 1e-12)
    return _camera(sharp * scale, settings, rng)


def generate_campaign(
    settings: DemoSettings,
    widefield: dict[str, tuple[Path, Path | None]],
    references: dict[str, Path],
    psf_path: Path,
) -> None:
    """Write every demo stack as OME-TIFF with its voxel size.

    Parameters
    ----------
    widefield : sample name → (stack path, ground-truth path or None).
    references : sample name → stack path.
    psf_path : where the true PSF goes (for evaluation only; training never reads it).
    """
    voxel_size = settings.voxel_size
    psf = true_psf(settings)
    write_ome_tiff(psf, psf_path, voxel_size)
    for sample, (path, truth_path) in widefield.items():
        stack, truth = widefield_stack(settings, psf, sample_rng(settings.seed, sample))
        write_ome_tiff(stack, path, voxel_size)
        if truth_path is not None:
            write_ome_tiff(truth, truth_path, voxel_size)
    for sample, path in references.items():
        write_ome_tiff(reference_stack(settings, sample_rng(settings.seed, sample)), path, voxel_size)

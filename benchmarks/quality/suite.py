"""What the quality benchmark runs: its cases, the trained variants of each, and the two size presets.

Cases change one factor at a time from a base case (filaments, NA 1.4 oil at 520 nm, high photon
count), so every difference between two rows has one cause:

| case              | structure | photons (peak) | optics                          | sheet (computed) PSF |
|-------------------|-----------|----------------|---------------------------------|----------------------|
| filaments         | filaments | 1000           | NA 1.4 oil, 520 nm              | right                |
| puncta            | puncta    | 1000           | NA 1.4 oil, 520 nm              | right                |
| nuclei            | blobs     | 1000           | NA 1.4 oil, 520 nm              | right                |
| filaments_low     | filaments | 60             | NA 1.4 oil, 520 nm              | right                |
| filaments_air     | filaments | 1000           | NA 0.8 air, 600 nm              | right                |
| filaments_mismatch| filaments | 1000           | true: NA 1.1, sample n = 1.33   | NA 1.4 oil (wrong)   |

The mismatch case is an oil objective imaging an aqueous sample whose real aperture is smaller than
the label says: the PSF a user computes from the sheet (NA 1.4, matched indices) is too narrow,
axially by about half. Depth-induced spherical aberration (`optics.depth_um` with `sample_ri`) is
the other textbook mismatch and a candidate for a seventh case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NOMINAL_OIL = {"na": 1.4, "wavelength_nm": 520.0, "immersion_ri": 1.515}
AIR = {"na": 0.8, "wavelength_nm": 600.0, "immersion_ri": 1.0}
HIGH_PHOTONS, LOW_PHOTONS = 1000.0, 60.0


@dataclass(frozen=True)
class Case:
    """One synthetic campaign: what is imaged, how, and what the user believes the optics are.

    kernel_voxels: size of the PSF layer (z, y, x), about three FWHMs of the true PSF each way.
    lateral_scale: the preset's stack width and height are multiplied by this; puncta are sparse
        (0.01 per µm³, fixed in cycledecon.phantoms), and a quick-sized stack may hold none.
    """

    name: str
    structures: dict[str, float]
    true_optics: dict[str, Any]
    sheet_optics: dict[str, float]
    peak_photons: float
    kernel_voxels: tuple[int, int, int]
    label: str
    lateral_scale: int = 1

    def demo_overrides(self) -> dict[str, Any]:
        """The `demo:` keys this case sets."""
        return {"optics": self.true_optics, "peak_photons": self.peak_photons}


def _case(name: str, label: str, **changes: Any) -> Case:
    """A case that differs from the base case (filaments, oil, high photons) in `changes`."""
    base = {"structures": {"filaments": 1.0}, "true_optics": NOMINAL_OIL, "sheet_optics": NOMINAL_OIL,
            "peak_photons": HIGH_PHOTONS, "kernel_voxels": (9, 15, 15)}
    return Case(name=name, label=label, **{**base, **changes})


CASES: tuple[Case, ...] = (
    _case("filaments", "filaments, NA 1.4 oil, 1000 photons"),
    _case("puncta", "puncta, NA 1.4 oil, 1000 photons, 2× wider field", structures={"puncta": 1.0},
          lateral_scale=2),
    _case("nuclei", "nuclei/blobs, NA 1.4 oil, 1000 photons", structures={"blobs": 1.0}),
    _case("filaments_low", "filaments, NA 1.4 oil, 60 photons", peak_photons=LOW_PHOTONS),
    _case("filaments_air", "filaments, NA 0.8 air 600 nm, 1000 photons", true_optics=AIR, sheet_optics=AIR,
          kernel_voxels=(15, 15, 15)),
    _case("filaments_mismatch", "filaments, true NA 1.1 into water, sheet says NA 1.4 oil",
          true_optics={**NOMINAL_OIL, "na": 1.1, "sample_ri": 1.33}, kernel_voxels=(13, 15, 15)),
)

#: Trained methods: name → `train:` overrides. "nonblind" gets its frozen PSF file added per case,
#: "refined" (`train.refine`, a second stage after the blind one) as many steps as the blind stage.
CYCLEDECON, TWO_GENERATORS, NONBLIND, REFINED = "cycledecon", "two_generators", "nonblind", "refined"
VARIANTS: dict[str, dict[str, Any]] = {
    CYCLEDECON: {"model": "psf_layer"},
    TWO_GENERATORS: {"model": "two_generators"},
    NONBLIND: {"model": "psf_layer", "psf": {"learnable": False}},
    REFINED: {"model": "psf_layer"},
}


@dataclass(frozen=True)
class Preset:
    """Sizes of one benchmark run; `overrides` are merged over config/config.yaml."""

    name: str
    seeds: tuple[int, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] = (CYCLEDECON, TWO_GENERATORS, NONBLIND)


_COMMON = {
    "demo": {"seed": 0, "voxel_size_um": [0.25, 0.1, 0.1], "reference_peak_photons": 1000.0, "read_noise_e": 2.0},
    "patches": {"seed": 0, "val_fraction": 0.34},
    "evaluate": {"rl_iterations": 20},
}

PRESETS: dict[str, Preset] = {
    # 2 CPU cores, whole suite in under 30 minutes: a small-scale run (the demo's U-Net and
    # discriminators, 100 steps of batch 2). The PSF is cut at 17 × 33 × 33 voxels (±2 µm axially),
    # which makes Richardson–Lucy 6× faster here.
    "quick": Preset("quick", seeds=(0, 1, 2), overrides={
        "demo": {"shape": [16, 64, 64], "psf_shape": [17, 33, 33]},
        "ingest": {"chunks": [16, 64, 64]},
        "patches": {"shape": [16, 32, 32], "n_train": 64, "n_val": 8},
        "train": {"generator": {"depth": 2, "base_channels": 8},
                  "psf": {"gaussian_steps": 40},
                  "optim": {"steps": 100, "batch_size": 2, "generator_ema": 0.97},
                  "log_every": 10, "val_every": 50, "checkpoint_every": 100, "device": "cpu"},
        "deconvolve": {"device": "cpu"},
        "evaluate": {"theoretical_psf_shape": [17, 33, 33]},
    }),
    # one GPU, whole suite in about an hour (not yet timed on a GPU: see README.md)
    "full": Preset("full", seeds=(0, 1, 2), overrides={
        "demo": {"shape": [32, 128, 128], "psf_shape": [25, 49, 49]},
        "ingest": {"chunks": [32, 128, 128]},
        "patches": {"shape": [32, 64, 64], "n_train": 256, "n_val": 16},
        "train": {"generator": {"depth": 3, "base_channels": 32},
                  "discriminator": {"base_channels": 16, "layers": 3},
                  "optim": {"steps": 1500, "batch_size": 4, "generator_ema": 0.995},
                  "log_every": 20, "val_every": 250, "checkpoint_every": 500, "device": "auto"},
        "deconvolve": {"device": "auto"},
        "evaluate": {"theoretical_psf_shape": [25, 49, 49]},
    }, methods=(CYCLEDECON, TWO_GENERATORS, NONBLIND, REFINED)),
}


def deep_update(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in, nested mappings key by key (neither input is changed)."""
    out = dict(base)
    for key, value in extra.items():
        both_dicts = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = deep_update(out[key], value) if both_dicts else value
    return out


def case_config(base: dict[str, Any], preset: Preset, case: Case) -> dict[str, Any]:
    """The workflow config of a case's data (demo, patches) and its shared training settings."""
    config = deep_update(base, _COMMON)
    config = deep_update(config, preset.overrides)
    config = deep_update(config, {"demo": case.demo_overrides()})
    config["demo"]["structures"] = dict(case.structures)  # replaces the default mix, not merged
    z, y, x = config["demo"]["shape"]
    config["demo"]["shape"] = [z, y * case.lateral_scale, x * case.lateral_scale]
    return deep_update(config, {"train": {"psf": {"shape_voxels": list(case.kernel_voxels)}}})


def variant_train(config: dict[str, Any], variant: str, seed: int, frozen_psf: str) -> dict[str, Any]:
    """The `train:` section of one (method, seed); `frozen_psf` is the non-blind method's kernel file."""
    extra = deep_update(VARIANTS[variant], {"seed": seed})
    if variant == NONBLIND:
        extra = deep_update(extra, {"psf": {"file": frozen_psf}})
    if variant == REFINED:
        extra = deep_update(extra, {"refine": {"steps": config["train"]["optim"]["steps"]}})
    return deep_update(config["train"], extra)

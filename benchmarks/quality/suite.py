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

from cycledecon.config import deep_update
from cycledecon.config.patches import parse_patch_config
from cycledecon.patches import context_voxels
from cycledecon.voxel import VoxelSize

NOMINAL_OIL = {"na": 1.4, "wavelength_nm": 520.0, "immersion_ri": 1.515}
AIR = {"na": 0.8, "wavelength_nm": 600.0, "immersion_ri": 1.0}
HIGH_PHOTONS, LOW_PHOTONS = 1000.0, 60.0


@dataclass(frozen=True)
class Case:
    """One synthetic campaign: what is imaged, how, and what the user believes the optics are.

    The PSF layer's size is not a case setting: it follows from the sheet's optics and the preset's
    context margin (`train.psf.energy`), as it does for a user.
    lateral_scale: the preset's stack width and height are multiplied by this; puncta are sparse
        (0.01 per µm³, fixed in cycledecon.phantoms), and a quick-sized stack may hold none.
    """

    name: str
    structures: dict[str, float]
    true_optics: dict[str, Any]
    sheet_optics: dict[str, float]
    peak_photons: float
    label: str
    lateral_scale: int = 1

    def demo_overrides(self) -> dict[str, Any]:
        """The `demo:` keys this case sets."""
        return {"optics": self.true_optics, "peak_photons": self.peak_photons}


def _case(name: str, label: str, **changes: Any) -> Case:
    """A case that differs from the base case (filaments, oil, high photons) in `changes`."""
    base = {"structures": {"filaments": 1.0}, "true_optics": NOMINAL_OIL, "sheet_optics": NOMINAL_OIL,
            "peak_photons": HIGH_PHOTONS}
    return Case(name=name, label=label, **{**base, **changes})


CASES: tuple[Case, ...] = (
    _case("filaments", "filaments, NA 1.4 oil, 1000 photons"),
    _case("puncta", "puncta, NA 1.4 oil, 1000 photons, 2× wider field", structures={"puncta": 1.0},
          lateral_scale=2),
    _case("nuclei", "nuclei/blobs, NA 1.4 oil, 1000 photons", structures={"blobs": 1.0}),
    _case("filaments_low", "filaments, NA 1.4 oil, 60 photons", peak_photons=LOW_PHOTONS),
    _case("filaments_air", "filaments, NA 0.8 air 600 nm, 1000 photons", true_optics=AIR, sheet_optics=AIR),
    _case("filaments_mismatch", "filaments, true NA 1.1 into water, sheet says NA 1.4 oil",
          true_optics={**NOMINAL_OIL, "na": 1.1, "sample_ri": 1.33}),
)

#: Trained methods: name → `train:` overrides. "nonblind" gets the case's whole true PSF as its file,
#: "refined" (`train.refine`, a second stage after the blind one) as many steps as the blind stage.
CYCLEDECON, TWO_GENERATORS, NONBLIND, REFINED = "cycledecon", "two_generators", "nonblind", "refined"
VARIANTS: dict[str, dict[str, Any]] = {
    CYCLEDECON: {"model": "psf_layer"},
    TWO_GENERATORS: {"model": "two_generators", "generator_context": [0, 0, 0]},  # no margin: see below
    NONBLIND: {"model": "psf_layer", "psf": {"learnable": False}},
    REFINED: {"model": "psf_layer"},
}
#: Methods trained on the patches' centres, without the context margin: the two-generator ablation
#: is a standard CycleGAN, and its F, a U-Net, would run over the whole margin (many times the
#: patch's volume), where the PSF layer needs one FFT.
WITHOUT_CONTEXT = frozenset({TWO_GENERATORS})


@dataclass(frozen=True)
class Preset:
    """Sizes of one benchmark run; `overrides` are merged over config/config.yaml.

    rl_learned_seeds: the cycledecon seeds whose learned PSF Richardson–Lucy is run with (None:
        every seed). RL with a whole widefield PSF costs about as much as training a quick model;
        every seed's learned PSF is still scored by its FWHM errors.
    """

    name: str
    seeds: tuple[int, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] = (CYCLEDECON, TWO_GENERATORS, NONBLIND)
    rl_learned_seeds: tuple[int, ...] | None = None

    def rl_with_learned(self, seed: int) -> bool:
        """Whether RL runs with this seed's learned PSF."""
        return self.rl_learned_seeds is None or seed in self.rl_learned_seeds


#: The whole widefield PSF, in every preset: the true PSF is formed at 33 × 65 × 65 voxels (±4 µm
#: axially, ±3.2 µm laterally: a widefield PSF spreads its light over many planes, not around a
#: focus); patches are cut with config/config.yaml's context margin (that PSF's radius plus G's ring),
#: so the PSF layer (the pupil model started from the sheet's optics, as large as holds 95 % of the
#: theoretical PSF's energy) and the non-blind method's frozen true PSF fit uncropped; RL runs with every PSF at its full extent, at the
#: workflow's iteration count (config/config.yaml) and at the oracle's.
PSF_SHAPE = [33, 65, 65]
VOXEL_SIZE_UM = [0.25, 0.1, 0.1]
_COMMON = {
    "demo": {"seed": 0, "voxel_size_um": VOXEL_SIZE_UM, "psf_shape": PSF_SHAPE, "reference_peak_photons": 1000.0,
             "read_noise_e": 2.0},
    "patches": {"seed": 0, "val_fraction": 0.34},
    "train": {"psf": {"parameterization": "pupil", "energy": 0.95}},
    "evaluate": {"theoretical_psf_shape": PSF_SHAPE},  # rl_iterations: the workflow's
}

PRESETS: dict[str, Preset] = {
    # 2 CPU cores, about 70 minutes: stacks a little thicker than the PSF (so a 16-plane patch and its
    # context lie mostly inside one), and the default config's training as it is (U-Net, steps,
    # patches): the benchmark scores what `make demo` trains. One seed; the two-generator ablation
    # and the seed spread are the full preset's.
    "quick": Preset("quick", seeds=(0,), overrides={
        "demo": {"shape": [48, 64, 64]},
        "ingest": {"chunks": [48, 64, 64]},
        "patches": {"n_val": 8},
        "train": {"log_every": 10, "val_every": 100, "checkpoint_every": 400, "device": "cpu"},
        "deconvolve": {"device": "cpu"},
    }, methods=(CYCLEDECON, NONBLIND)),
    # one GPU (not yet timed: see README.md); Richardson–Lucy runs on the CPU
    "full": Preset("full", seeds=(0, 1, 2), overrides={
        "demo": {"shape": [64, 128, 128]},
        "ingest": {"chunks": [64, 128, 128]},
        "patches": {"shape": [32, 64, 64], "n_train": 256, "n_val": 16},
        "train": {"generator": {"depth": 3, "base_channels": 32},
                  "discriminator": {"base_channels": 16, "layers": 3},
                  "optim": {"steps": 1500, "batch_size": 4, "generator_ema": 0.995},
                  "log_every": 20, "val_every": 250, "checkpoint_every": 500, "device": "auto"},
        "deconvolve": {"device": "auto"},
    }, methods=(CYCLEDECON, TWO_GENERATORS, NONBLIND, REFINED)),
}


def preset_settings(preset: Preset) -> dict[str, Any]:
    """What the benchmark sets over config/config.yaml for every case of a preset."""
    return deep_update(_COMMON, preset.overrides)


def case_config(base: dict[str, Any], preset: Preset, case: Case) -> dict[str, Any]:
    """The workflow config of a case's data (demo, patches) and its shared training settings."""
    config = deep_update(base, preset_settings(preset))
    config = deep_update(config, {"demo": case.demo_overrides()})
    config["demo"]["structures"] = dict(case.structures)  # replaces the default mix, not merged
    z, y, x = config["demo"]["shape"]
    config["demo"]["shape"] = [z, y * case.lateral_scale, x * case.lateral_scale]
    check_whole_psf(config)
    return config


def check_whole_psf(config: dict[str, Any]) -> None:
    """Refuse a preset whose stacks are thinner than the true PSF or whose patches' context margin,
    less G's ring, is smaller than its radius: the true PSF would then not be modelled at full extent,
    and the non-blind method's PSF file would not fit (train refuses it, after the case's data is made)."""
    psf_shape = tuple(config["demo"]["psf_shape"])
    margin = context_voxels(parse_patch_config(config["patches"]), VoxelSize(*config["demo"]["voxel_size_um"]))
    ring = config.get("train", {}).get("generator_context", (0, 0, 0))
    room = tuple(m - r for m, r in zip(margin, ring))
    if config["demo"]["shape"][0] < psf_shape[0]:
        raise ValueError(f"demo.shape {config['demo']['shape']}: fewer planes than the true PSF {psf_shape}")
    if any(n // 2 > m for n, m in zip(psf_shape, room)):
        raise ValueError(f"patches.context_um {config['patches']['context_um']} ({margin} voxels, {room} less "
                         f"train.generator_context) is smaller than the radius of the true PSF {psf_shape}")


def variant_train(config: dict[str, Any], variant: str, seed: int, frozen_psf: str) -> dict[str, Any]:
    """The `train:` section of one (method, seed); `frozen_psf` is the non-blind method's kernel file."""
    extra = deep_update(VARIANTS[variant], {"seed": seed})
    if variant == NONBLIND:
        extra = deep_update(extra, {"psf": {"file": frozen_psf}})
    if variant == REFINED:
        extra = deep_update(extra, {"refine": {"steps": config["train"]["optim"]["steps"]}})
    return deep_update(config["train"], extra)

"""The workflow's configuration: one frozen dataclass per section of config/config.yaml, one parser.

Every section is defined once, in this package, with the shipped config.yaml's values as its
defaults (tests/test_config.py fails when they drift), so a user calling the library gets the model
the workflow trains. Nothing here imports torch, dask or zarr: the Snakefile parses the whole config
with it before any job runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cycledecon.config.deconvolve import InferenceConfig, parse_inference_config
from cycledecon.config.demo import DemoSettings, parse_demo_config
from cycledecon.config.normalize import NormalizeConfig, parse_normalize_config
from cycledecon.config.parse import check_ranges, deep_update, odd_sizes, parse_section
from cycledecon.config.patches import PatchConfig, parse_patch_config
from cycledecon.config.train import TrainConfig, parse_config
from cycledecon.errors import CycledeconError


@dataclass(frozen=True)
class IngestConfig:
    """The `ingest:` section. chunks: (z, y, x) voxels of the OME-Zarr chunks written: small enough
    for random 3D patch access, large enough that a 2048² frame is not thousands of files."""

    chunks: tuple[int, int, int] = (32, 128, 128)


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate:` section.

    rl_iterations: Richardson–Lucy iterations of the baselines, a fixed count (no ground truth needed).
    theoretical_psf_shape: odd (z, y, x) voxels of the theoretical PSF used by the RL baseline and
        the PSF measurements.
    """

    rl_iterations: int = 40
    theoretical_psf_shape: tuple[int, int, int] = (33, 65, 65)


@dataclass(frozen=True)
class TruePsf:
    """A campaign's known PSF (evaluation and reporting only): its file, and its voxel size in µm
    where the file has none or a wrong one."""

    path: str
    voxel_size_um: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class WorkflowConfig:
    """The whole config file. `demo` is None when the file has no demo section (no demo stacks)."""

    samples: str = "config/samples.tsv"
    demo: DemoSettings | None = None
    ingest: IngestConfig = field(default_factory=IngestConfig)
    true_psf: dict[str, TruePsf] = field(default_factory=dict)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deconvolve: InferenceConfig = field(default_factory=InferenceConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def parse_workflow_config(config: Mapping[str, Any]) -> WorkflowConfig:
    """Parse every section of a config file; the first bad key raises CycledeconError naming it."""
    if not isinstance(config, Mapping):
        raise CycledeconError(f"config: expected a mapping of sections, got {config!r}")
    known = [f.name for f in fields(WorkflowConfig)]
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise CycledeconError(f"{unknown[0]}: unknown config section (known: {', '.join(known)})")
    samples = config.get("samples", WorkflowConfig.samples)
    if not isinstance(samples, str):
        raise CycledeconError(f"samples: expected the sample sheet's path, got {samples!r}")
    ingest = parse_section(IngestConfig, config.get("ingest") or {}, "ingest")
    evaluate = parse_section(EvaluateConfig, config.get("evaluate") or {}, "evaluate")
    check_ranges(ingest, "ingest", [("chunks", min(ingest.chunks) >= 1)])
    check_ranges(evaluate, "evaluate", [
        ("rl_iterations", evaluate.rl_iterations >= 1),
        ("theoretical_psf_shape", odd_sizes(evaluate.theoretical_psf_shape)),
    ])  # fmt: skip
    return WorkflowConfig(
        samples=samples,
        demo=None if config.get("demo") is None else parse_demo_config(config["demo"]),
        ingest=ingest,
        true_psf=parse_true_psf(config.get("true_psf") or {}),
        normalize=parse_normalize_config(config.get("normalize")),
        patches=parse_patch_config(config.get("patches")),
        train=parse_config(config.get("train")),
        deconvolve=parse_inference_config(config.get("deconvolve")),
        evaluate=evaluate,
    )


def parse_true_psf(section: Any) -> dict[str, TruePsf]:
    """The `true_psf:` section: campaign name → a path, or {path, voxel_size_um}."""
    if not isinstance(section, Mapping):
        raise CycledeconError(f"true_psf: expected campaign names with their PSF files, got {section!r}")
    out = {}
    for campaign, entry in section.items():
        key = f"true_psf.{campaign}"
        out[campaign] = parse_section(TruePsf, {"path": entry} if isinstance(entry, str) else entry, key)
        voxel = out[campaign].voxel_size_um
        check_ranges(out[campaign], key, [("voxel_size_um", voxel is None or min(voxel) > 0)])
    return out


__all__ = [
    "DemoSettings", "EvaluateConfig", "InferenceConfig", "IngestConfig", "NormalizeConfig", "PatchConfig",
    "TrainConfig", "TruePsf", "WorkflowConfig", "deep_update", "parse_config", "parse_demo_config", "parse_inference_config",
    "parse_normalize_config", "parse_patch_config", "parse_true_psf", "parse_workflow_config",
]  # fmt: skip

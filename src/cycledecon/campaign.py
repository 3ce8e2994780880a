"""One campaign from TIFFs to a model without Snakemake: `cycledecon train --widefield … --reference …`.

The chain is the workflow's, stage for stage and with the same library functions: each stack is
ingested (`cycledecon.ingest.ingest`) and normalized (`cycledecon.normalize.normalize`), the campaign's
unpaired patches are cut (`cycledecon.patches.extract_patches`) and the model is trained
(`cycledecon.train.train`), with the config sections the rules get. A user with a folder of
widefield stacks and one of sharp references thus trains the model the workflow would, without
writing a sample sheet.

Intermediate stores go to a work directory (``MODEL_DIR/work`` unless told otherwise), laid out
as the workflow's ``results/``: ``zarr/``, ``normalized/``, ``patches/``. A rerun resumes: a stage's
output is kept when its key — a digest of what it was computed from (the raw file's path, size and
modification time, the voxel-size override, the config section, the upstream stage's key) — is the
one recorded beside it in ``keys/``; anything else is computed again. The key is recorded only after
its output is complete (outputs are written atomically), so an interrupted stage is redone, and
training resumes from its own checkpoint (`cycledecon.train`). Raw files are only read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from cycledecon.atomic import atomic_path, check_writable
from cycledecon.config import parse_config, parse_normalize_config, parse_patch_config, parse_workflow_config
from cycledecon.config.parse import plain
from cycledecon.errors import CycledeconError
from cycledecon.io import DEFAULT_CHUNKS
from cycledecon.voxel import VoxelSize

log = logging.getLogger(__name__)

#: The workflow's config as shipped in a source checkout (an editable install finds it; a wheel does not).
SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
#: The work directory's name inside the model directory, when not given.
WORK = "work"
#: Config sections the chain reads (the others, e.g. demo or evaluate, are not needed here).
SECTIONS = ("ingest", "normalize", "patches", "train")
#: The optics options, by their key in the sample sheet and the patch store.
OPTICS_KEYS = ("na", "wavelength_nm", "immersion_ri")

Role = Literal["widefield", "reference"]


@dataclass(frozen=True)
class CampaignStack:
    """One raw stack of the campaign: its sample name, role, file and voxel-size override (µm)."""

    sample: str
    role: Role
    path: Path
    voxel_size: VoxelSize | None


# ----------------------------------------------------------------------------------------- config
def shipped_config() -> Path | None:
    """The workflow's config/config.yaml when cycledecon runs from a source checkout, else None."""
    return SHIPPED_CONFIG if SHIPPED_CONFIG.is_file() else None


def read_config(path: Path | None) -> dict[str, Any]:
    """The whole config file `path` as a dict; None gives the shipped config (`shipped_config`),
    so that a user gets the model the workflow trains, or, where there is none, an empty config
    (the library's defaults) with a warning."""
    if path is None:
        path = shipped_config()
        if path is None:
            log.warning("no --config and no shipped config/config.yaml found: using the library's defaults")
            return {}
        log.info("using the workflow's config %s", path)
    if not path.is_file():
        raise CycledeconError(f"{path}: config file not found")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CycledeconError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise CycledeconError(f"{path}: expected a mapping of config sections, got {type(config).__name__}")
    return config


def sections(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The chain's sections (`SECTIONS`) of `config`, parsed once up front with the library's own
    parser, so a bad key fails, named, before any stack is read."""
    out = {name: dict(config.get(name) or {}) for name in SECTIONS}
    parse_workflow_config(out)
    return out


def optics_from(na: float | None, wavelength_nm: float | None, immersion_ri: float | None) -> dict[str, float] | None:
    """The campaign's optics {na, wavelength_nm, immersion_ri}: all three given, or none (None)."""
    values = dict(zip(OPTICS_KEYS, (na, wavelength_nm, immersion_ri)))
    given = [k for k, v in values.items() if v is not None]
    if not given:
        return None
    if len(given) < len(values):
        missing = ", ".join(f"--{k.replace('_', '-')}" for k in values if values[k] is None)
        raise CycledeconError(f"optics: give --na, --wavelength-nm and --immersion-ri together ({missing} missing)")
    if not (0 < values["na"] < values["immersion_ri"] and values["wavelength_nm"] > 0):
        raise CycledeconError(f"optics: expected 0 < NA < immersion index and a wavelength > 0 nm, got {values}")
    return {k: float(v) for k, v in values.items()}


def check_optics(train_section: Mapping[str, Any], optics: dict[str, float] | None) -> None:
    """Refuse, before any work, a training that needs the optics when none were given: the pupil
    PSF model and the theoretical initial kernel are computed from them."""
    psf = parse_config(train_section).psf
    if optics is None and psf.file is None and (psf.parameterization == "pupil" or psf.init == "theoretical"):
        key = "train.psf.parameterization: pupil" if psf.parameterization == "pupil" else "train.psf.init: theoretical"
        raise CycledeconError(f"{key} needs the microscope's optics: give --na, --wavelength-nm and --immersion-ri")


# ----------------------------------------------------------------------------------------- stacks
def sample_names(paths: Sequence[Path]) -> list[str]:
    """One distinct sample name per file, from its name (`stack_name`); a name that two files
    share gets -2, -3… on its later files, so no store of the work directory holds two stacks."""
    from cycledecon.deconvolve import stack_name

    names: list[str] = []
    for path in paths:
        base = name = stack_name(path)
        count = 1
        while name in names:
            count += 1
            name = f"{base}-{count}"
        names.append(name)
    return names


def campaign_stacks(
    widefield: Sequence[Path],
    reference: Sequence[Path],
    voxel_size: VoxelSize | None = None,
    reference_voxel_size: VoxelSize | None = None,
) -> list[CampaignStack]:
    """The campaign's stacks, widefield first; each role needs at least one file, and no file may
    have both roles (it would teach the model that blurred and sharp look alike)."""
    if not widefield or not reference:
        raise CycledeconError("training needs at least one --widefield and one --reference stack")
    both = {p.resolve() for p in widefield} & {p.resolve() for p in reference}
    if both:
        raise CycledeconError(f"{sorted(both)[0]}: listed both as --widefield and as --reference")
    paths = [*widefield, *reference]
    for path in paths:
        if not path.is_file():
            raise CycledeconError(f"{path}: no such file")
    roles: list[Role] = ["widefield"] * len(widefield) + ["reference"] * len(reference)
    overrides = [voxel_size] * len(widefield) + [reference_voxel_size] * len(reference)
    return [CampaignStack(name, role, Path(path), override)
            for name, role, path, override in zip(sample_names(paths), roles, paths, overrides)]  # fmt: skip


# ------------------------------------------------------------------------------------ stage keys
def file_fingerprint(path: Path) -> dict[str, Any]:
    """What tells a changed raw file from the one a store was made of, without reading it all."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def stage_key(*parts: Any) -> str:
    """A digest of what a stage's output is computed from (plain JSON-able values)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def key_file(work: Path, output: Path) -> Path:
    return work / "keys" / f"{output.parent.name}.{output.name}.key"


def up_to_date(work: Path, output: Path, key: str) -> bool:
    """Whether `output` exists and was made from what `key` digests (its recorded key is `key`)."""
    recorded = key_file(work, output)
    return output.exists() and recorded.is_file() and recorded.read_text().strip() == key


def record_key(work: Path, output: Path, key: str) -> None:
    """Record `output`'s key once the output is complete (atomically, like every output)."""
    with atomic_path(key_file(work, output)) as tmp:
        tmp.write_text(key + "\n")


def forget(work: Path, output: Path) -> None:
    """Drop `output`'s key before it is computed again, so an interrupted redo is not taken for done."""
    key_file(work, output).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------- stages
def ingest_stack(stack: CampaignStack, work: Path, config: Mapping[str, Any], campaign: str) -> tuple[Path, str]:
    """Ingest one raw stack into work/zarr/ (skipped when up to date); returns (store, key)."""
    from cycledecon.ingest import ingest

    out = work / "zarr" / f"{stack.sample}.ome.zarr"
    chunks = tuple(config.get("chunks") or DEFAULT_CHUNKS)
    override = None if stack.voxel_size is None else list(stack.voxel_size.as_tuple())
    key = stage_key("ingest", file_fingerprint(stack.path), stack.sample, stack.role, campaign, override, chunks)
    if up_to_date(work, out, key):
        log.info("%s: ingested store %s is up to date", stack.path, out)
        return out, key
    forget(work, out)
    attrs = {"sample": stack.sample, "campaign": campaign, "role": stack.role}
    ingest(stack.path, out, voxel_size=stack.voxel_size, extra_attrs=attrs, chunks=chunks)
    record_key(work, out, key)
    return out, key


def normalize_stack(store: Path, upstream: str, work: Path, config: Mapping[str, Any]) -> tuple[Path, str]:
    """Normalize one ingested store into work/normalized/ (skipped when up to date)."""
    from cycledecon.normalize import normalize

    out = work / "normalized" / store.name
    key = stage_key("normalize", upstream, plain(parse_normalize_config(config)))
    if up_to_date(work, out, key):
        log.info("normalized store %s is up to date", out)
        return out, key
    forget(work, out)
    normalize(store, out, config)
    record_key(work, out, key)
    return out, key


def make_patches(
    stacks: Sequence[CampaignStack], normalized: Sequence[tuple[Path, str]], work: Path,
    config: Mapping[str, Any], campaign: str, optics: dict[str, float] | None,
) -> Path:  # fmt: skip
    """Cut the campaign's unpaired patches into work/patches/ (skipped when up to date)."""
    from cycledecon.patches import SampleInput, extract_patches

    out = work / "patches" / "patches.zarr"
    key = stage_key("patches", [(s.sample, s.role, k) for s, (_, k) in zip(stacks, normalized)],
                    plain(parse_patch_config(config)), campaign, optics)  # fmt: skip
    if up_to_date(work, out, key):
        log.info("patch store %s is up to date", out)
        return out
    forget(work, out)
    if out.exists():  # an outdated store of this work directory: extract_patches replaces only files
        shutil.rmtree(out)
    samples = [SampleInput(name=s.sample, role=s.role, path=path) for s, (path, _) in zip(stacks, normalized)]
    written = extract_patches(samples, out, out.with_name("manifest.csv"), config, campaign, optics)
    record_key(work, out, key)
    return written


def train_campaign(
    stacks: Sequence[CampaignStack],
    model_dir: Path,
    config: Mapping[str, Any],
    optics: dict[str, float] | None = None,
    work: Path | None = None,
) -> Path:
    """Ingest, normalize, cut patches and train one campaign's model; returns model.pt's path.

    Parameters
    ----------
    stacks : the campaign's raw stacks (`campaign_stacks`); read only, never modified.
    model_dir : receives model.pt, learned_psf.ome.tif, train_log.csv, the figures and the
        training checkpoint, as the workflow's results/models/{campaign}/ does; its name is the
        campaign's.
    config : the whole workflow config (`read_config`); its ingest, normalize, patches and train
        sections are used as the rules use them.
    optics : {na, wavelength_nm, immersion_ri} of the widefield microscope (`optics_from`), or
        None; needed by the shipped config's pupil PSF model and reference scaling.
    work : folder of the intermediate stores, default model_dir/work; a rerun with the same one
        resumes (see the module docstring).
    """
    from cycledecon.train import train

    model_dir = Path(model_dir)
    work = model_dir / WORK if work is None else Path(work)
    parsed = sections(config)
    check_optics(parsed["train"], optics)
    check_writable(model_dir, folder=True)
    check_writable(work, folder=True)
    campaign = model_dir.resolve().name or "campaign"
    ingested = [ingest_stack(s, work, parsed["ingest"], campaign) for s in stacks]
    normalized = [normalize_stack(store, key, work, parsed["normalize"]) for store, key in ingested]
    patches = make_patches(stacks, normalized, work, parsed["patches"], campaign, optics)
    return train(patches, model_dir, parsed["train"])

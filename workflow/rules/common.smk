# Helpers and validation shared by every rule, and the end-of-run cleanup of stores; nothing here runs a job.
import os
from pathlib import Path

from snakemake.utils import min_version, validate

from cycledecon.config import parse_workflow_config
from cycledecon.errors import CycledeconError
from cycledecon.methods import CYCLEDECON, RAW, RL_LEARNED, RL_THEORETICAL
from cycledecon.sheet import (
    campaign_optics,
    check_demo_section,
    demo_rows,
    read_sample_sheet,
    voxel_size_override,
)

min_version("9.27")


# Every section parsed with the library's own parser, defaults filled in: a bad key fails, named,
# before any job runs. Rules read their settings from WORKFLOW; sections go to jobs as written.
try:
    WORKFLOW = parse_workflow_config(config)
    samples = read_sample_sheet(WORKFLOW.samples)
    DEMO_DIR = WORKFLOW.demo.dir if WORKFLOW.demo is not None else None
    check_demo_section(samples, DEMO_DIR, WORKFLOW.samples)
except CycledeconError as exc:
    raise WorkflowError(str(exc)) from None
# set_default=False: snakemake would otherwise refill the sheet's None cells (blank optional
# columns, per row) with NaN, which rules then read as a value.
validate(samples, schema="../schemas/samples.schema.yaml", set_default=False)


wildcard_constraints:
    sample="|".join(samples["sample"]),
    campaign="|".join(sorted(set(samples["campaign"]))),


def sample_row(sample):
    return samples.loc[sample]


def raw_path(wildcards):
    return sample_row(wildcards.sample)["path"]


def zarr_path(sample):
    return f"results/zarr/{sample}.ome.zarr"


def normalized_path(sample):
    return f"results/normalized/{sample}.ome.zarr"


def campaign_samples(campaign, role=None):
    """Sample names of a campaign, optionally of one role, in sheet order."""
    rows = samples[samples["campaign"] == campaign]
    if role is not None:
        rows = rows[rows["role"] == role]
    return rows["sample"].tolist()


def campaigns():
    return sorted(set(samples["campaign"]))


def true_psf(campaign):
    """(path, voxel size in µm or None) of a campaign's known PSF (config `true_psf`: a path, or
    {path, voxel_size_um}); (None, None) when the config names none."""
    entry = WORKFLOW.true_psf.get(campaign)
    if entry is None:
        return None, None
    voxel = entry.voxel_size_um
    return entry.path, None if voxel is None else list(voxel)


def reference_psf(wildcards):
    """The campaign's known PSF (config `true_psf`), used only to report the learned PSF's accuracy."""
    path = true_psf(wildcards.campaign)[0]
    return {"reference_psf": path} if path else {}


def method_paths(sample):
    """Method → (result, the stack it was computed from) for one widefield sample, plus its truth."""
    campaign = sample_row(sample)["campaign"]
    raw = zarr_path(sample)
    methods = {RAW: (raw, raw)}
    if campaign_optics(samples, campaign) is not None:
        methods[RL_THEORETICAL] = (
            f"results/baselines/{sample}/rl_theoretical.ome.zarr",
            raw,
        )
    methods[RL_LEARNED] = (f"results/baselines/{sample}/rl_learned.ome.zarr", raw)
    methods[CYCLEDECON] = (
        f"results/deconvolved/{sample}.ome.zarr",
        normalized_path(sample),
    )
    return {"methods": methods, "truth": sample_row(sample)["ground_truth"]}


def method_inputs(wildcards):
    paths = method_paths(wildcards.sample)
    files = {p for pair in paths["methods"].values() for p in pair}
    return sorted(files) + ([paths["truth"]] if paths["truth"] else [])


def method_names(wildcards):
    return method_paths(wildcards.sample)


def campaign_evaluation_inputs(wildcards):
    files = [
        f
        for s in campaign_samples(wildcards.campaign, "widefield")
        for f in method_inputs(type("W", (), {"sample": s}))
    ]
    learned = f"results/models/{wildcards.campaign}/learned_psf.ome.tif"
    return {"files": files, "learned_psf": learned, **reference_psf(wildcards)}


def demo_samples():
    """Rows of the sheet whose raw stacks the demo rule generates (none without a demo section)."""
    return demo_rows(samples, DEMO_DIR)


def all_outputs():
    figures = [
        f"results/figures/{s}_{kind}.png"
        for s in samples[samples["role"] == "widefield"]["sample"]
        for kind in ("slices", "profile")
    ]
    return ["results/summary.md", *figures]


# Snakemake marks each directory output with a `.snakemake_timestamp` file inside it, its record
# of the output's age. Inside an OME-Zarr store that file is foreign to the format (viewers list
# it, cycledecon refuses to replace a store holding it), so when a run ends, failed or not, each
# store's marker is removed and the store's own modification time set to the marker's: Snakemake
# falls back to a directory's own time when it has no marker, so every store keeps its age.
STORE_PATTERNS = ("results/*/*.zarr", "results/*/*/*.zarr")


def remove_store_timestamps():
    for pattern in STORE_PATTERNS:
        for marker in Path().glob(f"{pattern}/.snakemake_timestamp"):
            mtime = marker.stat().st_mtime
            marker.unlink()
            os.utime(marker.parent, (mtime, mtime))


onsuccess:
    remove_store_timestamps()


onerror:
    remove_store_timestamps()

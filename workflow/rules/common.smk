# Helpers and validation shared by every rule; nothing here runs a job.
from pathlib import Path

from snakemake.utils import min_version, validate

from cycledecon.errors import CycledeconError
from cycledecon.sheet import campaign_optics, read_sample_sheet, voxel_size_override

min_version("9.27")


validate(config, schema="../schemas/config.schema.yaml")

try:
    samples = read_sample_sheet(config["samples"])
except CycledeconError as exc:
    raise WorkflowError(str(exc)) from None
validate(samples, schema="../schemas/samples.schema.yaml")

DEMO_DIR = config["demo"]["dir"]


wildcard_constraints:
    sample="|".join(samples["sample"]),
    campaign="|".join(sorted(set(samples["campaign"]))),


def sample_row(sample):
    return samples.loc[sample]


def raw_path(wildcards):
    return sample_row(wildcards.sample)["path"]


def zarr_path(sample):
    return f"results/zarr/{sample}.ome.zarr"


def demo_samples():
    """Rows of the sheet whose raw stacks the demo rule generates."""
    return samples[samples["path"].str.startswith(DEMO_DIR + "/")]


def all_outputs():
    return [zarr_path(s) for s in samples["sample"]]

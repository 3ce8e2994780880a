# Whole normalized stacks → deconvolved OME-Zarr, in seam-free Dask blocks (GPU when present).
from cycledecon.config.deconvolve import MEMORY_CAP_GB

# The job's memory: the blocks' budget (deconvolve.memory_gb, or the most its default can be) plus
# 1 GiB for the process itself (libraries, the model, input chunks in flight).
DECONVOLVE_MEM_MB = (
    round(1024 * (WORKFLOW.deconvolve.memory_gb or MEMORY_CAP_GB)) + 1024
)


rule deconvolve:
    input:
        image="results/normalized/{sample}.ome.zarr",
        model=lambda wc: f"results/models/{sample_row(wc.sample)['campaign']}/model.pt",
    output:
        zarr=directory("results/deconvolved/{sample}.ome.zarr"),
    log:
        "logs/deconvolve/{sample}.log",
    conda:
        "../../envs/cycledecon.yaml"
    threads: 2
    resources:
        mem_mb=DECONVOLVE_MEM_MB,
    params:
        config=config.get("deconvolve") or {},
    script:
        "../scripts/deconvolve.py"

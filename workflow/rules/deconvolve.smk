# Whole normalized stacks → deconvolved OME-Zarr, in seam-free Dask blocks (GPU when present).


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
        mem_mb=6000,
    params:
        config=config["deconvolve"],
    script:
        "../scripts/deconvolve.py"

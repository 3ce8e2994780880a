# OME-Zarr → normalized float32 OME-Zarr (CLAHE or percentile), parameters kept in the attributes.


rule normalize:
    input:
        zarr="results/zarr/{sample}.ome.zarr",
    output:
        zarr=directory("results/normalized/{sample}.ome.zarr"),
    log:
        "logs/normalize/{sample}.log",
    conda:
        "../../envs/cycledecon.yaml"
    resources:
        mem_mb=4000,
    params:
        config=config.get("normalize") or {},
    script:
        "../scripts/normalize.py"

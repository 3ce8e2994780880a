# Raw TIFF / OME-TIFF / ImageJ stacks → OME-Zarr with physical voxel sizes (raw files never modified).


rule ingest:
    input:
        raw=raw_path,
    output:
        zarr=directory("results/zarr/{sample}.ome.zarr"),
    log:
        "logs/ingest/{sample}.log",
    conda:
        "../../envs/cycledecon.yaml"
    resources:
        mem_mb=2000,
    params:
        channel=lambda wc: sample_row(wc.sample)["channel"],
        voxel_size=lambda wc: voxel_size_override(sample_row(wc.sample)),
        chunks=WORKFLOW.ingest.chunks,
        attrs=lambda wc: {
            "sample": wc.sample,
            "campaign": sample_row(wc.sample)["campaign"],
            "role": sample_row(wc.sample)["role"],
        },
    script:
        "../scripts/ingest.py"

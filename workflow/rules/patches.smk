# A campaign's normalized stacks → unpaired 3D patches (widefield = domain A, reference = domain B).


rule patches:
    input:
        stacks=lambda wc: [normalized_path(s) for s in campaign_samples(wc.campaign)],
    output:
        patches=directory("results/patches/{campaign}/patches.zarr"),
        manifest="results/patches/{campaign}/manifest.csv",
    log:
        "logs/patches/{campaign}.log",
    conda:
        "../../envs/cycledecon.yaml"
    resources:
        mem_mb=4000,
    params:
        samples=lambda wc: [
            (s, sample_row(s)["role"], normalized_path(s))
            for s in campaign_samples(wc.campaign)
        ],
        optics=lambda wc: campaign_optics(samples, wc.campaign),
        config=config.get("patches") or {},
    script:
        "../scripts/patches.py"

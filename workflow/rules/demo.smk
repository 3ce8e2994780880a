# The synthetic campaign: every sheet row whose path lies under config["demo"]["dir"] is generated.


rule demo_campaign:
    output:
        stacks=[demo_samples()["path"].tolist()],
        truths=[demo_samples()["ground_truth"].dropna().tolist()],
        psf=f"{DEMO_DIR}/true_psf.ome.tif",
    log:
        "logs/demo_campaign.log",
    conda:
        "../../envs/cycledecon.yaml"
    params:
        settings=config["demo"],
        widefield={
            r["sample"]: (r["path"], r["ground_truth"])
            for _, r in demo_samples().iterrows()
            if r["role"] == "widefield"
        },
        references={
            r["sample"]: r["path"]
            for _, r in demo_samples().iterrows()
            if r["role"] == "reference"
        },
    script:
        "../scripts/demo_campaign.py"

# The synthetic campaign: every sheet row whose path lies under the demo section's dir is generated.
# Without a demo section in the config there is no such row (common.smk checks) and no rule.


if DEMO_DIR is not None:

    rule demo:
        output:
            stacks=[demo_samples()["path"].tolist()],
            truths=[demo_samples()["ground_truth"].dropna().tolist()],
            psf=f"{DEMO_DIR}/true_psf.ome.tif",
        log:
            "logs/demo.log",
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
            "../scripts/demo.py"

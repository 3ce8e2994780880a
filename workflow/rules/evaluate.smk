# Baselines, metrics and figures of every campaign, and the text summary for the report.


rule baselines:
    input:
        raw="results/zarr/{sample}.ome.zarr",
        learned_psf=lambda wc: (
            f"results/models/{sample_row(wc.sample)['campaign']}/learned_psf.ome.tif"
            if wc.psf == "learned"
            else []
        ),
    output:
        zarr=directory("results/baselines/{sample}/rl_{psf}.ome.zarr"),
    log:
        "logs/baselines/{sample}_{psf}.log",
    wildcard_constraints:
        psf="theoretical|learned",
    conda:
        "../../envs/cycledecon.yaml"
    resources:
        mem_mb=4000,
    params:
        optics=lambda wc: campaign_optics(samples, sample_row(wc.sample)["campaign"]),
        psf_shape=WORKFLOW.evaluate.theoretical_psf_shape,
        iterations=WORKFLOW.evaluate.rl_iterations,
    script:
        "../scripts/baselines.py"


rule figures:
    input:
        unpack(method_inputs),
    output:
        slices=report(
            "results/figures/{sample}_slices.png",
            caption="../report/slices.rst",
            category="Results",
            subcategory="{sample}",
            labels={"sample": "{sample}", "figure": "orthogonal slices"},
        ),
        profile=report(
            "results/figures/{sample}_profile.png",
            caption="../report/profile.rst",
            category="Results",
            subcategory="{sample}",
            labels={"sample": "{sample}", "figure": "line profile"},
        ),
    log:
        "logs/figures/{sample}.log",
    conda:
        "../../envs/cycledecon.yaml"
    params:
        methods=method_names,
    script:
        "../scripts/figures.py"


rule evaluate:
    input:
        unpack(campaign_evaluation_inputs),
    output:
        metrics=report(
            "results/metrics/{campaign}.csv",
            caption="../report/metrics.rst",
            category="Metrics",
            labels={"campaign": "{campaign}", "table": "image quality"},
        ),
        psf=report(
            "results/metrics/{campaign}_psf.csv",
            caption="../report/psf_metrics.rst",
            category="Metrics",
            labels={"campaign": "{campaign}", "table": "PSF"},
        ),
        psf_figure=report(
            "results/figures/{campaign}_psf.png",
            caption="../report/psf_figure.rst",
            category="Metrics",
            labels={"campaign": "{campaign}", "table": "PSF slices"},
        ),
    log:
        "logs/evaluate/{campaign}.log",
    conda:
        "../../envs/cycledecon.yaml"
    resources:
        mem_mb=4000,
    params:
        samples=lambda wc: {
            s: method_paths(s) for s in campaign_samples(wc.campaign, "widefield")
        },
        optics=lambda wc: campaign_optics(samples, wc.campaign),
        psf_shape=WORKFLOW.evaluate.theoretical_psf_shape,
        true_psf_voxel_size=lambda wc: true_psf(wc.campaign)[1],
    script:
        "../scripts/evaluate.py"


rule summary:
    input:
        metrics=expand("results/metrics/{campaign}.csv", campaign=campaigns()),
        psf=expand("results/metrics/{campaign}_psf.csv", campaign=campaigns()),
        learned_psf=expand(
            "results/models/{campaign}/learned_psf.ome.tif", campaign=campaigns()
        ),
    output:
        summary="results/summary.md",
        page=report(
            "results/summary.html",
            caption="../report/summary.rst",
            category="Metrics",
            labels={"campaign": "all", "table": "summary: metrics and PSF tables"},
        ),
    log:
        "logs/summary.log",
    conda:
        "../../envs/cycledecon.yaml"
    params:
        optics=[campaign_optics(samples, c) for c in campaigns()],
    script:
        "../scripts/summary.py"

# One model per campaign; GPU when present. A killed job resumes from results/models/{campaign}/checkpoint.pt.


rule train:
    input:
        unpack(reference_psf),
        patches="results/patches/{campaign}/patches.zarr",
    output:
        model="results/models/{campaign}/model.pt",
        psf="results/models/{campaign}/learned_psf.ome.tif",
        log_csv="results/models/{campaign}/train_log.csv",
        curves=report(
            "results/models/{campaign}/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="Training",
            subcategory="{campaign}",
        ),
        psf_figure=report(
            "results/models/{campaign}/psf.png",
            caption="../report/psf.rst",
            category="Training",
            subcategory="{campaign}",
        ),
    log:
        "logs/train/{campaign}.log",
    conda:
        "../../envs/cycledecon.yaml"
    threads: 2
    resources:
        mem_mb=8000,
    params:
        # train writes every output above, and its checkpoint, into the model's folder
        model_dir=subpath(output.model, parent=True),
        train_config=config.get("train") or {},
        true_psf_voxel_size=lambda wc: true_psf(wc.campaign)[1],
    script:
        "../scripts/train.py"

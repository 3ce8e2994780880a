# cycledecon: blind deconvolution of 3D widefield stacks with a cycle-consistent CNN and a PSF layer.
# The stages and their outputs are described in README.md and DESIGN.md.


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/normalize.smk"
include: "workflow/rules/patches.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/deconvolve.smk"
include: "workflow/rules/evaluate.smk"


localrules:
    all,
    summary,


rule all:
    default_target: True
    input:
        all_outputs(),

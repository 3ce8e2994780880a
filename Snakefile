# cycledecon: blind deconvolution of 3D widefield stacks with a cycle-consistent CNN and a PSF layer.
# The stages and their outputs are described in README.md and ../shared/DESIGN.md.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/ingest.smk"


rule all:
    default_target: True
    input:
        all_outputs(),

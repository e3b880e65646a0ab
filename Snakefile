# phase-energy: per-phase GPU energy of LLM inference under power caps and SM clock locks.
# The workflow only declares; logic lives in workflow/rules/common.smk and the phase_energy package.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/config.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/energy.smk"
include: "workflow/rules/pareto.smk"
include: "workflow/rules/classes.smk"
include: "workflow/rules/crossover.smk"
include: "workflow/rules/phase_policy.smk"
include: "workflow/rules/sweetspot.smk"
include: "workflow/rules/clear.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),

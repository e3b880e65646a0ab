# Each claim of the paper as a predicate over the result tables, with evidence and a verdict.


rule claims:
    input:
        phases=get_table("phase_energy"),
        windows=get_table("windows"),
        dominance=f"{TABLES}/dominance.csv",
        classes=f"{TABLES}/dvfs_classes.csv",
        policy=f"{TABLES}/clock_policy.csv",
        fleet=f"{TABLES}/fleet.csv",
        crossovers=f"{TABLES}/crossovers.csv",
        request=get_table("request_energy"),
        sweetspot=f"{TABLES}/sweetspot_fit.csv",
        sweetspot_cells=get_table("sweetspot_cells"),
        clear_components=f"{TABLES}/clear_components.csv",
        clear_coverage=f"{TABLES}/clear_coverage.csv",
    output:
        claims=report(
            "results/claims.csv", caption="../report/claims.rst", category="Claims"
        ),
        sensitivity=report(
            f"{TABLES}/claims_sensitivity.csv",
            caption="../report/claims_sensitivity.rst",
            category="Claims",
        ),
    log:
        "logs/analysis/claims.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config=ANALYSIS_CONFIG,
        outdir=get_output_dir,
    shell:
        "phase-energy analyse claims --config {params.config:q} --outdir {params.outdir:q} > {log:q} 2>&1"

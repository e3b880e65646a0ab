# Pareto frontiers over levers (throughput vs energy per token) and the caps-vs-locks dominance test.


rule pareto:
    input:
        phase_trials=get_table("phase_trials"),
        config=ANALYSIS_CONFIG,
    output:
        pareto=get_table("pareto"),
        dominance=get_table("dominance"),
    log:
        f"{LOGS}/analysis/pareto.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        tables=get_table_args,
    shell:
        "phase-energy analyse pareto --config {input.config:q} {params.tables} > {log:q} 2>&1"

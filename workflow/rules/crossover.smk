# Total request energy relative to GQA over output length and context, and the crossover points.


rule crossover:
    input:
        windows=get_table("windows"),
        phase_trials=get_table("phase_trials"),
        config=ANALYSIS_CONFIG,
    output:
        request_energy=get_table("request_energy"),
        crossovers=get_table("crossovers"),
    log:
        f"{LOGS}/analysis/crossover.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        tables=get_table_args,
    shell:
        "phase-energy analyse crossover --config {input.config:q} {params.tables} > {log:q} 2>&1"

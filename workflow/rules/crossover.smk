# Total request energy relative to GQA over output length and context, and the crossover points.


rule crossover:
    input:
        windows=get_table("windows"),
        trials=get_table("phase_trials"),
    output:
        request=get_table("request_energy"),
        crossovers=f"{TABLES}/crossovers.csv",
    log:
        "logs/analysis/crossover.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config=ANALYSIS_CONFIG,
        outdir=get_output_dir,
    shell:
        "phase-energy analyse crossover --config {params.config:q} --outdir {params.outdir:q} > {log:q} 2>&1"

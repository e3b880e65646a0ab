# Pareto frontiers over levers (throughput vs energy per token) and the caps-vs-locks dominance test.


rule pareto:
    input:
        trials=get_table("phase_trials"),
        phases=get_table("phase_energy"),
    output:
        frontier=get_table("pareto"),
        dominance=f"{TABLES}/dominance.csv",
    log:
        "logs/analysis/pareto.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config=ANALYSIS_CONFIG,
        outdir=get_output_dir,
    shell:
        "phase-energy analyse pareto --config {params.config:q} --outdir {params.outdir:q} > {log:q} 2>&1"

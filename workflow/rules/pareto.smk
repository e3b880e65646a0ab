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
    run:
        analyse("pareto", input, output, log)

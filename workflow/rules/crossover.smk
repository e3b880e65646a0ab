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
    run:
        analyse("crossover", input, output, log)

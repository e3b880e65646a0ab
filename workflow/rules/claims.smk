# Each claim (the papers' and this project's own) as a predicate over the result tables.


rule claims:
    input:
        windows=get_table("windows"),
        phase_trials=get_table("phase_trials"),
        phase_energy=get_table("phase_energy"),
        dominance=get_table("dominance"),
        dvfs_classes=get_table("dvfs_classes"),
        clock_policy=get_table("clock_policy"),
        fleet=get_table("fleet"),
        crossovers=get_table("crossovers"),
        request_energy=get_table("request_energy"),
        sweetspot_fit=get_table("sweetspot_fit"),
        sweetspot_cells=get_table("sweetspot_cells"),
        clear_components=get_table("clear_components"),
        clear_coverage=get_table("clear_coverage"),
        phase_pairs=get_table("phase_pairs"),
        phase_policy=get_table("phase_policy"),
        config=ANALYSIS_CONFIG,
    output:
        claims=report(
            get_table("claims"), caption="../report/claims.rst", category="Claims"
        ),
        claims_sensitivity=report(
            get_table("claims_sensitivity"),
            caption="../report/claims_sensitivity.rst",
            category="Claims",
        ),
    log:
        f"{LOGS}/analysis/claims.log",
    run:
        analyse("claims", input, output, log)

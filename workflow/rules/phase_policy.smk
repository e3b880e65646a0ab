# The phase policy: a lever for prefill and another for decode, from single-lever traces and the switch cost.


rule phase_policy:
    input:
        windows=get_table("windows"),
        phase_trials=get_table("phase_trials"),
        config=ANALYSIS_CONFIG,
    output:
        phase_pairs=get_table("phase_pairs"),
        phase_policy=get_table("phase_policy"),
    log:
        f"{LOGS}/analysis/phase_policy.log",
    run:
        analyse("phase_policy", input, output, log)

# Per-window and per-phase energy of every job: the table every later stage reads.


rule energy:
    input:
        status=get_trace_status_files(),
        config=ANALYSIS_CONFIG,
    output:
        windows=get_table("windows"),
        phase_trials=get_table("phase_trials"),
        phase_energy=get_table("phase_energy"),
        phase_energy_csv=report(
            get_table("phase_energy_csv"),
            caption="../report/phase_energy.rst",
            category="Provenance and validity",
        ),
        jobs=report(
            get_table("jobs"),
            caption="../report/jobs.rst",
            category="Provenance and validity",
        ),
    log:
        f"{LOGS}/analysis/energy.log",
    params:
        traces=get_trace_folders(),
    run:
        analyse("energy", input, output, log, params.traces)

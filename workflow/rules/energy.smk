# Per-window and per-phase energy of every job: the table every later stage reads.


rule energy:
    input:
        status=get_trace_status_files(),
    output:
        windows=get_table("windows"),
        trials=get_table("phase_trials"),
        phases=get_table("phase_energy"),
        csv=f"{TABLES}/phase_energy.csv",
        jobs=f"{TABLES}/jobs.csv",
    log:
        "logs/analysis/energy.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config=ANALYSIS_CONFIG,
        outdir=get_output_dir,
    shell:
        "phase-energy analyse energy --config {params.config} --outdir {params.outdir} > {log} 2>&1"

# Per-window and per-phase energy of every job: the table every later stage reads.


rule energy:
    input:
        status=get_trace_status_files(),
    output:
        windows=get_table("windows"),
        trials=get_table("phase_trials"),
        phases=get_table("phase_energy"),
        csv=report(
            f"{TABLES}/phase_energy.csv",
            caption="../report/phase_energy.rst",
            category="Provenance and validity",
        ),
        jobs=report(
            f"{TABLES}/jobs.csv",
            caption="../report/jobs.rst",
            category="Provenance and validity",
        ),
    log:
        "logs/analysis/energy.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config=ANALYSIS_CONFIG,
        outdir=get_output_dir,
    shell:
        "phase-energy analyse energy --config {params.config:q} --outdir {params.outdir:q} > {log:q} 2>&1"

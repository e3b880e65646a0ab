# DVFS behaviour classes, the clock policy table and the fleet projection.


rule classes:
    input:
        trials=get_table("phase_trials"),
        phases=get_table("phase_energy"),
    output:
        classes=f"{TABLES}/dvfs_classes.csv",
        curves=get_table("dvfs_curves"),
        policy=f"{TABLES}/clock_policy.csv",
        fleet=f"{TABLES}/fleet.csv",
    log:
        "logs/analysis/classes.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config=ANALYSIS_CONFIG,
        outdir=get_output_dir,
    shell:
        "phase-energy analyse classes --config {params.config:q} --outdir {params.outdir:q} > {log:q} 2>&1"

# DVFS behaviour classes, the clock policy table and the fleet projection.


rule classes:
    input:
        phase_trials=get_table("phase_trials"),
        config=ANALYSIS_CONFIG,
    output:
        dvfs_classes=get_table("dvfs_classes"),
        dvfs_curves=get_table("dvfs_curves"),
        clock_policy=get_table("clock_policy"),
        fleet=get_table("fleet"),
    log:
        f"{LOGS}/analysis/classes.log",
    run:
        analyse("classes", input, output, log)

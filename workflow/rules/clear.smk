# CLEAR: component-level energy by repeated sampling (one GPU job per architecture, batch and repetition).


rule clear_measure:
    input:
        config=CLEAR_CONFIG,
    output:
        components=f"{CLEAR_MEASURED}/{CLEAR_POINT}/components.parquet",
        samples=f"{CLEAR_MEASURED}/{CLEAR_POINT}/samples.parquet",
        metadata=f"{CLEAR_MEASURED}/{CLEAR_POINT}/metadata.json",
        status=f"{CLEAR_MEASURED}/{CLEAR_POINT}/status.json",
    log:
        f"{LOGS}/clear/{CLEAR_POINT}.log",
    conda:
        "../../envs/measure.yaml"
    resources:
        gpu=get_gpu_count,
    params:
        out=get_output_dir,
    shell:
        "phase-energy clear --config {input.config:q} --arch {wildcards.arch} --batch {wildcards.bs}"
        " --rep {wildcards.rep} --out {params.out:q} > {log:q} 2>&1"


rule clear_components:
    input:
        status=get_clear_status_files(),
        config=ANALYSIS_CONFIG,
    output:
        clear_components=report(
            get_table("clear_components"),
            caption="../report/clear_components.rst",
            category="CLEAR",
        ),
        clear_coverage=get_table("clear_coverage"),
    log:
        f"{LOGS}/analysis/clear.log",
    params:
        traces=CLEAR_PRESENT,
    run:
        analyse("clear", input, output, log, params.traces)

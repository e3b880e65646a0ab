# CLEAR: component-level energy by repeated sampling (one GPU job per architecture and batch).


rule clear_measure:
    output:
        components=f"{CLEAR_MEASURED}/{CLEAR_POINT}/components.parquet",
        samples=f"{CLEAR_MEASURED}/{CLEAR_POINT}/samples.parquet",
        metadata=f"{CLEAR_MEASURED}/{CLEAR_POINT}/metadata.json",
        status=f"{CLEAR_MEASURED}/{CLEAR_POINT}/status.json",
    log:
        f"logs/clear/{CLEAR_POINT}.log",
    conda:
        "../../envs/measure.yaml"
    resources:
        gpu=get_gpu_count,
    params:
        config=CLEAR_CONFIG,
        out=get_output_dir,
    shell:
        "phase-energy clear --config {params.config:q} --arch {wildcards.arch} --batch {wildcards.bs}"
        " --rep {wildcards.rep}"
        " --out {params.out:q} > {log:q} 2>&1"


rule clear_components:
    input:
        status=get_clear_status_files(),
    output:
        components=report(
            f"{TABLES}/clear_components.csv",
            caption="../report/clear_components.rst",
            category="CLEAR",
        ),
        coverage=f"{TABLES}/clear_coverage.csv",
    log:
        "logs/analysis/clear.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config=ANALYSIS_CONFIG,
        outdir=get_output_dir,
    shell:
        "phase-energy analyse clear --config {params.config:q} --outdir {params.outdir:q} > {log:q} 2>&1"

# SweetSpot: tokens per joule over input x output length and the analytical model of request energy.


rule sweetspot:
    input:
        request=get_table("request_energy"),
    output:
        cells=get_table("sweetspot_cells"),
        fit=report(
            f"{TABLES}/sweetspot_fit.csv",
            caption="../report/sweetspot_fit.rst",
            category="SweetSpot",
        ),
    log:
        "logs/analysis/sweetspot.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config=ANALYSIS_CONFIG,
        outdir=get_output_dir,
    shell:
        "phase-energy analyse sweetspot --config {params.config:q} --outdir {params.outdir:q} > {log:q} 2>&1"

# SweetSpot: tokens per joule over input x output length and the analytical model of request energy.


rule sweetspot:
    input:
        request_energy=get_table("request_energy"),
        config=ANALYSIS_CONFIG,
    output:
        sweetspot_cells=get_table("sweetspot_cells"),
        sweetspot_fit=report(
            get_table("sweetspot_fit"),
            caption="../report/sweetspot_fit.rst",
            category="SweetSpot",
        ),
    log:
        f"{LOGS}/analysis/sweetspot.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        tables=get_table_args,
    shell:
        "phase-energy analyse sweetspot --config {input.config:q} {params.tables} > {log:q} 2>&1"

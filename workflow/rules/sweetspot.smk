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
    run:
        analyse("sweetspot", input, output, log)

# Every figure, from the result tables only; a change to the plotting code re-runs only the plots.


rule figures:
    input:
        get_figure_outputs(),


for _fig, _meta in phase_energy.figures.FIGURES.items():

    rule:
        name:
            f"figure_{_fig}"
        input:
            tables=[
                get_table("phase_energy"),
                get_table("windows"),
                get_table("pareto"),
                get_table("dvfs_curves"),
                get_table("request_energy"),
                f"{TABLES}/dvfs_classes.csv",
                f"{TABLES}/clock_policy.csv",
                f"{TABLES}/crossovers.csv",
                f"{TABLES}/sweetspot_fit.csv",
                get_table("sweetspot_cells"),
                f"{TABLES}/clear_components.csv",
                f"{TABLES}/clear_coverage.csv",
                "results/claims.csv",
            ],
            code=FIGURE_CODE,
        output:
            png=report(
                f"figures/{_fig}.png",
                caption=f"../report/{_fig}.rst",
                category=_meta["category"],
            ),
            svg=f"figures/{_fig}.svg",
        log:
            f"logs/figures/{_fig}.log",
        conda:
            "../../envs/analysis.yaml"
        params:
            config=ANALYSIS_CONFIG,
            tables=get_tables_dir,
            name=_fig,
            traces=TRACES,
        shell:
            "phase-energy figure {params.name} --config {params.config:q} --tables {params.tables:q}"
            " --traces {params.traces:q} --out figures/{params.name} > {log:q} 2>&1"

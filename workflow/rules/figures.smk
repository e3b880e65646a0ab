# Every figure, from the tables it draws only; a change to the plotting code re-runs only the plots.
from phase_energy.report.catalog import run_mark

# what the traces are (SIMULATED, or MEASURED on which card with which engine), for the report's landing text
config["run_mark"] = run_mark(get_trace_status_files())


rule figures:
    input:
        get_figure_outputs(),


for _fig, _spec in FIGURES.items():

    rule:
        name:
            f"figure_{_fig}"
        input:
            unpack(get_figure_inputs(_fig)),
        output:
            png=report(
                f"{FIGURES_DIR}/{_fig}.png",
                caption=f"../report/{_fig}.rst",
                category=_spec.category,
            ),
            svg=f"{FIGURES_DIR}/{_fig}.svg",
        log:
            f"logs/figures/{_fig}.log",
        conda:
            "../../envs/analysis.yaml"
        params:
            tables=get_table_args,
            name=_fig,
            out=lambda w, output: output.svg.removesuffix(".svg"),
            traces=TRACES,
        shell:
            "phase-energy figure {params.name} --config {input.config:q} {params.tables}"
            " --traces {params.traces:q} --out {params.out:q} > {log:q} 2>&1"

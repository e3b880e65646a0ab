# Every figure, from the tables it draws only; a change to the plotting code re-runs only the plots. The figures
# are drawn in three jobs, each as soon as its tables exist, inside the workflow's process or its workers.
from phase_energy.report.catalog import figure_batches, run_mark

# what the traces are (SIMULATED, or MEASURED on which card with which engine), for the report's landing text
config["run_mark"] = run_mark(get_trace_status_files())


rule figures:
    input:
        get_figure_outputs(),


for _job, _names in figure_batches().items():

    rule:
        name:
            f"figure_{_job}"
        input:
            unpack(get_figure_inputs(_names)),
        output:
            **get_figure_job_outputs(_names),
        log:
            f"{LOGS}/figures/{_job}.log",
        run:
            draw_figures(input, output, log)

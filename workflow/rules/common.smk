# Config validation, the experiment grid and the input functions of every rule.
# Parsing imports no plotting or table library and writes no file: the config parts a job reads are
# written by rule config_file (below), the figures' tables come from a light catalog.
import json
import os
from importlib.util import find_spec
from pathlib import Path

from phase_energy.analysis.tables import TABLES
from phase_energy.config import (
    MEASURE_KEYS,
    ConfigError,
    check_run_identity,
    config_hash,
    logs_folder,
    results_folder,
    validate_config,
    write_run_identity,
)
from phase_energy.grid import ClearPoint, GridPoint, clear_points, expand_grid
from phase_energy.measure.layout import TraceError, select_points
from phase_energy.model.presets import get_preset
from phase_energy.report.progress import report_command, set_results_folder


def run_simulated(*args):
    """A simulated measurement job in this process or its workers (phase_energy.measure.workers)."""
    from phase_energy.measure.workers import run_simulated as run

    return run(*args)


def run_phase_energy(argv, log):
    """`phase-energy ARGV` (an analysis or figure job) in this process or its workers, its records to log.

    The same command as on the command line, without a Python start and the imports of pandas and
    matplotlib for each job (phase_energy.measure.workers); on a cluster, in the thread of the job's own
    Snakemake process on its node (which may count the node's every core: no pool of workers there).
    """
    from phase_energy.measure.workers import run_command

    alone = workflow.remote_exec or workflow.subprocess_exec
    run_command(argv, log, 1 if alone else workflow.cores, f"{LOGS}/workers")


def analyse(stage, input, output, log, traces=()):
    """Run one analysis stage with its rule's tables and config (phase-energy analyse STAGE)."""
    argv = ["analyse", stage, "--config", input.config, *table_args(input, output)]
    run_phase_energy(argv + (["--traces", *traces] if traces else []), log[0])


from phase_energy.report.catalog import FIGURES

try:
    _validated = validate_config(config)
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None
config.clear()
config.update(_validated)

RESULTS = config["results"].rstrip("/")
# the console's summary says where this run's results are and how to build its report
set_results_folder(
    RESULTS,
    report_command(
        RESULTS,
        [os.path.relpath(str(f)) for f in workflow.config_settings.configfiles],
        dict(workflow.config_settings.config),
    ),
)
MEASURED_TRACES = f"{RESULTS}/traces"
# the jobs' logs: logs/ for the default results folder, <results>/logs for another
LOGS = logs_folder(RESULTS)
TRACES = results_folder(config["traces"], "results/traces", RESULTS)
FIGURES_DIR = "figures" if RESULTS == "results" else f"{RESULTS}/figures"
# Which config files and traces this results folder belongs to; written when a run starts (not in a dry
# run), checked here: a second config's tables, claims and figures must not replace the first one's.
RUN_IDENTITY = {
    "configfiles": sorted({os.path.relpath(str(f)) for f in workflow.configfiles}),
    "traces": TRACES,
}
try:
    check_run_identity(RESULTS, RUN_IDENTITY)
except ConfigError as e:
    raise WorkflowError(str(e)) from None
FULL_GRID = list(expand_grid(config))
try:
    # cached traces: nothing is measured, points the folder lacks are left out; a measured trace that is
    # damaged is moved aside (the one case where parsing touches a file) and measured again
    GRID = select_points(TRACES, MEASURED_TRACES, FULL_GRID)
except TraceError as e:  # TraceLayoutError is one
    raise WorkflowError(str(e)) from None
if len(GRID) < len(FULL_GRID):
    _missing = [p for p in FULL_GRID if p not in set(GRID)]
    logger.warning(
        f"{len(_missing)} of {len(FULL_GRID)} grid points are not in {TRACES}; "
        f"the analysis leaves them out (first: {_missing[0].path})"
    )
# the plotting code: a change to any of it redraws the figures (and nothing else)
FIGURE_CODE = [
    find_spec(f"phase_energy.report.{m}").origin
    for m in (
        "figures",
        "figbase",
        "headline",
        "policy_figure",
        "weights_figure",
        "style",
    )
]


def _simulated_here():
    """Whether measurement jobs run on the simulator: backend sim, or auto where no GPU is visible.

    `auto` is decided here only when the jobs run on this machine (a cluster executor takes --jobs); on a
    cluster each job resolves it on its node, as a GPU job.
    """
    if config["backend"] == "sim":
        return True
    if config["backend"] == "auto" and workflow.resource_settings.nodes is None:
        from phase_energy.measure.backend import nvidia_gpu_visible

        return not nvidia_gpu_visible()
    return False


# Simulated jobs run inside the workflow's process (threads, with the local profile's force-use-threads):
# no Python start for each of thousands of points. A GPU job keeps its own process.
SIMULATED = _simulated_here()

CONFIG_TEXTS = {}


def config_part(name, keys=None, **extra):
    """Path of a JSON of (part of) the config, named by its content; rule config_file writes it."""
    part = {k: config[k] for k in keys} if keys else dict(config)
    part.update(extra)
    stem = f"{name}-{config_hash(part)}"
    CONFIG_TEXTS[stem] = json.dumps(part, indent=1, sort_keys=True)
    return f"{RESULTS}/config/{stem}.json"


MEASURE_CONFIG = config_part("measure", MEASURE_KEYS)
ANALYSIS_CONFIG = config_part("analysis")
# CLEAR jobs depend on its settings, not on which architectures and batches are listed
CLEAR_CONFIG = config_part(
    "clear",
    MEASURE_KEYS,
    clear={
        k: v
        for k, v in config["clear"].items()
        if k not in ("architectures", "batch_sizes")
    },
)
CLEAR_MEASURED = f"{RESULTS}/clear"
CLEAR_TRACES = results_folder(config["clear"]["traces"], "results/clear", RESULTS)
CLEAR_FOLDERS = [f"{CLEAR_TRACES}/{p.path}" for p in clear_points(config)]
CLEAR_PRESENT = CLEAR_FOLDERS
if CLEAR_TRACES != CLEAR_MEASURED:
    CLEAR_PRESENT = [f for f in CLEAR_FOLDERS if Path(f, "status.json").exists()]
    if len(CLEAR_PRESENT) < len(CLEAR_FOLDERS):
        logger.warning(
            f"CLEAR: {len(CLEAR_FOLDERS) - len(CLEAR_PRESENT)} of {len(CLEAR_FOLDERS)} points are not in "
            f"{CLEAR_TRACES}; left out"
        )


wildcard_constraints:
    **GridPoint.WILDCARDS,


POINT = GridPoint.PATTERN
CLEAR_POINT = ClearPoint.PATTERN


def get_gpu_count(wildcards):
    """GPUs a measurement job holds: its architecture's (tensor parallel), none on the simulator.

    The local profile's ``gpu`` resource counts them; on SLURM this becomes ``--gpus=N``.
    """
    return 0 if SIMULATED else get_preset(wildcards.arch).gpus


def get_slurm_extra(wildcards):
    """sbatch flags of a job: --gpu-freq for an SM clock lock when the cluster applies clocks."""
    lever = GridPoint.from_wildcards(wildcards).setting
    if config["cluster"]["gpu_freq_for_smclock"] and lever.kind == "smclock":
        return f"--gpu-freq={lever.value}"
    return ""


def get_lever(wildcards):
    """The lever of a job as the CLI takes it (powercap-400 -> powercap:400)."""
    return GridPoint.from_wildcards(wildcards).lever


def get_config_text(wildcards):
    """The JSON text of a config part (rule config_file)."""
    return CONFIG_TEXTS[wildcards.name]


def get_trace_status_files(wildcards=None):
    """status.json of every grid point, in the traces folder (measured or cached)."""
    return [f"{TRACES}/{p.path}/status.json" for p in GRID]


def get_trace_folders(wildcards=None):
    """Every point's trace folder, present or not (the energy stage lists absent cached ones as missing)."""
    return [f"{TRACES}/{p.path}" for p in FULL_GRID]


def get_clear_status_files(wildcards=None):
    """status.json of every CLEAR point (architecture x batch x repetition), measured or cached."""
    return [f"{f}/status.json" for f in CLEAR_PRESENT]


def get_output_dir(wildcards, output):
    """Folder of a rule's first output (where a measurement job writes its trace)."""
    return Path(output[0]).parent


def get_table(name):
    """Path of one result table (phase_energy.analysis.tables)."""
    return f"{RESULTS}/{TABLES[name].path}"


def table_args(input, output):
    """--in NAME=PATH for every table a rule reads and --out NAME=PATH for every table it writes."""
    args = [a for k, v in input.items() if k in TABLES for a in ("--in", f"{k}={v}")]
    return args + [
        a for k, v in output.items() if k in TABLES for a in ("--out", f"{k}={v}")
    ]


def get_figure_inputs(names):
    """The input function of a figure job: the tables its figures draw, their code and config.

    A figure that reads a trace too (fig01) is not given the traces' status files as inputs: like every
    figure it draws the energy table, which the energy job makes from every trace, so a trace measured again
    makes the figure again. Thousands of inputs would cost Snakemake seconds of its own (it checksums every input
    once per output when the job ends, 18 outputs here).
    """
    specs = [FIGURES[n] for n in names]

    def inputs(wildcards):
        out = {t: get_table(t) for spec in specs for t in spec.tables}
        out["code"] = FIGURE_CODE
        out["config"] = ANALYSIS_CONFIG
        return out

    return inputs


def get_run_banner():
    """What this run will do, said once when it starts (not in a dry run)."""
    from phase_energy.measure.job import point_skip_reason
    from phase_energy.report.progress import run_banner

    backend = "sim" if SIMULATED else "nvml"
    if config["backend"] == "sim":
        why = "set in the config"
    elif SIMULATED:
        why = "no NVIDIA GPU visible: SIMULATED results"
    else:
        why = (
            "a real GPU"
            if config["backend"] == "nvml"
            else "NVIDIA GPU visible or on the cluster"
        )
    if TRACES != MEASURED_TRACES:  # cached traces: read, never measured
        return run_banner(len(GRID), backend, why, [], TRACES, MEASURED_TRACES)
    reasons = [point_skip_reason(config, p, backend) for p in GRID]
    traced = sum(
        os.path.exists(f"{MEASURED_TRACES}/{p.path}/status.json") for p in GRID
    )
    return run_banner(len(GRID), backend, why, reasons, TRACES, MEASURED_TRACES, traced)


def get_figure_job_outputs(names):
    """Named outputs of a figure job: each figure's PNG (in the report, with its caption) and SVG."""
    out = {}
    for n in names:
        out[f"{n}_png"] = report(
            f"{FIGURES_DIR}/{n}.png",
            caption=f"../report/{n}.rst",
            category=FIGURES[n].category,
        )
        out[f"{n}_svg"] = f"{FIGURES_DIR}/{n}.svg"
    return out


def draw_figures(input, output, log):
    """Draw a figure job's figures (phase-energy figure NAME... --out PATH...) from its tables."""
    names = [k.removesuffix("_svg") for k in output.keys() if k.endswith("_svg")]
    outs = [getattr(output, f"{n}_svg").removesuffix(".svg") for n in names]
    argv = ["figure", *names, *[a for o in outs for a in ("--out", o)]]
    argv += ["--config", input.config, *table_args(input, output), "--traces", TRACES]
    run_phase_energy(argv, log[0])


def get_figure_outputs():
    """PNG and SVG of every figure."""
    return [f"{FIGURES_DIR}/{name}.{ext}" for name in FIGURES for ext in ("png", "svg")]


def get_final_outputs():
    """Everything `snakemake` builds by default: traces, tables, claims and figures.

    The traces are targets themselves, so that one moved aside as damaged is measured again (and the
    tables after it) even when the tables are newer than the other traces.
    """
    return [
        *get_trace_status_files(),
        get_table("phase_energy"),
        get_table("claims"),
        get_table("phase_policy"),
        *get_figure_outputs(),
    ]


onstart:
    write_run_identity(RESULTS, RUN_IDENTITY)
    logger.info(get_run_banner())
    # Snakemake 9 arms another 1-s re-evaluation timer in every scheduling round while its job rate limiter
    # (--max-jobs-per-timespan, default 100/1s) is on, and each timer starts a round that arms the next:
    # the rounds per second grow with the jobs finished, each round looks at every ready job, and a
    # local run of thousands of short jobs slows quadratically (bench/sim-default-grid.json). The limiter
    # throttles submissions to a cluster; a local run needs none, so it is switched off there.
    if (
        workflow.local_exec
        and getattr(workflow.scheduler, "job_rate_limiter", None) is not None
    ):
        workflow.scheduler.job_rate_limiter = None

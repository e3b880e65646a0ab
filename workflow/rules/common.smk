# Config validation, the experiment grid and the input functions of every rule.
import json
from pathlib import Path

import phase_energy.figures
from phase_energy.config import ConfigError, expand_grid, validate_config
from phase_energy.config import config_hash as _config_hash
from phase_energy.trace import TraceError, select_points

try:
    _validated = validate_config(config)
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None
config.clear()
config.update(_validated)

TRACES = config["traces"].rstrip("/")
MEASURED_TRACES = "results/traces"
_FULL_GRID = list(expand_grid(config))
try:
    # cached traces: nothing is measured, points the folder lacks are left out; measured traces that are
    # damaged are moved aside and measured again
    GRID = select_points(TRACES, MEASURED_TRACES, _FULL_GRID)
except TraceError as e:  # TraceLayoutError is one
    raise WorkflowError(str(e)) from None
if len(GRID) < len(_FULL_GRID):
    _missing = [p for p in _FULL_GRID if p not in set(GRID)]
    logger.warning(
        f"{len(_missing)} of {len(_FULL_GRID)} grid points are not in {TRACES}; "
        f"the analysis leaves them out (first: {_missing[0].path})"
    )
TABLES = "results/tables"
FIGURES = list(phase_energy.figures.FIGURES)
FIGURE_CODE = Path(phase_energy.figures.__file__)

# Keys a measurement job depends on; a change to the grid alone reruns no measurement.
MEASURE_KEYS = (
    "output_lengths",
    "measurement",
    "backend",
    "vllm",
    "allow_gpu_settings",
    "seed",
    "sim",
    "gpu",
)


def _write_config(keys=None, **extra):
    """Write (once) a content-addressed JSON of the config, for rules to read; return its path."""
    part = {k: config[k] for k in keys} if keys else config
    part = {**part, **extra}
    path = Path("results/config") / f"{_config_hash(part)}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(part, indent=1, sort_keys=True))
    return str(path)


MEASURE_CONFIG = _write_config(MEASURE_KEYS)
ANALYSIS_CONFIG = _write_config()
# CLEAR jobs depend on its settings, not on which architectures and batches are listed
CLEAR_CONFIG = _write_config(
    MEASURE_KEYS,
    clear={
        k: v
        for k, v in config["clear"].items()
        if k not in ("architectures", "batch_sizes")
    },
)
CLEAR_MEASURED = "results/clear"
CLEAR_TRACES = config["clear"]["traces"].rstrip("/")
CLEAR_POINT = "arch~{arch}/bs~{bs}/rep~{rep}"
CLEAR_POINTS = [
    CLEAR_POINT.format(arch=a, bs=b, rep=r)
    for a in config["clear"]["architectures"]
    for b in config["clear"]["batch_sizes"]
    for r in range(config["clear"]["repetitions"])
]
if CLEAR_TRACES != CLEAR_MEASURED:
    _absent = [
        p for p in CLEAR_POINTS if not Path(f"{CLEAR_TRACES}/{p}/status.json").exists()
    ]
    if _absent:
        logger.warning(
            f"CLEAR: {len(_absent)} of {len(CLEAR_POINTS)} points are not in {CLEAR_TRACES}; "
            f"left out (first: {_absent[0]})"
        )
    CLEAR_POINTS = [p for p in CLEAR_POINTS if p not in _absent]


wildcard_constraints:
    engine=r"native|vllm",
    arch=r"[a-z0-9][a-z0-9.\-]*",
    bs=r"\d+",
    ctx=r"\d+",
    lever=r"default|powercap-\d+|smclock-\d+",
    rep=r"\d+",


POINT = "engine~{engine}/arch~{arch}/bs~{bs}/ctx~{ctx}/lever~{lever}/rep~{rep}"


def get_gpu_count(wildcards):
    """GPUs a measurement job holds: one on a real GPU, none on the simulator."""
    return 0 if config["backend"] == "sim" else 1


def get_slurm_extra(wildcards):
    """sbatch flags of a job: --gpu-freq for an SM clock lock when the cluster applies clocks."""
    if config["cluster"]["gpu_freq_for_smclock"] and wildcards.lever.startswith(
        "smclock-"
    ):
        return f"--gpu-freq={wildcards.lever.split('-')[1]}"
    return ""


def get_lever(wildcards):
    """The lever of a job as the CLI takes it (powercap-400 -> powercap:400)."""
    return wildcards.lever.replace("-", ":", 1)


def get_trace_status_files(wildcards=None):
    """status.json of every grid point, in the traces folder (measured or cached)."""
    return [f"{TRACES}/{p.path}/status.json" for p in GRID]


def get_clear_status_files(wildcards=None):
    """status.json of every CLEAR point (architecture x batch), measured or cached."""
    return [f"{CLEAR_TRACES}/{p}/status.json" for p in CLEAR_POINTS]


def get_output_dir(wildcards, output):
    """Folder of a rule's first output (where an analysis stage writes its tables)."""
    return Path(output[0]).parent


def get_tables_dir(wildcards, input):
    """Folder of the result tables a figure reads."""
    return Path(input.tables[0]).parent


def get_table(name):
    """Path of one result table."""
    return f"{TABLES}/{name}.parquet"


def get_figure_outputs():
    """PNG and SVG of every figure."""
    return [f"figures/{name}.{ext}" for name in FIGURES for ext in ("png", "svg")]


def get_final_outputs():
    """Everything `snakemake` builds by default: traces, tables, claims and figures.

    The traces are targets themselves, so that one moved aside as damaged is measured again (and the
    tables after it) even when the tables are newer than the other traces.
    """
    return [
        *get_trace_status_files(),
        get_table("phase_energy"),
        "results/claims.csv",
        *get_figure_outputs(),
    ]

"""Command line: ``phase-energy <command>``; each workflow rule calls one command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import yaml

from phase_energy.config import ConfigError, validate_config
from phase_energy.grid import ENGINES, ClearPoint, GridPoint, expand_grid

log = logging.getLogger("phase_energy")


def read_config_file(path: str) -> dict:
    """A config file's mapping; every problem (missing, not YAML, empty, not a mapping) names the file."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot be read ({e.strerror or e})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raise ConfigError(f"config file {path}: empty; a config is a mapping of keys to values (config/README.md "
                          "lists them; every key has a default)")
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping of keys to values, found a "
                          f"{type(raw).__name__}")
    return raw


def _load(path: str | None) -> dict:
    return validate_config(read_config_file(path) if path else {})


def _setup_logging(log_file: str | None, verbose: bool) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _bytecode_cache() -> None:
    """The compile cache's bytecode folder where the interpreter writes none (a bad switch is a ConfigError)."""
    from phase_energy.engines.compiler import use_bytecode_cache

    try:
        folder = use_bytecode_cache()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if folder is not None:
        log.info("bytecode cache: %s (the interpreter writes no bytecode next to its sources)", folder)


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``; anything else is named with what is accepted."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not accepted; expected an integer >= {minimum}")
        return value
    return parse


def _seconds(positive: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, ``positive`` or any; anything else is named.

    Any: a group's time left, which may be none (no point starts then).
    """
    wanted = "a positive number of seconds" if positive else "a number of seconds"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not abs(value) < float("inf") or (positive and value <= 0):
            raise argparse.ArgumentTypeError(f"{text!r} is not accepted; expected {wanted}")
        return value
    return parse


def _lever(text: str) -> str:
    """An argparse type: a lever the grid accepts (default, powercap:<W>, smclock:<MHz>, phase:...)."""
    from phase_energy.grid import Lever, LeverError

    try:
        Lever.parse(text)
    except LeverError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _known_presets(names: list[str]) -> None:
    """A preset name that is neither built in nor a configured checkpoint's is a ConfigError naming the accepted."""
    from phase_energy.model.presets import get_preset

    for name in dict.fromkeys(names):
        try:
            get_preset(name)
        except KeyError as e:
            raise ConfigError(f"measure --arch: {e.args[0]}") from None


def cmd_measure(a: argparse.Namespace) -> int:
    """Measure one grid point (--batch, --context, --out), or several of one engine (--points, --out-root)."""
    single, group = (a.batch, a.context, a.out), (a.points, a.out_root)
    if a.points is None:
        if None in single or a.out_root is not None or a.log_dir is not None or a.time_limit_s is not None:
            raise ConfigError("measure: one point takes --batch, --context and --out; several take --points "
                              "[ARCH:]BxC,... and --out-root DIR (optionally --log-dir, --time-limit-s), not both")
        if a.arch is None:
            raise ConfigError("measure: one point takes --arch (the preset); --arch is left out only where "
                              "every item of --points is ARCH:BxC")
        from phase_energy.measure.job import run_job

        if Path(a.out).exists() and not Path(a.out).is_dir():
            raise ConfigError(f"measure --out {a.out!r} is a file; accepted: a folder (new, or a trace folder to "
                              "measure into again)")
        cfg = _load(a.config)
        _known_presets([a.arch])
        run_job(cfg, GridPoint(a.arch, a.batch, a.context, a.lever, a.rep, a.engine), a.out)
        return 0
    if None in group or any(v is not None for v in single):
        raise ConfigError("measure --points: several points take --points [ARCH:]BxC,... and --out-root DIR (each "
                          "point written under DIR/<point path>), not --batch, --context or --out")
    import time

    from phase_energy.measure.group import check_group, measure_group, parse_arch_points
    from phase_energy.measure.job import PROCESS_START

    try:
        points = [GridPoint(arch, b, c, a.lever, a.rep, a.engine) for arch, b, c in parse_arch_points(a.points, a.arch)]
        check_group(points)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cfg = _load(a.config)
    _known_presets([p.arch for p in points])
    deadline = None if a.time_limit_s is None else PROCESS_START + a.time_limit_s
    res = measure_group(cfg, points, Path(a.out_root), deadline=deadline, log_dir=a.log_dir,
                        extra={"driver": "phase-energy measure --points"})
    print(json.dumps(res.summary()))
    log.info("group done in %.0f s: %d measured, %d skipped, %d failed, %d not started, %d left for a job of "
             "its own", time.monotonic() - PROCESS_START, len(res.measured), len(res.skipped), len(res.failed),
             len(res.not_started), len(res.alone))
    return 1 if res.failed else 0


def cmd_clear(a: argparse.Namespace) -> None:
    """CLEAR: measure the components of one architecture at one batch (default lever only)."""
    from phase_energy.measure.clear import run_clear_job

    run_clear_job(_load(a.config), ClearPoint(a.arch, a.batch, a.rep), Path(a.out))


def _named_paths(items: list[str] | None, flag: str) -> dict[str, Path]:
    """``["windows=results/tables/windows.parquet", ...]`` -> ``{"windows": Path(...)}``."""
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"{flag} {item!r} is not accepted; expected NAME=PATH, e.g. "
                              f"{flag} phase_trials=results/tables/phase_trials.parquet")
        if name in out:
            raise ConfigError(f"{flag} names the table {name!r} twice ({out[name]} and {path})")
        out[name] = Path(path)
    return out


def cmd_check_config(a: argparse.Namespace) -> None:
    """Validate a config and print the grid size."""
    cfg = _load(a.config)
    n = sum(1 for _ in expand_grid(cfg))
    print(f"config ok: {n} measurement jobs ({len(cfg['architectures'])} architectures x "
          f"{len(cfg['batch_sizes'])} batch sizes x {len(cfg['contexts'])} contexts x "
          f"{len(cfg['levers'])} levers x {cfg['repetitions']} repetitions)")


def cmd_analyse(a: argparse.Namespace) -> None:
    """Run one analysis stage on the tables and traces its rule gives it."""
    from phase_energy.analysis.stages import run_stage
    from phase_energy.analysis.tables import TableError

    # a point's folder may be absent (a cached folder that lacks it), not unnamed; CLEAR's are of its own layout
    named = a.traces if a.stage == "energy" and a.traces else []
    for t in named:
        try:
            GridPoint.from_path(t)
        except ValueError as e:
            raise ConfigError(f"analyse --traces: {e}; accepted: trace folders named by their point, or their "
                              "status.json") from None
    try:
        run_stage(a.stage, _load(a.config), _named_paths(a.inputs, "--in"), _named_paths(a.outputs, "--out"),
                  [Path(t).parent if Path(t).name == "status.json" else Path(t) for t in a.traces or []])
    except TableError as e:
        raise ConfigError(str(e)) from None


def cmd_figure(a: argparse.Namespace) -> None:
    """Render figures from the tables their rule gives them."""
    from phase_energy.analysis.tables import TableError
    from phase_energy.report import figures

    if len(a.out) != len(a.name):
        raise ConfigError(f"figure: {len(a.name)} figures ({', '.join(a.name)}) but {len(a.out)} --out paths; "
                          "give one --out for each figure, in their order")
    from phase_energy.report.catalog import FIGURES

    unknown = [n for n in a.name if n not in FIGURES]
    if unknown:
        raise ConfigError(f"figure: {', '.join(repr(n) for n in unknown)} not accepted; accepted: {', '.join(FIGURES)}")
    cfg = _load(a.config)
    try:
        for name, out in zip(a.name, a.out, strict=True):
            figures.render(name, _named_paths(a.inputs, "--in"), Path(out), cfg,
                           Path(a.traces) if a.traces else None)
    except TableError as e:
        raise ConfigError(str(e)) from None


def cmd_restore(a: argparse.Namespace) -> None:
    """Replay the restore journal a killed job of this host left for a GPU (power limit, clock lock)."""
    from phase_energy.measure.gpulock import this_host
    from phase_energy.measure.levers import LeverError, default_journal_dir, other_host_journals, replay_journal
    from phase_energy.measure.nvml import GPU, GPUError

    directory = Path(a.state_dir) if a.state_dir else default_journal_dir()
    gpu = GPU(a.gpu)
    try:
        replayed = replay_journal(gpu, directory)
    except (LeverError, GPUError) as e:
        log.error("%s", e)
        raise SystemExit(1) from None
    print("restored" if replayed else
          f"no restore journal for GPU {a.gpu} of this host ({this_host()}) in {directory}: nothing to do")
    for _, message in other_host_journals(directory):
        print(message)


def cmd_wheelhouse(a: argparse.Namespace) -> None:
    """Download every wheel the measurement jobs need, for offline installation on compute nodes."""
    from phase_energy.wheelhouse import build

    try:
        files = build(Path(a.dest), a.python_version, a.platform, a.extras.split(",") if a.extras else [],
                      a.with_torch)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    spec = f"phase-energy[{a.extras}]" if a.extras else "phase-energy"
    print(f"{len(files)} wheels in {a.dest}; install on the node with:\n"
          f"  pip install --no-index --find-links {a.dest} '{spec}'")


GROUP_ENGINES_DEFAULT = "native,vllm"
ELSEWHERE_FLAGS = ("--executor", "--profile", "--workflow-profile")  # snakemake's flags that can send jobs away


def _sends_jobs_away(snakemake_args: list[str]) -> list[str]:
    """What in the snakemake arguments (or the environment) may send the workflow's jobs to another machine."""
    away = []
    for arg in snakemake_args:
        name = arg.split("=")[0]
        long = name.startswith("--") and len(name) >= 5 and any(f.startswith(name) for f in ELSEWHERE_FLAGS)
        if long or (arg.startswith("-e") and not arg.startswith("--")):  # also abbreviated, or -eslurm
            away.append(arg)
    if os.environ.get("SNAKEMAKE_PROFILE"):
        away.append(f"SNAKEMAKE_PROFILE={os.environ['SNAKEMAKE_PROFILE']} (environment)")
    return away


def _group_engines(value: str | None, snakemake_args: list[str]) -> list[str]:
    """``--group-engines``: engines by name, comma-separated, or ``none`` (every point a workflow job).

    Groups run on this machine. Left unsaid, it is ``native,vllm``, unless the snakemake arguments name a
    profile or executor: then the user meant the jobs to go there, and must say which way.
    """
    if value is None:
        away = _sends_jobs_away(snakemake_args)
        if away:
            raise ConfigError(f"campaign: the workflow is given {', '.join(away)}, but by default the points are "
                              "measured in groups on this machine, not through it; say --group-engines none to "
                              f"send every point through the workflow, or --group-engines {GROUP_ENGINES_DEFAULT} "
                              "to measure them here")
        value = GROUP_ENGINES_DEFAULT
    names = [e.strip() for e in value.split(",")]
    if names == ["none"]:
        return []
    bad = [e for e in names if e not in ENGINES]
    if bad:
        raise ConfigError(f"--group-engines {value!r}: {', '.join(repr(e) for e in bad)} not accepted; accepted: "
                          f"engines from {', '.join(ENGINES)}, comma-separated (default {GROUP_ENGINES_DEFAULT}), "
                          "or none")
    return names


def cmd_campaign(a: argparse.Namespace) -> None:
    """One time-limited run of a campaign: measure missing points chunk by chunk, copy them into a folder."""
    from phase_energy.measure.campaign import run

    if not Path(a.configfile).is_file():
        raise ConfigError(f"campaign --configfile {a.configfile!r}: no such file; accepted: a config file such as "
                          "config/config.yaml")
    extra = a.snakemake_args.split()
    engines = _group_engines(a.group_engines, extra)
    try:
        res = run(a.configfile, a.chunk or [], Path(a.into), a.time_limit_s, extra=extra,
                  group_engines=engines)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print(json.dumps({"new_points": len(res.new_points), "chunks_done": res.chunks_done,
                      "chunks_failed": res.chunks_failed, "failed_points": res.failed_points,
                      "interrupted": res.interrupted, "groups": res.groups,
                      "stopped_in": res.stopped_in, "seconds": round(res.seconds, 1)}))


def cmd_migrate_traces(a: argparse.Namespace) -> None:
    """Move traces of the layout before engines (arch~A/...) under engine~native/."""
    from phase_energy.measure.layout import migrate_traces

    moved = migrate_traces(Path(a.folder), a.engine)
    if not moved:
        print(f"nothing to move: {a.folder} holds no traces of the layout before engines (arch~A/bs~B/... at its "
              "top)")
        return
    print(f"{len(moved)} trace folders moved under {Path(a.folder) / ('engine~' + a.engine)}")


def cmd_presets(a: argparse.Namespace) -> None:
    """Print the presets and their cost-model headline numbers."""
    from phase_energy.model.costmodel import CostModel
    from phase_energy.model.presets import ALL_PRESETS

    for cfg in ALL_PRESETS.values():
        print(json.dumps(CostModel(cfg).summary()))


def _parser() -> argparse.ArgumentParser:
    """The command line's parser, every command with its arguments."""
    p = argparse.ArgumentParser(prog="phase-energy", description=__doc__)
    p.add_argument("--log", help="also write the log to this file")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("measure", help="measure one grid point into a trace folder (or several points of one "
                       "engine in one process: --points)")
    m.add_argument("--config", required=True)
    m.add_argument("--engine", default="native", choices=list(ENGINES))
    m.add_argument("--arch", help="the preset (with --points: of the items that name none)")
    m.add_argument("--batch", type=_count(1))
    m.add_argument("--context", type=_count(1))
    m.add_argument("--lever", required=True, type=_lever)
    m.add_argument("--rep", type=_count(0), default=0)
    m.add_argument("--out", help="the point's trace folder (one point)")
    m.add_argument("--points", metavar="[ARCH:]BxC,...", help="several points of this engine, lever and "
                   "repetition, measured in this process (vLLM: of one preset, on one engine; native: ARCH:BxC "
                   "items may name several presets)")
    m.add_argument("--out-root", help="with --points: each point is written under OUT_ROOT/<point path>")
    m.add_argument("--log-dir", help="with --points: each point's log goes to LOG_DIR/<point path>.log")
    m.add_argument("--time-limit-s", type=_seconds(positive=False), help="with --points: seconds this process "
                   "may run; a point that would not end in time is not started")
    m.set_defaults(fn=cmd_measure)

    cl = sub.add_parser("clear", help="CLEAR: component-level energy of one architecture at one batch")
    cl.add_argument("--config", required=True)
    cl.add_argument("--arch", required=True)
    cl.add_argument("--batch", type=_count(1), required=True)
    cl.add_argument("--rep", type=_count(0), default=0, help="repetition (clear.repetitions): seeds differ per job")
    cl.add_argument("--out", required=True)
    cl.set_defaults(fn=cmd_clear)

    c = sub.add_parser("check-config", help="validate a config file and print the grid size")
    c.add_argument("config")
    c.set_defaults(fn=cmd_check_config)

    an = sub.add_parser("analyse", help="run one analysis stage on explicit table paths")
    an.add_argument("stage", choices=["energy", "pareto", "classes", "crossover", "phase_policy", "sweetspot", "clear",
                                        "claims"])
    an.add_argument("--config", required=True)
    an.add_argument("--in", dest="inputs", action="append", metavar="NAME=PATH",
                    help="a table the stage reads (repeat for each)")
    an.add_argument("--out", dest="outputs", action="append", metavar="NAME=PATH",
                    help="a table the stage writes (repeat for each)")
    an.add_argument("--traces", nargs="*", metavar="FOLDER",
                    help="trace folders (or their status.json) the energy and clear stages summarise")
    an.set_defaults(fn=cmd_analyse)

    f = sub.add_parser("figure", help="render figures (PNG and SVG) from explicit table paths")
    f.add_argument("name", nargs="+", help="the figures to draw (one after another, in one process)")
    f.add_argument("--config", required=True)
    f.add_argument("--in", dest="inputs", action="append", metavar="NAME=PATH",
                   help="a table the figure draws (repeat for each)")
    f.add_argument("--out", required=True, action="append",
                   help="output path without extension (repeat: one for each figure, in their order)")
    f.add_argument("--traces", help="traces folder (for the power timeline)")
    f.set_defaults(fn=cmd_figure)

    r = sub.add_parser("restore", help="restore GPU settings a killed job left behind (needs root)")
    r.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU (default 0)")
    r.add_argument("--state-dir", help="folder of the restore journals (default: PHASE_ENERGY_STATE_DIR or "
                   "~/.cache/phase-energy)")
    r.set_defaults(fn=cmd_restore)

    wh = sub.add_parser("wheelhouse", help="download wheels for offline installation on compute nodes")
    wh.add_argument("--dest", default="wheelhouse")
    wh.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    wh.add_argument("--platform", action="append", default=None,
                    help="pip platform tag(s), e.g. manylinux_2_28_x86_64 (default: this machine's)")
    wh.add_argument("--extras", default="gpu,workflow",
                    help="comma-separated extras of phase-energy: gpu, workflow, vllm (vLLM brings torch 2.11)")
    wh.add_argument("--with-torch", action="store_true", help="include torch (most GPU images bring their own)")
    wh.set_defaults(fn=cmd_wheelhouse)

    cp = sub.add_parser("campaign", help="one time-limited run of a measurement campaign (resumes where the "
                        "last stopped)")
    cp.add_argument("--configfile", required=True)
    cp.add_argument("--into", required=True, help="folder that collects finished traces (the reference data)")
    cp.add_argument("--chunk", action="append",
                    help="config overrides of one chunk, run in the order given, e.g. 'contexts=[2048]'")
    cp.add_argument("--time-limit-s", type=_seconds(positive=True), default=540.0)
    cp.add_argument("--snakemake-args", default="", help="more snakemake arguments, quoted")
    cp.add_argument("--group-engines", metavar="ENGINE[,ENGINE]",
                    help="measure these engines' points in groups, one process per lever and repetition, and for "
                    "vllm per preset (torch and its compiler imported once, one vLLM engine start per preset, "
                    f"not per point); accepted: {', '.join(ENGINES)}, or none for a workflow job per point "
                    f"(default {GROUP_ENGINES_DEFAULT}; with a profile or executor in --snakemake-args, say which)")
    cp.set_defaults(fn=cmd_campaign)

    mt = sub.add_parser("migrate-traces", help="move traces written before engines were a grid axis "
                        "(arch~A/... at the top) under engine~native/")
    mt.add_argument("folder")
    mt.add_argument("--engine", default="native", choices=list(ENGINES),
                    help="the engine those traces came from (every trace before the engine axis: native)")
    mt.set_defaults(fn=cmd_migrate_traces)

    pr = sub.add_parser("presets", help="list architecture presets")
    pr.set_defaults(fn=cmd_presets)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    a = _parser().parse_args(argv)
    _setup_logging(a.log, a.verbose)
    try:
        if a.cmd in ("measure", "clear"):  # before anything imports torch: its imports compile from source otherwise
            _bytecode_cache()
        rc = a.fn(a)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    except (OSError, ValueError, RuntimeError) as e:
        if not _said_to_user(e):
            raise
        log.error("phase-energy %s: %s", a.cmd, e)
        log.debug("where it was raised", exc_info=True)  # with -v
        return 1
    return rc or 0


def _said_to_user(e: BaseException) -> bool:
    """Whether an error is this package's word to the user (a bad trace, table, folder or lever), not a bug.

    A missing or existing file counts only where this package raised it with its own message; one from a
    library (a compiler not found, say) keeps its traceback.
    """
    from phase_energy.analysis.tables import TableError
    from phase_energy.grid import LeverError
    from phase_energy.measure.layout import TraceError
    from phase_energy.measure.levers import LeverError as LeverApplyError

    if isinstance(e, (TraceError, TableError, LeverError, LeverApplyError)):  # and their kinds (layout, restore)
        return True
    if isinstance(e, (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)):
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("phase_energy.")
    return False


#: the commands a workflow rule may run inside the workflow's process or its workers (no GPU, no process state)
IN_PROCESS_COMMANDS = ("analyse", "figure")


class CommandError(RuntimeError):
    """A command run in this process failed; the message says why (its log has the records)."""


def run_in_process(argv: list[str], log_path: str | Path) -> None:
    """``phase-energy ARGV`` in this thread, its log records to ``log_path``; raise CommandError if it fails.

    For the workflow's analysis and figure jobs (:data:`IN_PROCESS_COMMANDS`), which it runs inside its own
    process or its workers (``measure.workers``) to spare each job a Python start and the imports of pandas
    and matplotlib: the same command as on the command line, with the package's records of this thread in the
    job's log instead of on the console (other libraries' records, and those of a stage's helper threads,
    are not written there). Python's warnings go to the log too, as the process's warning filters let them
    through (once per place), before the error that ends a failed job: a log's last line says why it failed.
    """
    from phase_energy.measure.job import job_log

    if not argv or argv[0] not in IN_PROCESS_COMMANDS:
        raise CommandError(f"phase-energy {' '.join(argv[:1]) or '(no command)'}: not run in the workflow's "
                           f"process (accepted: {', '.join(IN_PROCESS_COMMANDS)})")
    with job_log(log_path):
        try:
            rc = _run_logging_warnings(argv)
        except SystemExit:  # argparse said what is wrong on stderr
            log.error("phase-energy %s: bad arguments", " ".join(argv))
            raise CommandError(f"phase-energy {argv[0]}: bad arguments ({' '.join(argv)})") from None
        except ConfigError as e:
            log.error("%s", e)
            raise CommandError(str(e)) from None
        except Exception:
            log.exception("phase-energy %s failed", " ".join(argv[:2]))
            raise
        if rc:
            log.error("phase-energy %s ended with exit code %s", " ".join(argv[:2]), rc)
            raise CommandError(f"phase-energy {' '.join(argv[:2])}: exit code {rc}")


def _run_logging_warnings(argv: list[str]) -> int | None:
    """The command parsed and run; the warnings it raised logged as it ends, before any error of it is.

    One job runs at a time in a thread or worker: the warnings' filters, and their record here, are the
    process's.
    """
    with warnings.catch_warnings(record=True) as caught:
        try:
            a = _parser().parse_args(argv)
            return a.fn(a)
        finally:
            _log_warnings(caught)


def _log_warnings(caught: list[warnings.WarningMessage]) -> None:
    """The warnings a command raised, to its log: each place's once, as Python shows them."""
    for place in dict.fromkeys((w.filename, w.lineno, w.category.__name__, str(w.message)) for w in caught):
        log.warning("%s:%s: %s: %s", *place)


if __name__ == "__main__":
    raise SystemExit(main())

"""The analysis stages the workflow's rules run (``phase-energy analyse <stage>``), each with explicit paths.

A stage declares the tables it reads and writes (names of :mod:`phase_energy.analysis.tables`); its rule
passes one path per name (``--in NAME=PATH``, ``--out NAME=PATH``) and the traces it summarises
(``--traces``). A stage reads only what it is given, so a renamed or missing table is an error naming it,
never an empty frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from phase_energy.analysis.clear import summarise_components
from phase_energy.analysis.crossover import crossover_tables
from phase_energy.analysis.dvfs import clock_policy, dvfs_classes, dvfs_curves, fleet_projection, policy_resamples
from phase_energy.analysis.energy import (
    GROUP,
    add_window_metrics,
    count_windows,
    rederive_windows,
    summarise_trials,
    trial_table,
)
from phase_energy.analysis.pareto import dominance_table, pareto_table
from phase_energy.analysis.sweetspot import cells_from_request, fit_cells, sweet_region
from phase_energy.analysis.tables import TableError, read_table, read_tables, write_table
from phase_energy.measure.trace import collect_windows
from phase_energy.measure.trace import read_table as read_trace_table

log = logging.getLogger(__name__)

Paths = Mapping[str, Path]


def energy(cfg: Mapping[str, Any], inputs: Paths, outputs: Paths, traces: Sequence[Path]) -> None:
    """Windows of the jobs in ``traces`` (summarised again from their samples), trials and per-phase summary."""
    windows, jobs = collect_windows(traces)
    a = cfg["analysis"]
    w = add_window_metrics(rederive_windows(windows, cfg), tuple(a["exclude_flags"]))
    t = trial_table(w)
    summary = summarise_trials(t, a["bootstrap_resamples"], a["run_to_run_sd"], cfg["seed"]) if len(t) \
        else pd.DataFrame()
    write_table("windows", w, outputs["windows"])
    write_table("phase_trials", t, outputs["phase_trials"])
    write_table("phase_energy", summary, outputs["phase_energy"])
    write_table("phase_energy_csv", summary, outputs["phase_energy_csv"])
    write_table("jobs", jobs, outputs["jobs"])
    log.info("energy: %d jobs (%d ok), %d windows, %d trial rows", len(jobs),
             int((jobs.get("status") == "ok").sum()) if len(jobs) else 0, len(w), len(t))


def pareto(cfg: Mapping[str, Any], inputs: Paths, outputs: Paths, traces: Sequence[Path]) -> None:
    """Pareto frontiers (decode and prefill) and the dominance test."""
    trials, _ = reads("pareto", read_table("phase_trials", inputs["phase_trials"]))
    n = cfg["analysis"]["bootstrap_resamples"]
    frames = [f for f in (pareto_table(trials, n, cfg["seed"], ph) for ph in ("decode", "prefill")) if len(f)]
    front = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    write_table("pareto", front, outputs["pareto"])
    decode = front[front["phase"] == "decode"] if len(front) else front
    write_table("dominance", dominance_table(decode) if len(decode) else pd.DataFrame(), outputs["dominance"])


def classes(cfg: Mapping[str, Any], inputs: Paths, outputs: Paths, traces: Sequence[Path]) -> None:
    """DVFS classes, curves, clock policy and fleet projection."""
    a = cfg["analysis"]
    trials, _ = reads("classes", read_table("phase_trials", inputs["phase_trials"]))
    n, bound, seed = a["bootstrap_resamples"], a["throughput_loss_bound"], cfg["seed"]
    write_table("dvfs_curves", dvfs_curves(trials), outputs["dvfs_curves"])
    write_table("dvfs_classes", dvfs_classes(trials, a["class_flat_threshold"], a["class_sensitivity_threshold"],
                                             n, seed), outputs["dvfs_classes"])
    found = policy_resamples(trials, bound, n, seed)
    write_table("clock_policy", clock_policy(trials, bound, n, seed, found), outputs["clock_policy"])
    write_table("fleet", fleet_projection(trials, bound, a["fleet_gpus"], a["fleet_decode_share"], n, seed, found),
                outputs["fleet"])


def crossover(cfg: Mapping[str, Any], inputs: Paths, outputs: Paths, traces: Sequence[Path]) -> None:
    """Request energy relative to GQA and the crossover points."""
    trials, windows = reads("crossover", read_table("phase_trials", inputs["phase_trials"]),
                            read_table("windows", inputs["windows"]))
    assert windows is not None
    request, cross = crossover_tables(windows, trials, cfg) if len(trials) else (pd.DataFrame(), pd.DataFrame())
    write_table("request_energy", request, outputs["request_energy"])
    write_table("crossovers", cross, outputs["crossovers"])


def _phase_policy_tables(windows: pd.DataFrame, trials: pd.DataFrame, cfg: Mapping[str, Any]
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    from phase_energy.analysis.phase_policy import phase_policy_tables

    a = cfg["analysis"]
    return phase_policy_tables(windows, trials, cfg["output_lengths"], a["phase_mix_shares"],
                               a["phase_latency_bound"], a["bootstrap_resamples"], a["run_to_run_sd"],
                               cfg["seed"]) if len(trials) else (pd.DataFrame(), pd.DataFrame())


def phase_policy(cfg: Mapping[str, Any], inputs: Paths, outputs: Paths, traces: Sequence[Path]) -> None:
    """Every (prefill lever, decode lever) pair's request energy and latency, and the best pair per point."""
    trials, windows = reads("phase_policy", read_table("phase_trials", inputs["phase_trials"]),
                            read_table("windows", inputs["windows"]))
    assert windows is not None
    pairs, policy = _phase_policy_tables(windows, trials, cfg)
    write_table("phase_pairs", pairs, outputs["phase_pairs"])
    write_table("phase_policy", policy, outputs["phase_policy"])


def sweetspot(cfg: Mapping[str, Any], inputs: Paths, outputs: Paths, traces: Sequence[Path]) -> None:
    """Cells, the fitted model per architecture and batch (held-out MAPE) and the sweet region."""
    request = read_table("request_energy", inputs["request_energy"])
    s = cfg["analysis"]
    if len(request):
        cells = sweet_region(cells_from_request(request), s["sweetspot_drop_share"])
        table, fits = fit_cells(cells, s["sweetspot_holdout_share"], cfg["seed"])
    else:  # nothing measured: the tables' columns only
        table, fits = pd.DataFrame(), pd.DataFrame()
    write_table("sweetspot_cells", table, outputs["sweetspot_cells"])
    write_table("sweetspot_fit", fits, outputs["sweetspot_fit"])
    for r in fits.itertuples():
        log.info("sweetspot %s %s batch %d: held-out MAPE %.2f %% (%d of %d cells), peak at input %d output %d",
                 r.engine, r.arch, r.batch, r.mape_heldout_pct, r.held_out, r.cells, r.peak_input, r.peak_output)


def clear(cfg: Mapping[str, Any], inputs: Paths, outputs: Paths, traces: Sequence[Path]) -> None:
    """Component summary and coverage from the CLEAR job folders in ``traces`` (no rows when CLEAR is off)."""
    frames = []
    for job in traces:
        df = read_trace_table(job, "components.parquet")
        if df.empty:
            log.warning("CLEAR: no components table in %s; left out", job)
            continue
        frames.append(df.assign(job=str(job)))
    comp, cov = summarise_components(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    write_table("clear_components", comp, outputs["clear_components"])
    write_table("clear_coverage", cov, outputs["clear_coverage"])


# What each derivation reads: columns of the phase trials, and of the windows other than idle ones (idle
# windows give the idle power only, which the windows and trials carry). Its stage passes it exactly these, so a
# derivation that reads another column fails at once instead of being reused where it should be derived again.
READS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pareto": ((*GROUP, "phase", "lever", "job", "tokens_per_s", "j_per_token"), ()),
    "classes": ((*GROUP, "phase", "lever", "lever_kind", "lever_value", "job", "trial", "sm_clock_mhz", "j_per_token",
                 "tokens_per_s", "power_mean_w"), ()),
    "crossover": ((*GROUP, "phase", "lever", "job", "j_per_token"),
                  (*GROUP, "phase", "lever", "excluded", "job", "trial", "context_start", "context_end",
                   "j_per_token")),
    "phase_policy": ((*GROUP, "phase", "lever", "lever_kind", "job", "j_per_token", "tokens_per_s", "energy_j",
                      "tokens", "duration_s"),
                     (*GROUP, "phase", "lever", "job", "energy_j", "energy_trapz_j", "counter_ticks", "tokens",
                      "duration_s")),
}
# The tables each derivation gives (sweetspot's come from the request energy, hence with the crossover's)
DERIVED = {"pareto": ("dominance",), "classes": ("dvfs_classes", "clock_policy", "fleet"),
           "crossover": ("crossovers", "request_energy", "sweetspot_cells", "sweetspot_fit"),
           "phase_policy": ("phase_pairs", "phase_policy")}


UNREAD_PHASES = ("idle", "fill")


def reads(name: str, trials: pd.DataFrame, windows: pd.DataFrame | None = None
          ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The trials and windows (not idle or fill ones) that derivation ``name`` reads, only the columns in READS."""
    tcols, wcols = READS[name]
    # no derivation reads the idle windows or a serving engine's fill windows (the batch's prefill from idle)
    view = windows[~windows["phase"].isin(UNREAD_PHASES)][list(wcols)] if windows is not None and wcols else None
    return trials[list(tcols)] if len(trials) else trials, view


def _derive(name: str, windows: pd.DataFrame, trials: pd.DataFrame, cfg: Mapping[str, Any]
            ) -> dict[str, pd.DataFrame]:
    """The tables of derivation ``name`` (DERIVED) from windows with metrics and their trials."""
    a = cfg["analysis"]
    n, seed = a["bootstrap_resamples"], cfg["seed"]
    t, w = reads(name, trials, windows)
    if name == "pareto":
        front = pd.concat([pareto_table(t, n, seed, ph) for ph in ("decode", "prefill")], ignore_index=True)
        decode = front[front["phase"] == "decode"]
        return {"dominance": dominance_table(decode) if len(decode) else pd.DataFrame()}
    if name == "classes":
        found = policy_resamples(t, a["throughput_loss_bound"], n, seed)
        return {"dvfs_classes": dvfs_classes(t, a["class_flat_threshold"], a["class_sensitivity_threshold"], n, seed),
                "clock_policy": clock_policy(t, a["throughput_loss_bound"], n, seed, found),
                "fleet": fleet_projection(t, a["throughput_loss_bound"], a["fleet_gpus"], a["fleet_decode_share"],
                                          n, seed, found)}
    if name == "crossover":
        request, cross = crossover_tables(w, t, cfg)
        cells, fit = fit_cells(sweet_region(cells_from_request(request), a["sweetspot_drop_share"]),
                               a["sweetspot_holdout_share"], seed)
        return {"crossovers": cross, "request_energy": request, "sweetspot_cells": cells, "sweetspot_fit": fit}
    pairs, policy = _phase_policy_tables(w, t, cfg)
    return {"phase_pairs": pairs, "phase_policy": policy}


def _same(a: pd.DataFrame | None, b: pd.DataFrame | None) -> bool:
    """Whether two frames hold the same columns, types and values in the same order (the index aside).

    Column by column: ``DataFrame.equals`` also compares how pandas stores the columns in blocks.
    """
    if a is None or b is None:
        return a is b
    return list(a.columns) == list(b.columns) and len(a) == len(b) and all(
        a[c].reset_index(drop=True).equals(b[c].reset_index(drop=True)) for c in a.columns)


def derived_tables(windows: pd.DataFrame, cfg: Mapping[str, Any], exclude_flags: tuple[str, ...],
                   reuse: tuple[pd.DataFrame, pd.DataFrame, Mapping[str, pd.DataFrame]] | None = None
                   ) -> dict[str, pd.DataFrame]:
    """The tables the claims read, derived again from window summaries with the given windows left out.

    ``reuse``: the windows and trials the upstream stages read and the tables they wrote. A derivation whose
    reads (READS) are the same with these windows left out gives the same tables: those are taken as they are.
    """
    a = cfg["analysis"]
    w = count_windows(windows, exclude_flags)
    trials = trial_table(w)
    if trials.empty:
        return {}
    out = {"phase_energy": summarise_trials(trials, a["bootstrap_resamples"], a["run_to_run_sd"], cfg["seed"])}
    for name in READS:
        if reuse is not None and all(_same(x, y) for x, y in zip(reads(name, reuse[1], reuse[0]),
                                                                 reads(name, trials, w), strict=True)):
            log.info("claims sensitivity: %s reads the same with every window counted; its tables reused", name)
            out.update({k: reuse[2][k] for k in DERIVED[name]})
            continue
        out.update(_derive(name, w, trials, cfg))
    return out


def claims(cfg: Mapping[str, Any], inputs: Paths, outputs: Paths, traces: Sequence[Path]) -> None:
    """The verdict on each claim, and each verdict again with every window counted (the sensitivity)."""
    from phase_energy.analysis.claims import CLAIM_TABLES, evaluate_tables

    t = read_tables({n: inputs[n] for n in CLAIM_TABLES})
    verdicts = evaluate_tables(t, cfg)
    write_table("claims", verdicts, outputs["claims"])
    windows = read_table("windows", inputs["windows"])
    if (windows["excluded"].astype(bool) & (windows["phase"] != "fill")).any():  # a fill window changes no table
        trials = read_table("phase_trials", inputs["phase_trials"])
        everything = evaluate_tables({**t, **derived_tables(windows, cfg, (), (windows, trials, t))}, cfg)
    else:  # no window was left out: every window counted gives the same tables, hence the same verdicts
        everything = verdicts
    keys = ["id", "engine"]
    out = verdicts[[*keys, "verdict"]].merge(everything[[*keys, "verdict", "evidence"]], on=keys, how="left",
                                             suffixes=("", "_all_windows"))
    out = out.rename(columns={"verdict": "verdict_flagged_left_out"})
    out["changed"] = out["verdict_flagged_left_out"] != out["verdict_all_windows"]
    out["left_out"] = ", ".join(cfg["analysis"]["exclude_flags"])
    write_table("claims_sensitivity", out, outputs["claims_sensitivity"])


@dataclass(frozen=True)
class Stage:
    """A stage: its function, the tables it reads and writes, and whether it reads trace folders."""

    run: Callable[[Mapping[str, Any], Paths, Paths, Sequence[Path]], None]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    reads_traces: bool = False


STAGES: dict[str, Stage] = {
    "energy": Stage(energy, (), ("windows", "phase_trials", "phase_energy", "phase_energy_csv", "jobs"), True),
    "pareto": Stage(pareto, ("phase_trials",), ("pareto", "dominance")),
    "classes": Stage(classes, ("phase_trials",), ("dvfs_classes", "dvfs_curves", "clock_policy", "fleet")),
    "crossover": Stage(crossover, ("windows", "phase_trials"), ("request_energy", "crossovers")),
    "phase_policy": Stage(phase_policy, ("windows", "phase_trials"), ("phase_pairs", "phase_policy")),
    "sweetspot": Stage(sweetspot, ("request_energy",), ("sweetspot_cells", "sweetspot_fit")),
    "clear": Stage(clear, (), ("clear_components", "clear_coverage"), True),
    "claims": Stage(claims, ("windows", "phase_trials", "phase_energy", "dominance", "dvfs_classes", "clock_policy",
                             "fleet", "crossovers", "request_energy", "sweetspot_fit", "sweetspot_cells",
                             "clear_components", "clear_coverage", "phase_pairs", "phase_policy"),
                    ("claims", "claims_sensitivity")),
}


def run_stage(name: str, cfg: Mapping[str, Any], inputs: Paths, outputs: Paths,
              traces: Sequence[Path] = ()) -> None:
    """Run stage ``name`` after checking that its inputs and outputs are exactly the ones it declares."""
    if name not in STAGES:
        raise TableError(f"unknown analysis stage {name!r}; stages: {', '.join(STAGES)}")
    stage = STAGES[name]
    for kind, given, declared in (("input", inputs, stage.inputs), ("output", outputs, stage.outputs)):
        missing = [n for n in declared if n not in given]
        extra = [n for n in given if n not in declared]
        if missing or extra:
            raise TableError(f"stage {name!r}: {kind} tables {sorted(given)} do not match the stage's "
                             f"{list(declared)} (missing {missing}, unknown {extra})")
    if traces and not stage.reads_traces:
        raise TableError(f"stage {name!r} reads no traces; --traces is for the energy and clear stages")
    stage.run(cfg, inputs, outputs, traces)

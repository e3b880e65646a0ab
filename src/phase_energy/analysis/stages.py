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
from phase_energy.analysis.energy import add_window_metrics, rederive_windows, summarise_trials, trial_table
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
    trials = read_table("phase_trials", inputs["phase_trials"])
    n = cfg["analysis"]["bootstrap_resamples"]
    frames = [f for f in (pareto_table(trials, n, cfg["seed"], ph) for ph in ("decode", "prefill")) if len(f)]
    front = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    write_table("pareto", front, outputs["pareto"])
    decode = front[front["phase"] == "decode"] if len(front) else front
    write_table("dominance", dominance_table(decode) if len(decode) else pd.DataFrame(), outputs["dominance"])


def classes(cfg: Mapping[str, Any], inputs: Paths, outputs: Paths, traces: Sequence[Path]) -> None:
    """DVFS classes, curves, clock policy and fleet projection."""
    a = cfg["analysis"]
    trials = read_table("phase_trials", inputs["phase_trials"])
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
    windows = read_table("windows", inputs["windows"])
    trials = read_table("phase_trials", inputs["phase_trials"])
    request, cross = crossover_tables(windows, trials, cfg) if len(trials) else (pd.DataFrame(), pd.DataFrame())
    write_table("request_energy", request, outputs["request_energy"])
    write_table("crossovers", cross, outputs["crossovers"])


def _phase_policy_tables(windows: pd.DataFrame, trials: pd.DataFrame, cfg: Mapping[str, Any]
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    from phase_energy.analysis.phase_policy import phase_policy_tables

    a = cfg["analysis"]
    return phase_policy_tables(windows, trials, cfg["output_lengths"], a["phase_mix_shares"],
                               a["phase_latency_bound"]) if len(trials) else (pd.DataFrame(), pd.DataFrame())


def phase_policy(cfg: Mapping[str, Any], inputs: Paths, outputs: Paths, traces: Sequence[Path]) -> None:
    """Every (prefill lever, decode lever) pair's request energy and latency, and the best pair per point."""
    windows = read_table("windows", inputs["windows"])
    trials = read_table("phase_trials", inputs["phase_trials"])
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


def derived_tables(windows: pd.DataFrame, cfg: Mapping[str, Any], exclude_flags: tuple[str, ...]
                   ) -> dict[str, pd.DataFrame]:
    """The tables the claims read, derived again from window summaries with the given windows left out."""
    a = cfg["analysis"]
    n, seed = a["bootstrap_resamples"], cfg["seed"]
    w = add_window_metrics(windows.drop(columns=[c for c in ("excluded",) if c in windows]), exclude_flags)
    trials = trial_table(w)
    if trials.empty:
        return {}
    front = pd.concat([pareto_table(trials, n, seed, ph) for ph in ("decode", "prefill")], ignore_index=True)
    request, cross = crossover_tables(w, trials, cfg)
    pairs, policy = _phase_policy_tables(w, trials, cfg)
    cells, fit = fit_cells(sweet_region(cells_from_request(request), a["sweetspot_drop_share"]),
                           a["sweetspot_holdout_share"], seed)
    decode = front[front["phase"] == "decode"]
    return {
        "phase_energy": summarise_trials(trials, n, a["run_to_run_sd"], seed),
        "dominance": dominance_table(decode) if len(decode) else pd.DataFrame(),
        "dvfs_classes": dvfs_classes(trials, a["class_flat_threshold"], a["class_sensitivity_threshold"], n,
                                     seed),
        "clock_policy": clock_policy(trials, a["throughput_loss_bound"], n, seed),
        "fleet": fleet_projection(trials, a["throughput_loss_bound"], a["fleet_gpus"], a["fleet_decode_share"],
                                  n, seed),
        "crossovers": cross, "request_energy": request, "sweetspot_cells": cells, "sweetspot_fit": fit,
        "phase_pairs": pairs, "phase_policy": policy,
    }


def claims(cfg: Mapping[str, Any], inputs: Paths, outputs: Paths, traces: Sequence[Path]) -> None:
    """The verdict on each claim, and each verdict again with every window counted (the sensitivity)."""
    from phase_energy.analysis.claims import CLAIM_TABLES, evaluate_tables

    t = read_tables({n: inputs[n] for n in CLAIM_TABLES})
    verdicts = evaluate_tables(t, cfg)
    write_table("claims", verdicts, outputs["claims"])
    windows = read_table("windows", inputs["windows"])
    if windows["excluded"].astype(bool).any():
        everything = evaluate_tables({**t, **derived_tables(windows, cfg, ())}, cfg)
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
    "claims": Stage(claims, ("windows", "phase_energy", "dominance", "dvfs_classes", "clock_policy", "fleet",
                             "crossovers", "request_energy", "sweetspot_fit", "sweetspot_cells",
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

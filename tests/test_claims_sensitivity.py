"""The claims' sensitivity: the tables derived again with every window counted, reused where nothing changes.

A derivation whose reads (``stages.READS``) are the same with every window counted keeps the table its stage
wrote; these tests check on the simulated test config's run (the ``sim_run`` fixture) that the tables and the
claims come out exactly as when everything is derived again, both where windows of the idle phase only are
left out (everything but the per-phase summary reused) and where decode windows are (derived again).
"""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from phase_energy.analysis import stages
from phase_energy.analysis.claims import CLAIM_TABLES, evaluate_tables
from phase_energy.analysis.energy import count_windows, summarise_trials, trial_table
from phase_energy.analysis.stages import READS, derived_tables, run_stage
from phase_energy.analysis.tables import default_paths, read_table, read_tables, write_table

FLAG = "counter_trapz_mismatch"  # one of the config's exclude_flags


def _cfg(run):
    return json.loads(next((run / "results" / "config").glob("analysis-*.json")).read_text())


def _flagged(run, phase, cfg):
    """The run's windows with the first window of each job in ``phase`` flagged, counted as the config says."""
    w = read_table("windows", run / "results/tables/windows.parquet")
    first = w[w["phase"] == phase].groupby("job").head(1).index
    w.loc[first, "flags"] = (w.loc[first, "flags"].fillna("") + f",{FLAG}").str.strip(",")
    w = count_windows(w, tuple(cfg["analysis"]["exclude_flags"]))
    assert len(first) and w.loc[first, "excluded"].all()
    return w


def _upstream(tmp_path, windows, cfg):
    """The tables the stages write from these windows, through their files, as the workflow runs them."""
    paths = default_paths(["windows", "phase_trials", *CLAIM_TABLES], tmp_path)
    write_table("windows", windows, paths["windows"])
    write_table("phase_trials", trial_table(windows), paths["phase_trials"])
    a = cfg["analysis"]
    write_table("phase_energy", summarise_trials(trial_table(windows), a["bootstrap_resamples"], a["run_to_run_sd"],
                                                 cfg["seed"]), paths["phase_energy"])
    for name in ("pareto", "classes", "crossover", "phase_policy", "sweetspot"):
        st = stages.STAGES[name]
        out = default_paths(st.outputs, tmp_path)
        run_stage(name, cfg, {n: paths[n] for n in st.inputs}, out)
    for name in ("clear_components", "clear_coverage"):
        write_table(name, pd.DataFrame(), paths[name])
    t = read_tables({n: paths[n] for n in CLAIM_TABLES})
    return read_table("windows", paths["windows"]), read_table("phase_trials", paths["phase_trials"]), t


def _round_trip(tables, tmp_path, tag):
    """Each table as its file holds it (the reused ones were read from files, the others are in memory)."""
    paths = default_paths(tables, tmp_path / tag)
    for name, df in tables.items():
        write_table(name, df, paths[name])
    return read_tables(paths)


@pytest.mark.parametrize(("phase", "reused"), [("idle", set(READS)), ("decode", set())])
def test_reused_tables_are_the_ones_deriving_again_gives(sim_run, tmp_path, caplog, phase, reused):
    cfg = _cfg(sim_run)
    windows, trials, upstream = _upstream(tmp_path, _flagged(sim_run, phase, cfg), cfg)
    with caplog.at_level(logging.INFO, logger="phase_energy.analysis.stages"):
        fast = derived_tables(windows, cfg, (), (windows, trials, upstream))
    said = {n for n in READS if f"sensitivity: {n} reads the same" in caplog.text}
    assert said == reused
    again = derived_tables(windows, cfg, ())
    assert set(fast) == set(again) == {"phase_energy", *(t for ts in stages.DERIVED.values() for t in ts)}
    a, b = _round_trip(fast, tmp_path, "fast"), _round_trip(again, tmp_path, "again")
    for name in again:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)
    claims_fast = evaluate_tables({**upstream, **fast}, cfg)
    claims_again = evaluate_tables({**upstream, **again}, cfg)
    pd.testing.assert_frame_equal(claims_fast, claims_again, check_exact=True)
    # the flagged windows matter: counting them changes the per-phase summary
    assert not a["phase_energy"].equals(_round_trip({"phase_energy": upstream["phase_energy"]}, tmp_path,
                                                    "up")["phase_energy"])


@pytest.mark.parametrize("name", list(READS))
def test_each_derivation_reads_only_the_columns_it_declares(sim_run, monkeypatch, name):
    """Given every column, a derivation gives the tables it gives from its declared columns (and no KeyError)."""
    cfg = _cfg(sim_run)
    windows = _flagged(sim_run, "idle", cfg)
    trials = trial_table(windows)
    declared = stages._derive(name, windows, trials, cfg)
    monkeypatch.setitem(READS, name, (tuple(trials.columns), tuple(windows.columns)))
    everything = stages._derive(name, windows, trials, cfg)
    assert declared.keys() == everything.keys()
    for table in declared:
        pd.testing.assert_frame_equal(declared[table], everything[table], check_exact=True, obj=table)

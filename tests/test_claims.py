"""Every claim's predicate over synthetic tables with a known answer: one case per verdict, and the engines.

Each claim gets a table that must come out ``reproduced``, one that must come out ``not reproduced`` and
one that must come out ``not testable``, so no predicate can hold (or fail) whatever the data says.
"""

import numpy as np
import pandas as pd
import pytest

from phase_energy.analysis.claims import (
    CLAIM_TABLES,
    CLAIMS,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    PREDICATES,
    REASON_MAX,
    REPRODUCED,
    SIMULATED_MARK,
    evaluate_claims,
    evaluate_tables,
)
from phase_energy.analysis.tables import TableError, default_paths, write_table
from phase_energy.config import validate_config

CFG = validate_config({})
TABLES = ("phase_energy", "dominance", "dvfs_classes", "clock_policy", "fleet", "crossovers", "request_energy",
          "sweetspot_fit", "sweetspot_cells", "clear_components", "clear_coverage", "phase_pairs", "phase_policy")


def tables(**given):
    return {k: given.get(k, pd.DataFrame()) for k in TABLES}


def point(**kw):
    """One summary row: a decode point at the default lever unless told otherwise, with narrow intervals."""
    r = {"engine": "native", "arch": "qwen3-4b", "paradigm": "gqa", "batch": 32, "context": 2048,
         "phase": "decode", "lever": "default", "lever_kind": "default", "lever_value": np.nan, "backend": "nvml",
         "power_mean_w": 250.0, "tokens_per_s": 1000.0, "j_per_token": 0.25, "sm_clock_mhz": 1980.0,
         "sw_power_cap_share": 0.0, "sw_power_cap_share_steady": 0.0, "floor_fraction": 0.7, "flags": "",
         "jobs": 1, "trials": 5, "interval_basis": "1 job", "gpu_name": "NVIDIA H200", "weights": "random (normal)"}
    r.update(kw)
    for m in ("power_mean_w", "tokens_per_s", "j_per_token", "sw_power_cap_share_steady"):
        r.setdefault(f"{m}_ci_low", r[m] * 0.95)
        r.setdefault(f"{m}_ci_high", r[m] * 1.05 if r[m] else 0.0)
    return r


def summary(*rows):
    return tables(phase_energy=pd.DataFrame([point(**r) for r in rows]))


def _cap_points(prefill_loss, decode_loss):
    rows = []
    for phase, loss in (("prefill", prefill_loss), ("decode", decode_loss)):
        rows.append({"phase": phase, "sw_power_cap_share": 0.9 if phase == "prefill" else 0.0})
        rows.append({"phase": phase, "lever": "powercap:300", "lever_kind": "powercap", "lever_value": 300.0,
                     "tokens_per_s": 1000.0 * (1 - loss), "sw_power_cap_share": 1.0 if phase == "prefill" else 0.0})
    return summary(*rows)


def _request(ratio, lo, hi, batch=32):
    rows = []
    for arch, par, r in (("qwen3-4b", "gqa", 1.0), ("mamba2-2.7b", "mamba2", ratio)):
        rows.append({"engine": "native", "arch": arch, "paradigm": par, "batch": batch, "context": 2048,
                     "output_length": 1024, "in_output_grid": True, "ratio_vs_gqa": r,
                     "ratio_ci_low": lo if par != "gqa" else 1.0, "ratio_ci_high": hi if par != "gqa" else 1.0})
    return pd.DataFrame(rows)


def _prefill_pair(dearer=True, batch=32):
    return [{"phase": "prefill", "batch": batch, "j_per_token": 0.01},
            {"phase": "prefill", "arch": "mamba2-2.7b", "paradigm": "mamba2", "batch": batch,
             "j_per_token": 0.02 if dearer else 0.005}]


def _prefill_summary(batch=32):
    return summary(*_prefill_pair(batch=batch))["phase_energy"]


def _cross(crossover, lo, hi, n=3):
    return pd.DataFrame([{"engine": "native", "kind": "output_length", "arch": "mamba2-2.7b", "paradigm": "mamba2",
                          "reference": "qwen3-4b", "batch": b, "at": 2048, "crossover": crossover, "ci_low": lo,
                          "ci_high": hi, "share_none": 0.0, "direction": "cheaper beyond"} for b in (1, 8, 32)[:n]])


def _cells(peak_output_medium=True, inputs=(64, 256, 1024, 4096), outputs=(16, 64, 256, 1024, 4096)):
    rows = []
    for i in inputs:
        for o in outputs:
            # efficiency falls with the input; over outputs it peaks at 256 (or rises to the longest)
            shape = -abs(np.log(o / 256)) if peak_output_medium else np.log(o)
            rows.append({"engine": "native", "arch": "qwen3-4b", "batch": 1, "input": i, "output": o,
                         "tokens_per_j": float(np.exp(shape - 0.3 * np.log(i / 64)))})
    return pd.DataFrame(rows)


def _clear(attention_jpf, mlp_jpf=1e-12, job_cv=None):
    rows = [{"arch": "qwen3-4b", "batch": 1, "phase": "decode", "component": c, "j_per_flop": j, "cv": 0.002,
             "trials": 5} for c, j in (("attention", attention_jpf), ("mlp", mlp_jpf))]
    df = pd.DataFrame(rows)
    if job_cv is not None:
        df["job_cv"] = job_cv
    return df


def _policy(best_pair, saving, levers=("default", "smclock:1410"), interval=(-0.01, 0.01)):
    """Phase-policy tables at one point and two output lengths: the best pair at mix share 0 with its saving's
    interval (``saving`` plus ``interval``), and at 0.5 a phase lever that saves a lot (which P1, judged at mix
    share 0, must not count)."""
    key = {"engine": "native", "arch": "qwen3-4b", "paradigm": "gqa", "batch": 32, "context": 2048}
    pairs = pd.DataFrame([{**key, "output_length": n, "mix_share": m, "prefill_lever": p, "decode_lever": d}
                          for n in (128, 512) for m in (0.0, 0.5) for p in levers for d in levers])
    policy = pd.DataFrame([{**key, "output_length": n, "mix_share": m, "prefill_lever": p, "decode_lever": d,
                            "saving_vs_static": sv, "saving_vs_static_lo": sv + interval[0],
                            "saving_vs_static_hi": sv + interval[1], "best_static_lever": "smclock:1410",
                            "switch_basis": "measured here (4 switches)"}
                           for n in (128, 512) for m, (p, d), sv in ((0.0, best_pair, saving),
                                                                     (0.5, ("default", "smclock:1410"), 0.3))])
    return tables(phase_pairs=pairs, phase_policy=policy)


CASES = {
    "C1": (summary({"power_mean_w": 200.0}, {"power_mean_w": 280.0}),
           summary({"power_mean_w": 200.0}, {"power_mean_w": 450.0}),
           summary({"phase": "prefill"})),
    "C2": (summary({"sw_power_cap_share": 0.2, "sw_power_cap_share_steady": 0.0}),  # the prefill's hold only
           summary({"sw_power_cap_share": 0.6, "sw_power_cap_share_steady": 0.5}),
           summary({"phase": "prefill"})),
    "C3": (_cap_points(prefill_loss=0.2, decode_loss=0.0), _cap_points(prefill_loss=0.0, decode_loss=0.2),
           summary({"phase": "prefill", "sw_power_cap_share": 0.9}, {})),
    "C4": (summary({"lever": "smclock:1980", "lever_kind": "smclock", "sm_clock_mhz": 1830.0}),
           summary({"lever": "smclock:1980", "lever_kind": "smclock", "sm_clock_mhz": 1975.0}),
           summary({"lever": "smclock:1410", "lever_kind": "smclock", "sm_clock_mhz": 1410.0})),
    "C5": (summary({"lever": "powercap:300", "lever_kind": "powercap", "flags": "thermal_throttle"}),
           summary({"lever": "smclock:1410", "lever_kind": "smclock", "flags": "clock_below_lock",
                    "sw_power_cap_share_steady": 0.5}),  # explained by the cap
           summary({})),
    "C6": (tables(dominance=pd.DataFrame({"arch": ["a", "b"], "testable": [True, True],
                                          "lock_dominates_caps": [True, True]})),
           tables(dominance=pd.DataFrame({"arch": ["a", "b"], "testable": [True, True],
                                          "lock_dominates_caps": [True, False]})),
           tables(dominance=pd.DataFrame({"arch": ["a"], "testable": [False], "lock_dominates_caps": [None]}))),
    "C7": (*(tables(clock_policy=pd.DataFrame({
        "arch": "a", "batch": 1, "context": 1, "energy_saving": s, "energy_saving_ci_low": s - 0.02,
        "energy_saving_ci_high": s + 0.02})) for s in (np.linspace(0.1, 0.33, 10), np.linspace(0.0, 0.06, 10))),
        tables()),
    "C8": (tables(dvfs_classes=pd.DataFrame({"arch": ["a", "b", "c"], "class": ["flat", "interior-optimum",
                                                                           "lower-clock-saves"]})),
           tables(dvfs_classes=pd.DataFrame({"arch": ["a", "b", "c"], "class": ["flat", "flat", "lower-clock-saves"]})),
           tables(dvfs_classes=pd.DataFrame({"arch": ["a"], "class": ["indeterminate"]}))),
    "C9": (tables(phase_energy=_prefill_summary(), request_energy=_request(0.45, 0.40, 0.50)),
           tables(phase_energy=_prefill_summary(), request_energy=_request(0.80, 0.70, 0.90)),
           tables(phase_energy=_prefill_summary(batch=8), request_energy=_request(0.45, 0.40, 0.50, batch=8))),
    "C10": (tables(crossovers=_cross(1000.0, 800.0, 1300.0)), tables(crossovers=_cross(100.0, 60.0, 150.0)),
            tables()),
    "C11": (*(tables(fleet=pd.DataFrame([{"scope": "all", "gpus": 10000, "decode_share": 0.8, "points": 4,
                                             "mean_saved_w_per_gpu": v, "fleet_saved_mw": mw,
                                             "fleet_saved_mw_ci_low": mw * 0.8, "fleet_saved_mw_ci_high": mw * 1.2}]))
                 for v, mw in ((62.0, 0.5), (6.0, 0.05))), tables()),
    "S1": (tables(sweetspot_cells=_cells(True)), tables(sweetspot_cells=_cells(False)),
           tables(sweetspot_cells=_cells(True, inputs=(64, 128)))),
    "S2": (*(tables(sweetspot_fit=pd.DataFrame([{"arch": "a", "batch": 1, "mape_heldout_pct": m,
                                                    "held_out": 4, "cells": 16, "mape_fit_pct": 1.0}]))
                for m in (1.0, 5.0)), tables()),
    "K1": (tables(clear_coverage=pd.DataFrame([{"arch": "a", "batch": 1, "phase": "decode", "coverage": 0.95}])),
           tables(clear_coverage=pd.DataFrame([{"arch": "a", "batch": 1, "phase": "decode", "coverage": 0.80}])),
           tables()),
    "K2": (tables(clear_components=_clear(3e-12, job_cv=0.02)), tables(clear_components=_clear(3e-12, job_cv=0.20)),
           tables(clear_components=_clear(3e-12))),  # trials of one job only
    "K3": (tables(clear_components=_clear(3e-12)), tables(clear_components=_clear(0.5e-12)),
           tables(clear_components=_clear(np.nan))),
    "P1": (_policy(("default", "smclock:1410"), 0.05),
           _policy(("smclock:1410", "smclock:1410"), 0.0),  # the best pair is a static lock: no phase lever pays
           _policy(("default", "default"), 0.0, levers=("default",))),  # nothing to pair with the default
}


def assert_claims_text(claims):
    """Every claim's reason is short and says something; no claims text writes a plural as "(s)"."""
    for r in claims.itertuples():
        assert 0 < len(r.reason) <= REASON_MAX, (r.id, r.reason)
        assert r.reason in r.evidence, (r.id, r.evidence)  # the evidence concludes with it
        for text in (r.claim, r.verdict, r.reason, r.evidence):
            assert "(s)" not in text, (r.id, text)
        assert ".." not in r.evidence and " nan" not in r.evidence, (r.id, r.evidence)  # sentences joined once


@pytest.mark.parametrize("cid", list(PREDICATES))
@pytest.mark.parametrize("which", [0, 1, 2], ids=["reproduced", "not-reproduced", "not-testable"])
def test_every_claim_can_come_out_each_way(cid, which):
    verdict, evidence, reason = PREDICATES[cid](CASES[cid][which], CFG)
    assert verdict == (REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE)[which], evidence
    assert evidence.startswith("Criterion"), evidence  # even "not testable" says what would be tested
    assert 0 < len(reason) <= REASON_MAX and "(s)" not in evidence
    assert evidence.endswith(f"{verdict.capitalize()}: {reason}"), evidence


def test_criteria_are_stated_in_the_evidence():
    for cid in PREDICATES:
        _, evidence, _ = PREDICATES[cid](CASES[cid][0], CFG)
        assert evidence.startswith("Criterion"), (cid, evidence)
    assert "no interval lies wholly" not in PREDICATES["C9"](CASES["C9"][0], CFG).evidence


def test_c9_says_why_a_low_ratio_is_not_enough():
    """A ratio under the bound whose interval reaches above it does not halve: the reason says so, with the ratio."""
    t = tables(phase_energy=_prefill_summary(), request_energy=_request(0.47, 0.38, 0.62))
    verdict, evidence, reason = PREDICATES["C9"](t, CFG)
    assert verdict == NOT_REPRODUCED
    assert reason == "mamba2: no interval wholly at or under 0.55 (lowest 0.47)"
    assert "mamba2 lowest 0.47 [0.38, 0.62]" in evidence


@pytest.mark.parametrize(("cards", "note"), [
    (("GPU-aaaaaaaa-1", "GPU-aaaaaaaa-1"), None),
    (("GPU-aaaaaaaa-1", "GPU-bbbbbbbb-2"), "The models ran on 2 recorded cards (GPU-aaaaaaaa: qwen3-4b; "
                                           "GPU-bbbbbbbb: mamba2-2.7b)"),
    (("GPU-aaaaaaaa-1", ""), "The models ran on 1 recorded card (GPU-aaaaaaaa: qwen3-4b; 1 point did not "
                             "record its card)"),
    (("", ""), "The traces did not record their cards"),
], ids=["one card", "two cards", "one recorded", "none recorded"])
def test_c9_names_the_cards_the_compared_models_ran_on(cards, note):
    """Models compared across cards: the evidence says which card each ran on (the ratio then holds the cards'
    difference); on one card, or with no card recorded at all, it says nothing of cards."""
    rows = [*_prefill_pair(), {}, {"arch": "mamba2-2.7b", "paradigm": "mamba2"}]
    s = pd.DataFrame([point(**r) for r in rows])
    s["cards"] = [cards[0], cards[1], cards[0], cards[1]]
    t = tables(phase_energy=s, request_energy=_request(0.47, 0.38, 0.62))
    evidence = evaluate_tables(t, CFG).set_index("id").loc["C9", "evidence"]
    if note is None:
        assert "separates the cards" not in evidence
    else:
        assert note in evidence and "include what separates the cards" in evidence


def test_p1_is_marked_as_the_projects_own_finding_and_counts_only_mix_share_0():
    claims = evaluate_tables(CASES["P1"][1], CFG).set_index("id")
    assert claims.loc["P1", "source"] == "project" and "not a paper claim" in claims.loc["P1", "claim"]
    assert (claims.drop(index="P1")["source"] == "paper").all()
    assert "not a paper's" in claims.loc["P1", "evidence"]
    # at mix share 0.5 the phase lever saves 30 %; at 0 the best pair is static: not reproduced
    assert claims.loc["P1", "verdict"] == NOT_REPRODUCED
    assert claims.loc["P1", "reason"] == ("a phase lever saves 2% or more, interval above 0, at 0 of 2 cells "
                                          "(median 0.0 %)")
    sim = CASES["P1"][0]
    sim["phase_energy"] = pd.DataFrame([point(backend="sim")])
    assert evaluate_tables(sim, CFG).set_index("id").loc["P1", "verdict"] == f"{REPRODUCED} {SIMULATED_MARK}"


def test_p1_counts_a_saving_only_where_its_interval_lies_above_zero():
    """The same 5 % saving: held where a rerun would still show one, not where the interval reaches zero."""
    held = evaluate_tables(_policy(("default", "smclock:1410"), 0.05, interval=(-0.02, 0.02)), CFG).set_index("id")
    assert held.loc["P1", "verdict"] == REPRODUCED
    assert "largest 5.0 % [3.0 %, 7.0 %]" in held.loc["P1", "evidence"]
    loose = evaluate_tables(_policy(("default", "smclock:1410"), 0.05, interval=(-0.06, 0.06)), CFG).set_index("id")
    assert loose.loc["P1", "verdict"] == NOT_REPRODUCED
    assert "saves at least 2% at 2, 0 of them with the interval above zero" in loose.loc["P1", "evidence"]


def test_claims_name_the_weights_their_evidence_used():
    t = summary({"weights": "checkpoint Qwen3-4B"})
    t["clear_components"] = _clear(3e-12)
    c = evaluate_tables(t, CFG).set_index("id")
    assert c.loc["C1", "weights"] == "checkpoint Qwen3-4B"
    assert c.loc["K3", "weights"] == "random (normal)"  # CLEAR's components run on random weights
    old = summary({})
    old["phase_energy"] = old["phase_energy"].drop(columns=["weights"])  # a table from before weights were kept
    assert evaluate_tables(old, CFG).set_index("id").loc["C1", "weights"] == "random (normal)"
    assert evaluate_tables(tables(), CFG).set_index("id").loc["C1", "weights"] == "none"


def test_every_reason_is_short_on_every_case():
    for cases in CASES.values():
        for t in cases:
            assert_claims_text(evaluate_tables(t, CFG))


def test_c10_passes_only_when_most_crossings_lie_in_the_range():
    x = _cross(1000.0, 800.0, 1300.0)
    x.loc[1:, ["crossover", "ci_low", "ci_high"]] = [100.0, 60.0, 150.0]  # one of three in range: not most
    assert PREDICATES["C10"](tables(crossovers=x), CFG)[0] == NOT_REPRODUCED
    x["paradigm"] = "gdn"  # paradigms come from the paradigm column, never from the model's name
    assert PREDICATES["C10"](tables(crossovers=x), CFG)[0] == NOT_TESTABLE


def _write(tmp_path, summary_rows):
    """The claims' tables on disk as the workflow writes them: this summary, every other table without rows."""
    paths = default_paths(CLAIM_TABLES, tmp_path)
    for name, path in paths.items():
        write_table(name, summary_rows if name == "phase_energy" else pd.DataFrame(), path)
    return paths


def test_each_engine_gets_its_own_verdict_and_a_comparison(tmp_path):
    rows = []
    for b, (native_w, vllm_w) in {1: (180.0, 400.0), 32: (260.0, 620.0)}.items():
        for engine, w in (("native", native_w), ("vllm", vllm_w)):
            for phase in ("prefill", "decode"):
                share = 0.5 if (engine, b, phase) == ("vllm", 32, "decode") else 0.0
                rows.append(point(engine=engine, batch=b, phase=phase,
                                  power_mean_w=w if phase == "decode" else 690.0,
                                  sw_power_cap_share=share, sw_power_cap_share_steady=share))
    claims = evaluate_claims(_write(tmp_path, pd.DataFrame(rows)), CFG)
    c1 = claims[claims["id"] == "C1"].set_index("engine")
    assert c1.loc["native", "verdict"] == REPRODUCED  # 180-260 W lies in the claimed 137-300 W
    assert c1.loc["vllm", "verdict"] == NOT_REPRODUCED
    assert "native 180-260 W, vllm 400-620 W" in c1.loc["native", "evidence"]
    assert "vllm/native power ratio 2." in c1.loc["vllm", "evidence"]
    c2 = claims[claims["id"] == "C2"].set_index("engine")
    assert c2.loc["native", "verdict"] == REPRODUCED and c2.loc["vllm", "verdict"] == NOT_REPRODUCED
    assert "native 0 of 2, vllm 1 of 2" in c2.loc["native", "evidence"]
    # CLEAR measures the native engine's components: its claims appear once
    assert (claims[claims["id"].str.startswith("K")]["engine"] == "native").all()
    assert len(claims) == len(CLAIMS) + len(CLAIMS) - 3
    assert_claims_text(claims)


def test_c9_comparison_names_an_engine_without_a_gqa_point():
    """vLLM measured only a GDN model: its ratios to GQA are empty, and the sentence says so (no 'nan')."""
    native = _request(0.80, 0.70, 0.90)
    vllm = native[native["paradigm"] != "gqa"].assign(engine="vllm", ratio_vs_gqa=float("nan"),
                                                         ratio_ci_low=float("nan"), ratio_ci_high=float("nan"))
    pe = _prefill_summary()
    t = tables(phase_energy=pd.concat([pe, pe[pe["arch"] != "qwen3-4b"].assign(engine="vllm")]),
               request_energy=pd.concat([native, vllm], ignore_index=True))
    c9 = evaluate_tables(t, CFG).set_index(["id", "engine"]).loc["C9"]
    assert c9.loc["native", "verdict"] == NOT_REPRODUCED and c9.loc["vllm", "verdict"] == NOT_TESTABLE
    assert ("lowest request-energy ratio vs GQA at batch >= 32: native 0.80, vllm none (no GQA point"
            in c9.loc["vllm", "evidence"])
    assert_claims_text(evaluate_tables(t, CFG))


def test_one_engine_has_no_comparison_sentence(tmp_path):
    rows = [point(phase=ph, power_mean_w=400.0) for ph in ("prefill", "decode")]
    claims = evaluate_claims(_write(tmp_path, pd.DataFrame(rows)), CFG)
    assert set(claims["engine"]) == {"native"} and len(claims) == len(CLAIMS)
    assert not claims["evidence"].str.contains("Engines").any()


def test_a_missing_or_damaged_table_stops_the_claims_naming_it(tmp_path):
    paths = _write(tmp_path, pd.DataFrame([point(phase="decode")]))
    paths["fleet"].unlink()
    with pytest.raises(TableError, match=r"table 'fleet'.*does not exist"):
        evaluate_claims(paths, CFG)
    paths = _write(tmp_path / "again", pd.DataFrame([point(phase="decode")]))
    paths["dominance"].write_text("")  # a stage that died while writing
    with pytest.raises(TableError, match=r"table 'dominance'.*empty file"):
        evaluate_claims(paths, CFG)
    renamed = pd.DataFrame([point(phase="decode")]).rename(columns={"lever": "knob"})
    with pytest.raises(TableError, match=r"table 'phase_energy'.*no columns \['lever'\]"):
        _write(tmp_path / "renamed", renamed)  # a stage that renamed a column cannot write its table
    paths = _write(tmp_path / "renamed", pd.DataFrame([point(phase="decode")]))
    renamed.to_parquet(paths["phase_energy"])  # nor can a reader use one written by another version
    with pytest.raises(TableError, match=r"table 'phase_energy'.*lacks the columns \['lever'\]"):
        evaluate_claims(paths, CFG)


def test_simulated_verdicts_say_so():
    t = summary({"backend": "sim", "power_mean_w": 450.0})
    c = evaluate_tables(t, CFG).set_index("id")
    assert c.loc["C1", "verdict"] == f"{NOT_REPRODUCED} {SIMULATED_MARK}"
    assert c.loc["K1", "verdict"] == NOT_TESTABLE  # no CLEAR data at all: nothing simulated to say


def test_a_predicate_that_fails_stops_instead_of_becoming_not_testable():
    broken = summary({})
    broken["phase_energy"] = broken["phase_energy"].drop(columns=["power_mean_w_ci_low"])
    with pytest.raises(KeyError):
        evaluate_tables(broken, CFG)


def test_single_job_intervals_are_named_in_the_evidence():
    c = evaluate_tables(summary({"power_mean_w": 450.0, "jobs": 1}), CFG).set_index("id")
    spread = f"{CFG['analysis']['run_to_run_sd']:.1%}"  # the config's default, from bench/run-to-run.json
    assert f"one job: their intervals are widened by the run-to-run spread of {spread}" in c.loc["C1", "evidence"]
    c2 = evaluate_tables(summary({"power_mean_w": 450.0, "jobs": 3}), CFG).set_index("id")
    assert "run-to-run" not in c2.loc["C1", "evidence"]


def test_claims_of_the_test_config_have_short_reasons(sim_run):
    """The simulated end-to-end run (config/test.yaml): every reason fits, the weights are named, P1 is there."""
    claims = pd.read_csv(sim_run / "results/claims.csv", keep_default_na=False)
    assert_claims_text(claims)
    assert list(claims["id"]) == list(CLAIMS)
    c = claims.set_index("id")
    assert c.loc["P1", "verdict"].endswith(SIMULATED_MARK) and c.loc["C1", "weights"] == "random (normal)"


def test_docs_list_every_claim_as_the_table_words_it():
    """docs/paper.md is where a reader finds the claims: the same ids and sentences as the claims table."""
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "paper.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in CLAIMS]
    assert [r.split("|")[1].strip() for r in rows] == list(CLAIMS)
    for r in rows:
        cid, text = (x.strip() for x in r.split("|")[1:3])
        assert text == CLAIMS[cid], cid


def test_p1_on_tables_the_phase_policy_stage_computes():
    """P1 read from phase_policy_tables' own output (not hand-made columns): a decode lock that saves 40 % of
    decode energy is held with tight trials and not with trials too loose to tell it from nothing."""
    from phase_energy.analysis.phase_policy import phase_policy_tables

    from .test_phase_policy import _trials

    rates = {("default", "prefill"): (0.020, 10_000.0), ("default", "decode"): (0.5, 100.0),
             ("smclock:1410", "prefill"): (0.024, 9_990.0), ("smclock:1410", "decode"): (0.3, 99.9)}
    windows = pd.DataFrame({"phase": pd.Series([], dtype=str)})
    verdicts = {}
    for noise in (0.01, 0.3):
        pairs, policy = phase_policy_tables(windows, _trials(rates, noise=noise, seed=2), [10], [0.0], 0.05,
                                            n_resamples=300, run_sd=0.0, seed=1)
        verdicts[noise] = evaluate_tables(tables(phase_pairs=pairs, phase_policy=policy), CFG).set_index("id")
    assert verdicts[0.01].loc["P1", "verdict"] == REPRODUCED
    # at 30 % trial noise the same pair is still chosen and saves over 2 %, but its interval reaches below zero
    assert verdicts[0.3].loc["P1", "verdict"] == NOT_REPRODUCED
    assert "saves at least 2% at 1, 0 of them with the interval above zero" in verdicts[0.3].loc["P1", "evidence"]

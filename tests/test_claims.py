"""Claims over synthetic result tables: each engine judged on its own rows, engines compared in one sentence."""

import pandas as pd

from phase_energy.claims import evaluate_claims
from phase_energy.config import validate_config


def _summary(rows):
    base = {"paradigm": "gqa", "lever": "default", "lever_kind": "default", "lever_value": None, "rep": 0,
            "backend": "nvml", "floor_fraction": 0.5, "sw_power_cap_share": 0.0, "tokens_per_s": 100.0,
            "j_per_token": 1.0, "flags": ""}
    return pd.DataFrame([{**base, **r} for r in rows])


def _write(tmp_path, summary):
    tables = tmp_path / "tables"
    tables.mkdir()
    summary.to_parquet(tables / "phase_energy.parquet", index=False)
    return tables


def test_each_engine_gets_its_own_verdict_and_a_comparison(tmp_path):
    rows = []
    for b, (native_w, vllm_w) in {1: (180.0, 400.0), 32: (260.0, 620.0)}.items():
        for engine, w in (("native", native_w), ("vllm", vllm_w)):
            for phase in ("prefill", "decode"):
                rows.append({"engine": engine, "arch": "qwen3-4b", "batch": b, "context": 2048, "phase": phase,
                             "power_mean_w": w if phase == "decode" else 690.0,
                             "sw_power_cap_share": 0.5 if (engine, b, phase) == ("vllm", 32, "decode") else 0.0})
    claims = evaluate_claims(_write(tmp_path, _summary(rows)), validate_config({}))
    c1 = claims[claims["id"] == "C1"].set_index("engine")
    assert c1.loc["native", "verdict"] == "reproduced"  # 180-260 W lies in the claimed 137-300 W
    assert c1.loc["vllm", "verdict"] == "not reproduced"
    assert "native 180-260 W, vllm 400-620 W" in c1.loc["native", "evidence"]
    assert "vllm/native power ratio 2." in c1.loc["vllm", "evidence"]
    c2 = claims[claims["id"] == "C2"].set_index("engine")
    assert c2.loc["native", "verdict"] == "reproduced" and c2.loc["vllm", "verdict"] == "not reproduced"
    assert "native 0 of 2, vllm 1 of 2" in c2.loc["native", "evidence"]
    # CLEAR measures the native engine's components: its claims appear once
    assert (claims[claims["id"].str.startswith("K")]["engine"] == "native").all()
    assert len(claims) == 16 + 13


def test_one_engine_has_no_comparison_sentence(tmp_path):
    rows = [{"engine": "native", "arch": "qwen3-4b", "batch": 1, "context": 2048, "phase": ph, "power_mean_w": 400.0}
            for ph in ("prefill", "decode")]
    claims = evaluate_claims(_write(tmp_path, _summary(rows)), validate_config({}))
    assert set(claims["engine"]) == {"native"} and len(claims) == 16
    assert not claims["evidence"].str.contains("Engines").any()

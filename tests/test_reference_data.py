"""The committed H200 reference traces: regenerate every table, figure and the report, measuring nothing."""

import json
import re
import shutil

import pandas as pd
import pytest
import yaml

from phase_energy.report.catalog import FIGURES

from .conftest import ROOT, copy_workflow, run_snakemake
from .test_claims import assert_claims_text

pytestmark = pytest.mark.slow
REF = "reference-data/h200-default"
CLEAR_REF = "reference-data/h200-clear"
ARGS = ("--cores", "2", "--configfile", "config/h200-reference.yaml")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("ref"))
    shutil.copytree(ROOT / REF, wd / REF)
    shutil.copytree(ROOT / CLEAR_REF, wd / CLEAR_REF)
    dry = run_snakemake(wd, "-n", *ARGS)
    assert dry.returncode == 0, dry.stderr[-3000:]
    res = run_snakemake(wd, *ARGS)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rep = run_snakemake(wd, *ARGS, "--report", "report.html")
    assert rep.returncode == 0, rep.stderr[-2000:]
    return wd, dry.stdout + dry.stderr


def test_reference_traces_are_real_compact_and_default_lever():
    status = sorted((ROOT / REF / "traces").glob("**/status.json"))
    assert status, "no reference traces committed"
    size = sum(p.stat().st_size for p in (ROOT / REF).rglob("*") if p.is_file())
    assert size < 20e6
    measured, points = 0, set()
    for s in status:
        parts = s.relative_to(ROOT / REF / "traces").parts
        assert parts[0] == "engine~native"  # every trace of the campaign came from the native engine
        points.add(tuple(part.split("~")[1] for part in parts[1:4]))
        meta = json.loads((s.parent / "metadata.json").read_text())
        assert meta["backend"] == "nvml" and meta["lever_requested"] == "default"
        assert meta["lever_enforced"]["locked_sm_clock_mhz"] is None
        record = json.loads(s.read_text())
        if record["status"] == "skipped":  # did not fit: the reason names the memory it needs
            assert record["reason"].startswith("memory:") and meta["gpu"]["name"] == "not measured"
            continue
        assert record["status"] == "ok", record
        assert "H200" in meta["gpu"]["name"]
        measured += 1
    cfg = yaml.safe_load((ROOT / "config/h200-reference.yaml").read_text())
    grid = {(a, str(b), str(c)) for a in cfg["architectures"] for b in cfg["batch_sizes"] for c in cfg["contexts"]}
    assert points == grid, f"missing: {sorted(grid - points)}; not in the config: {sorted(points - grid)}"
    assert measured >= 0.95 * len(grid)  # a few points do not fit in memory; the rest are measured


def test_regeneration_schedules_no_measurement(regenerated):
    _, dry = regenerated
    assert re.search(r"^energy\s+1\b", dry, re.M), dry[-2000:]  # the job table of the dry run
    assert not re.search(r"^measure\s+\d+", dry, re.M)
    assert not re.search(r"^clear_measure\s+\d+", dry, re.M)


def test_claims_from_real_traces(regenerated):
    wd, _ = regenerated
    c = pd.read_csv(wd / "results/claims.csv", keep_default_na=False)
    assert_claims_text(c)  # every reason fits its cell; no "(s)"
    c = c.set_index("id")
    assert set(c["backend"]) == {"nvml"} and c.loc["C1", "weights"] == "random (normal)"  # no weights record
    assert c.loc["P1", "source"] == "project" and c.loc["P1", "verdict"] == "not testable"  # default lever only
    for cid in ("C1", "C2"):
        assert c.loc[cid, "verdict"] in ("reproduced", "not reproduced"), c.loc[cid, "evidence"]
    for cid in ("C4", "C5", "C6", "C7", "C8", "C11"):
        assert c.loc[cid, "verdict"] == "not testable"
    assert "prefill" in c.loc["C3", "evidence"]
    # one CLEAR job per point: K2, the spread between jobs, cannot be judged (and says why)
    assert c.loc["K2", "verdict"] == "not testable" and "between jobs" in c.loc["K2", "evidence"]
    for cid in ("K1", "K3"):  # CLEAR on the same card: evaluated, not skipped
        assert c.loc[cid, "verdict"] in ("reproduced", "not reproduced"), c.loc[cid, "evidence"]
        assert c.loc[cid, "backend"] == "nvml"


def test_clear_reference_covers_four_paradigms_both_phases(regenerated):
    wd, _ = regenerated
    cov = pd.read_csv(wd / "results/tables/clear_coverage.csv")
    assert set(cov["paradigm"]) == {"gqa", "mla", "gdn", "mamba2"}
    assert set(cov["batch"]) == {1, 32} and set(cov["phase"]) == {"prefill", "decode"} and len(cov) == 16
    comp = pd.read_csv(wd / "results/tables/clear_components.csv")
    assert (comp["counter_ticks"] >= 50).all() and (comp["trials"] >= 3).all()
    for s in sorted((ROOT / CLEAR_REF / "traces").glob("**/metadata.json")):
        meta = json.loads(s.read_text())
        assert meta["backend"] == "nvml" and meta["lever"] == "default" and "H200" in meta["gpu"]["name"]


def test_figures_and_report_from_real_traces(regenerated):
    wd, _ = regenerated
    for name in FIGURES:
        svg = (wd / "figures" / f"{name}.svg").read_text()
        assert "SIMULATED" not in svg, name
    html = (wd / "report.html").read_text(errors="replace")
    assert len(html) > 50_000 and "fig05_roofline" in html
    phases = pd.read_parquet(wd / "results/tables/phase_energy.parquet")
    dec = phases[phases["phase"] == "decode"]
    assert dec["floor_fraction"].between(0.05, 1.2).all()  # every decode row comes with its floor fraction


def test_sweetspot_from_real_traces(tmp_path):
    wd = copy_workflow(tmp_path / "ss")
    shutil.copytree(ROOT / "reference-data/h200-sweetspot", wd / "reference-data/h200-sweetspot")
    res = run_snakemake(wd, "--cores", "2", "--configfile", "config/h200-sweetspot.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    fits = pd.read_csv(wd / "results/tables/sweetspot_fit.csv")
    assert fits["arch"].tolist() == ["qwen3-4b"] and fits.loc[0, "held_out"] == 7  # one input length
    claims = pd.read_csv(wd / "results/claims.csv").set_index("id")
    assert claims.loc["S2", "backend"] == "nvml" and "held-out MAPE" in claims.loc["S2", "evidence"]


ENGINES_REF = "reference-data/h200-engines"


def test_engine_comparison_regenerates_per_engine(tmp_path):
    """Native and vLLM traces of one card: no measurement, claims per engine, the side-by-side figure."""
    wd = copy_workflow(tmp_path / "eng")
    shutil.copytree(ROOT / ENGINES_REF, wd / ENGINES_REF)
    args = ("--cores", "2", "--configfile", "config/h200-engines.yaml")
    dry = run_snakemake(wd, "-n", *args)
    assert dry.returncode == 0 and not re.search(r"^measure\s+\d+", dry.stdout, re.M), dry.stderr[-2000:]
    res = run_snakemake(wd, *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cards = set()
    for s in (wd / yaml.safe_load((ROOT / "config/h200-engines.yaml").read_text())["traces"]).rglob("metadata.json"):
        meta = json.loads(s.read_text())
        cards.add(meta["gpu"]["uuid"])
        if meta["engine"] == "vllm":  # vLLM's own default: the next batch scheduled while this one runs
            assert meta["engine_info"]["async_scheduling"] is True and meta["engine_info"]["vllm_version"] == "0.26.0"
    assert len(cards) == 1  # engines are compared on one card
    c = pd.read_csv(wd / "results/claims.csv")
    assert set(c["engine"]) == {"native", "vllm"}
    c1 = c[c["id"] == "C1"].set_index("engine")["evidence"]
    assert all("Engines on the" in e and "vllm/native power ratio" in e for e in c1)
    c2 = c[c["id"] == "C2"].set_index("engine")
    # this card's finding: vLLM's shorter steps at batch 128 run under the SW power cap, the native engine's do not
    assert c2.loc["native", "verdict"] == "reproduced" and c2.loc["vllm", "verdict"] == "not reproduced"
    assert "native 0 of 10, vllm 2 of 10" in c2.loc["vllm", "evidence"]
    assert not c["evidence"].str.contains(r"\.\.|\bnan\b", regex=True).any()
    assert not c["evidence"].str.contains("recorded card").any()  # one card: nothing to say of cards
    assert "SIMULATED" not in (wd / "figures/fig14_engines.svg").read_text()
    assert "no data to draw" not in (wd / "figures/fig14_engines.svg").read_text()


def test_vllm_campaign_grid_regenerates_from_its_traces(tmp_path):
    """The vLLM campaign grid's traces: no measurement, vLLM only, every point that ran on a recorded card (a
    session's group of points shares one engine and one card; the campaign resumed on another session's card,
    for the next preset or a preset's remaining batches), skipped points with their reason."""
    wd = copy_workflow(tmp_path / "vllm")
    shutil.copytree(ROOT / "reference-data/h200-vllm", wd / "reference-data/h200-vllm")
    args = ("--cores", "2", "--configfile", "config/h200-vllm.yaml")
    dry = run_snakemake(wd, "-n", *args)
    assert dry.returncode == 0 and not re.search(r"^measure\s+\d+", dry.stdout, re.M), dry.stderr[-2000:]
    res = run_snakemake(wd, *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    metas = [json.loads(s.read_text()) for s in (wd / "reference-data/h200-vllm/traces").rglob("metadata.json")]
    assert metas and {m["engine"] for m in metas} == {"vllm"}
    cards: dict[str, set[str]] = {}  # preset -> the cards its points ran on
    for m in metas:
        if "uuid" in (m.get("gpu") or {}):  # the points that ran
            cards.setdefault(m["arch"], set()).add(m["gpu"]["uuid"])
    ran = [m for m in metas if m.get("status", "ok") == "ok" and "gpu" in m]
    assert all(m["gpu"].get("uuid", "").startswith("GPU-") for m in ran)
    assert len(set().union(*cards.values())) >= 2, cards
    jobs = pd.read_csv(wd / "results/tables/jobs.csv")
    # the grid is complete: each of its 6 x 5 x 3 points measured or skipped with a reason, none missing
    assert len(jobs) == 90 and sorted(set(jobs["status"])) == ["ok", "skipped"], jobs["status"].value_counts()
    assert (jobs["status"] == "ok").sum() == len(ran) == 73
    skipped = jobs[jobs["status"] == "skipped"]
    minicpm3 = skipped[skipped["arch"] == "minicpm3-4b"]
    assert len(minicpm3) == 15 and minicpm3["reason"].str.contains("vLLM 0.26 fails").all()
    memory = skipped[skipped["arch"] == "qwen3-4b"]  # 128 and 256 x 8192 need more than the card holds
    assert sorted(zip(memory["batch"], memory["context"], strict=True)) == [(128, 8192), (256, 8192)]
    assert memory["reason"].str.startswith("memory:").all()
    c = pd.read_csv(wd / "results/claims.csv").set_index("id")
    assert set(c["engine"]) == {"vllm"}
    # the grid's finding as measured: decode far above the paper's range, the cap binding at large batch
    assert c.loc["C1", "verdict"] == "not reproduced" and c.loc["C2", "verdict"] == "not reproduced"
    assert not c["evidence"].str.contains(r"\.\.|\bnan\b", regex=True).any()
    # the presets compared ran on different cards: C9 says which (the ratio holds the cards' difference)
    archs_on: dict[str, list[str]] = {}  # card -> the presets with points on it (a preset may be on two)
    for arch, uuids in sorted(cards.items()):
        for uuid in uuids:
            archs_on.setdefault(uuid, []).append(arch)
    on = "; ".join(f"{u[:12]}: {', '.join(a)}" for u, a in sorted(archs_on.items()))
    assert f"The models ran on {len(archs_on)} recorded cards ({on})" in c.loc["C9", "evidence"]

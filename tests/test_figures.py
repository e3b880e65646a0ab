"""Every figure laid out readably: no text over other text, nothing outside the canvas, the right marks.

The tables come from the simulated test config run end to end (the ``sim_run`` fixture, shared with
test_workflow.py), so the check covers what a user's run draws, placeholders included.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from phase_energy.analysis.tables import TABLES, read_tables
from phase_energy.report.catalog import FIGURES, figure
from phase_energy.report.figures import draw, label_engines, short_reason
from phase_energy.report.style import ARCH_COLOURS, arch_palette, layout_problems, provenance


def _tables(run, name):
    return label_engines(read_tables({n: run / "results" / TABLES[n].path for n in figure(name).tables}))


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_text_does_not_overlap_or_leave_the_canvas(sim_run, name):
    fig = draw(name, _tables(sim_run, name), sim_run / "results/traces")
    try:
        assert layout_problems(fig) == [], name
        texts = " ".join(t.get_text() for t in fig.findobj(plt.Text))
        assert "SIMULATED" in texts
        watermarked = any(t.get_gid() == "provenance-watermark" for t in fig.texts)
        assert watermarked == ("no data to draw" not in texts), "a placeholder carries no watermark, a figure does"
    finally:
        plt.close(fig)


def test_layout_check_finds_overlap_and_overflow():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.5, 0.5, "one label here", transform=ax.transAxes)
    ax.text(0.52, 0.5, "another label", transform=ax.transAxes)
    fig.text(0.9, 0.5, "runs off the right edge of the canvas")
    problems = layout_problems(fig)
    plt.close(fig)
    assert any("overlaps" in p and "one label here" in p for p in problems)
    assert any("leaves the" in p and "right edge" in p for p in problems)


def test_claims_reason_is_short_and_cut_at_a_word():
    ev = "Criterion: something is checked. Measured: " + "many words of evidence " * 10
    r = short_reason(ev)
    assert len(r) <= 90 and r.startswith("Measured:") and r.endswith("\u2026") and not r[:-1].endswith("evid")


def test_every_architecture_keeps_one_distinct_colour():
    main = ["qwen3-4b", "minicpm3-4b", "qwen3.5-4b", "mamba2-2.7b", "qwen3-4b-transmla", "nemotron-h-4b"]
    assert len({ARCH_COLOURS[a] for a in main}) == len(main)
    assert arch_palette(["mamba2-2.7b", "qwen3-4b"])["qwen3-4b"] == arch_palette(["qwen3-4b"])["qwen3-4b"]
    vllm = arch_palette(["qwen3-4b (native)", "qwen3-4b (vllm)"])
    assert vllm["qwen3-4b (native)"] != vllm["qwen3-4b (vllm)"]


def test_measured_mark_names_card_and_engine():
    t = {"windows": pd.DataFrame({"backend": ["nvml"], "engine": ["native"], "gpu_name": ["NVIDIA H200"]})}
    assert provenance(t).mark == "MEASURED: NVIDIA H200, native"
    t["windows"] = t["windows"].drop(columns="gpu_name")
    assert provenance(t, ["NVIDIA H200"]).mark == "MEASURED: NVIDIA H200, native"  # from the traces' metadata
    assert provenance({"w": pd.DataFrame({"backend": ["sim"]})}).mark == "SIMULATED"

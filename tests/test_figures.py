"""Every figure laid out readably: no text over other text, nothing outside the canvas, the right marks.

The tables come from the simulated test config run end to end (the ``sim_run`` fixture, shared with
test_workflow.py), so the check covers what a user's run draws, placeholders included.
"""

from __future__ import annotations

import re

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


def _two_weights(run) -> dict[str, pd.DataFrame]:
    """The test run's tables with a checkpoint architecture of qwen3-4b's shapes added, as
    config/random-vs-trained.yaml names it: its rows are qwen3-4b's own, 10 % more power and J/token (a checkpoint
    cannot be loaded on the simulator, so the values are shifted to tell the two apart)."""
    t = _tables(run, "fig16_random_vs_trained")
    pe = t["phase_energy"]
    trained = pe[pe["arch"] == "qwen3-4b"].assign(arch="qwen3-4b-trained", weights="checkpoint Qwen3-4B")
    for c in ("power_mean_w", "j_per_token"):
        trained[[c, f"{c}_ci_low", f"{c}_ci_high"]] *= 1.1
    return {**t, "phase_energy": pd.concat([pe, trained], ignore_index=True)}


def test_random_vs_trained_draws_both_weights_of_the_same_shapes(sim_run):
    from phase_energy.report.weights_figure import shape_groups

    t = _two_weights(sim_run)
    groups = shape_groups(t["phase_energy"])
    assert groups["qwen3-4b-trained"] == "qwen3-4b" and groups["mamba2-2.7b"] == "mamba2-2.7b"
    fig = draw("fig16_random_vs_trained", t, sim_run / "results/traces")
    try:
        assert layout_problems(fig) == []
        texts = " ".join(t.get_text() for t in fig.findobj(plt.Text))
        assert "no data to draw" not in texts
        assert "random (normal)" in texts and "checkpoint Qwen3-4B" in texts  # the legend names both
        title = fig._suptitle.get_text().replace("\n", " ")
        assert "decode power +10.0\u00a0%, J/token +10.0\u00a0%" in title  # the shift put in above
        # 2 metrics x 2 phases, each with 2 batch sizes x 2 kinds of weights; mamba2 has one kind: not drawn
        bars = [p for ax in fig.axes for p in ax.patches if p.get_height() > 0]
        assert len(bars) == 2 * 2 * 2 * 2
    finally:
        plt.close(fig)


def test_random_vs_trained_is_a_placeholder_with_one_kind_of_weights(sim_run):
    t = _tables(sim_run, "fig16_random_vs_trained")
    pe = t["phase_energy"]  # another name but the same weights: nothing to compare
    t["phase_energy"] = pd.concat([pe, pe[pe["arch"] == "qwen3-4b"].assign(arch="qwen3-4b-again")])
    fig = draw("fig16_random_vs_trained", t, sim_run / "results/traces")
    try:
        texts = " ".join(t.get_text() for t in fig.findobj(plt.Text))
        assert "no data to draw" in texts and "config/random-vs-trained.yaml" in texts
        assert not any(t.get_gid() == "provenance-watermark" for t in fig.texts)
        assert layout_problems(fig) == []
    finally:
        plt.close(fig)


def test_headline_without_levers_draws_the_default_points_alone(sim_run):
    t = _tables(sim_run, "fig00_headline")
    pe = t["phase_energy"]
    t["phase_energy"] = pe[pe["lever"] == "default"]
    fig = draw("fig00_headline", t, sim_run / "results/traces")
    try:
        assert "No lever was measured" in fig._suptitle.get_text()
        assert not [ln for ax in fig.axes for ln in ax.get_lines() if len(ln.get_xdata()) > 1]  # no curve
        stars = sum(len(c.get_offsets()) for ax in fig.axes for c in ax.collections)
        assert stars == 2 * 2 * 2  # 2 architectures x 2 batch sizes, in both panels
        assert layout_problems(fig) == []
    finally:
        plt.close(fig)


def test_headline_labels_simulated_levers_next_to_measured_defaults(sim_run):
    """Measured rows are made by relabelling the simulator's default rows (no card here)."""
    t = _tables(sim_run, "fig00_headline")
    pe = t["phase_energy"].copy()
    pe.loc[pe["lever"] == "default", ["backend", "gpu_name"]] = ["nvml", "NVIDIA H200"]
    fig = draw("fig00_headline", {**t, "phase_energy": pe}, sim_run / "results/traces")
    try:
        title = fig._suptitle.get_text().replace("\n", " ")
        assert "Lever curves SIMULATED (dashed), default points measured" in title
        legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
        assert "lever curves SIMULATED" in legend and "default lever, SIMULATED" in legend
        assert {ln.get_linestyle() for ax in fig.axes for ln in ax.get_lines()} == {"--"}  # the simulated curves
    finally:
        plt.close(fig)


def test_power_timeline_draws_the_first_largest_batch_job_at_the_default(sim_run):
    from phase_energy.report.figures import fig01_power_timeline

    jobs = pd.read_csv(sim_run / "results/tables/jobs.csv")
    ok = jobs[(jobs["status"] == "ok") & (jobs["lever"] == "default")].sort_values("job")
    want = ok[ok["batch"] == ok["batch"].max()].iloc[0]
    fig, title = fig01_power_timeline({}, sim_run / "results/traces")
    plt.close(fig)
    assert title.startswith(f"{want['arch']} batch {want['batch']} ctx {want['context']}:"), title


def test_one_figure_command_draws_several_and_needs_an_out_for_each(sim_run, tmp_path, caplog):
    from phase_energy.cli import main

    names = ["fig02_power_vs_batch", "fig05_roofline"]
    args = ["figure", *names, "--config", str(next((sim_run / "results/config").glob("analysis-*.json"))),
            *[f"--in={n}={sim_run / 'results' / TABLES[n].path}" for n in ("phase_energy", "windows")],
            "--traces", str(sim_run / "results/traces")]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "2 figures (fig02_power_vs_batch, fig05_roofline) but 1 --out paths" in caplog.text
    assert main([*args, "--out", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"a.png", "a.svg", "b.png", "b.svg"}

    def texts(svg):  # the SVG keeps its text as text
        found = set(re.findall(r"<text[^>]*>([^<]+)</text>", svg.read_text()))
        assert len(found) > 5, svg
        return found

    for name, out in zip(names, ("a", "b"), strict=True):  # each figure where its --out says, as the run drew it
        assert texts(tmp_path / f"{out}.svg") == texts(sim_run / "figures" / f"{name}.svg"), name


def test_pick_point_takes_a_combination_the_grid_holds():
    from phase_energy.report.figbase import MissingData, pick, pick_point

    d = pd.DataFrame({"batch": [32, 128, 1], "context": [8192, 2048, 512]})
    assert pick_point(d, batch=32, context=2048) == (32, 8192)  # (32, 2048) is not there; ties: the smallest
    assert pick_point(d, batch=100, context=2048) == (128, 2048)
    assert pick_point(d, batch=1, context=2048) == (1, 512)
    with pytest.raises(MissingData, match="batch, context"):
        pick_point(d.iloc[:0], batch=32, context=2048)
    # an exact tie on a log scale (8 and 128 both a factor 4 from 32): the smaller, whatever the last bit says
    tie = pd.DataFrame({"batch": [128, 8], "context": [2048, 2048]})
    assert pick_point(tie, batch=32, context=2048) == (8, 2048)
    assert pick_point(pd.DataFrame({"batch": [32, 32], "context": [8192, 512]}), batch=32, context=2048) == (32, 512)
    assert pick(tie["batch"], 32) == 8


@pytest.mark.parametrize("name", ["fig04_pareto", "fig09_cap_sweep", "fig15_phase_policy"])
def test_figure_draws_where_the_preferred_batch_lacks_the_preferred_context(sim_run, name):
    """The batch nearest 32 only at a context far from 2048, the others nearer: the figure still draws a point."""
    from phase_energy.report.figbase import pick

    t = _tables(sim_run, name)
    key = {"fig04_pareto": "pareto", "fig09_cap_sweep": "phase_energy"}.get(name, "phase_policy")
    d = t[key].copy()
    b0 = pick(d["batch"], 32)
    assert d["batch"].nunique() >= 2
    d.loc[d["batch"] == b0, "context"] = d["context"] // 4  # picked apart, batch and context name no row
    assert d[(d["batch"] == b0) & (d["context"] == pick(d["context"], 2048))].empty
    t[key] = d
    fig = draw(name, t, sim_run / "results/traces")
    try:
        assert "no data to draw" not in " ".join(x.get_text() for x in fig.findobj(plt.Text))
        assert layout_problems(fig) == []
        if name == "fig15_phase_policy":
            m = re.search(r"batch (\d+), context (\d+)", fig._suptitle.get_text())
            assert m and not d[(d["batch"] == int(m[1])) & (d["context"] == int(m[2]))].empty
    finally:
        plt.close(fig)


def test_request_energy_legend_names_every_architecture_any_panel_draws(sim_run):
    """An architecture missing at the first batch (its windows all flagged there, say) still has its legend
    entry, and the title says where it has no estimate. A third architecture is made from the simulator's
    Mamba2 rows at the larger batch only."""
    t = _tables(sim_run, "fig07_request_energy")
    r = t["request_energy"]
    big = r["batch"].max()
    extra = r[(r["arch"] == "mamba2-2.7b") & (r["batch"] == big)].assign(arch="nemotron-h-4b")
    t["request_energy"] = pd.concat([r, extra], ignore_index=True)
    fig = draw("fig07_request_energy", t, sim_run / "results/traces")
    try:
        labels = [x.get_text() for lg in fig.legends for x in lg.get_texts()]
        assert {"qwen3-4b", "mamba2-2.7b", "nemotron-h-4b"} <= set(labels)
        small = r["batch"].min()
        assert f"no estimate for nemotron-h-4b at batch {small}" in fig._suptitle.get_text().replace("\n", " ")
        assert layout_problems(fig) == []
    finally:
        plt.close(fig)


def _counting(monkeypatch) -> dict[str, int]:
    """How often, from now on, a figure is drawn in full and laid out (tight or constrained layout)."""
    from collections import Counter

    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine, TightLayoutEngine

    counts: Counter[str] = Counter()

    def count(owner, attr, key):
        original = getattr(owner, attr)

        def counted(self, *args, **kwargs):
            counts[key] += 1
            return original(self, *args, **kwargs)
        monkeypatch.setattr(owner, attr, counted)

    count(Figure, "draw", "draws")
    count(TightLayoutEngine, "execute", "layouts")
    count(ConstrainedLayoutEngine, "execute", "layouts")
    return counts


@pytest.mark.parametrize("name,layouts", [("fig00_headline", 1), ("fig02_power_vs_batch", 2), ("fig05_roofline", 1),
                                          ("fig07_request_energy", 1)])
def test_a_figure_is_laid_out_once_and_drawn_once_per_file(sim_run, tmp_path, monkeypatch, name, layouts):
    """Constrained layout (fig00, fig07), tight layout (fig05): each laid out once; a seaborn grid (fig02) once when
    made and once drawn; then drawn once for the PNG and once for the SVG: savefig lays nothing out again."""
    from phase_energy.report.figures import render

    counts = _counting(monkeypatch)
    render(name, {n: sim_run / "results" / TABLES[n].path for n in figure(name).tables}, tmp_path / name, {},
           sim_run / "results/traces")
    assert "no data to draw" not in (tmp_path / f"{name}.svg").read_text()  # the figure itself, not a placeholder
    assert dict(counts) == {"layouts": layouts, "draws": 2}


def test_seaborn_grids_and_heatmaps_come_out_the_same_without_being_drawn(monkeypatch):
    """Under lean_seaborn a relplot is laid out as often as without it, but its legend measured without a draw
    (the figure widened for it as much); a heatmap's overlapping tick labels are turned as with seaborn's own
    draw, also on a square heatmap and in a constrained layout (where the draw's layout decides them)."""
    import numpy as np
    import seaborn as sns

    from phase_energy.report.figbase import lean_seaborn

    d = pd.DataFrame({"x": [1, 2, 3] * 4, "y": range(12), "kind": ["a", "a", "a", "b", "b", "b"] * 2,
                      "panel": ["left"] * 6 + ["right"] * 6})

    def grid():
        return sns.relplot(data=d, x="x", y="y", hue="kind", col="panel", kind="line", height=2).figure

    def heatmap(columns, label, square=False, layout=None):
        cells = pd.DataFrame(np.arange(4 * columns).reshape(4, columns), columns=[f"{label}{i}" for i in
                                                                                  range(columns)])
        fig, ax = plt.subplots(figsize=(4, 3), layout=layout)
        sns.heatmap(cells, ax=ax, xticklabels=True, yticklabels=True, square=square)
        turns = [t.get_rotation() for t in ax.get_xticklabels()]
        plt.close(fig)
        return turns

    # (columns, label, square, layout); in a constrained layout the draw's layout leaves room that placing the
    # ticks alone would not (6 x "xxxxx": upright on an undrawn figure, level when drawn)
    maps = [(20, "a long column name "), (3, "a"), (6, "abcde", True), (6, "xxxxx", False, "constrained"),
            (6, "xxxxx", True, "constrained"), (12, "ab", True, "constrained")]
    counts = _counting(monkeypatch)
    plain = grid()
    plain_counts = dict(counts)
    assert plain_counts["draws"] >= 2  # seaborn's measuring draws, without the context
    plain_turns = [heatmap(*m) for m in maps]
    counts.clear()
    with lean_seaborn():
        lean = grid()
        assert dict(counts) == {"layouts": plain_counts["layouts"]}  # the same layouts, no draw
        lean_turns = [heatmap(*m) for m in maps]
    try:
        assert tuple(lean.get_size_inches()) == tuple(plain.get_size_inches())  # widened by the same legend width
        assert lean.subplotpars.right == plain.subplotpars.right
        assert lean_turns == plain_turns
        assert any(90 in t for t in lean_turns) and any(0 in t for t in lean_turns)  # both ways among the cases
    finally:
        for f in (plain, lean):
            plt.close(f)


@pytest.mark.parametrize("name", ["fig00_headline", "fig02_power_vs_batch", "fig05_roofline", "fig07_request_energy",
                                  "fig11_sweetspot"])
def test_a_figure_saved_the_short_way_is_the_file_matplotlib_and_seaborn_make(sim_run, tmp_path, monkeypatch, name):
    """render's PNG equals, byte for byte, the figure drawn with seaborn's own draws and saved by savefig with its
    layout engine as it was: the constrained (fig00, fig07), seaborn grid (fig02), tight (fig05) and heatmap
    (fig11) figures."""
    import contextlib

    from phase_energy.report import figures as figs

    tables = {n: sim_run / "results" / TABLES[n].path for n in figure(name).tables}
    figs.render(name, tables, tmp_path / "short" / name, {}, sim_run / "results/traces")
    monkeypatch.setattr(figs, "lean_seaborn", contextlib.nullcontext)
    fig = figs.draw(name, label_engines(read_tables(tables)), sim_run / "results/traces")
    try:
        fig.savefig(tmp_path / f"{name}.png")
    finally:
        plt.close(fig)
    assert (tmp_path / "short" / f"{name}.png").read_bytes() == (tmp_path / f"{name}.png").read_bytes()


def test_the_figure_jobs_import_seaborn_without_scipy():
    """seaborn imports SciPy's stats and cluster for nothing a figure draws; a figure job starts without them, and
    SciPy stays importable for whatever needs it later."""
    import subprocess
    import sys

    code = ("import sys; import phase_energy.report.figures; "
            "print(sorted(m for m in sys.modules if m in ('scipy.stats', 'scipy.cluster'))); "
            "import scipy.stats; print(scipy.stats.norm.cdf(0))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["[]", "0.5"]


def _doubled(t: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every table's rows twice, the copy's measured floats 5 % higher: two rows for every x a plot draws (the
    floats that place a row, a lever's value, the power limit or the mix share, stay as they are)."""
    keys = {"lever_value", "power_limit_w", "locked_sm_clock_mhz", "mix_share"}
    out = {}
    for name, df in t.items():
        if len(df):
            copy = df.copy()
            floats = [c for c in copy.select_dtypes("float").columns if c not in keys]
            copy[floats] = copy[floats] * 1.05
            df = pd.concat([df, copy], ignore_index=True)
        out[name] = df
    return out


def _filled_bands(fig: plt.Figure) -> int:
    """Filled areas drawn as collections (a line plot's interval band, a figure's own interval band)."""
    import numpy as np
    from matplotlib.collections import PolyCollection

    return sum(1 for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection) and any(
        len(p.vertices) and np.isfinite(p.vertices).all() for p in c.get_paths()))


@pytest.mark.parametrize("name", ["fig02_power_vs_batch", "fig07_request_energy", "fig09_cap_sweep",
                                  "fig15_phase_policy"])
def test_a_line_plot_draws_no_interval_over_rows_and_the_same_whatever_the_global_random_state(sim_run, name):
    """Over tables with two rows at every x, a line plot draws no more filled bands than over the tables
    themselves (seaborn would bootstrap a band over such rows unless asked for none; fig15 draws bands of its
    own), and comes out the same PNG with NumPy's global random state set differently before each draw
    (seaborn's bootstrap and jitter draw from it; fig12's seeded jitter: tests/test_sweetspot.py)."""
    import io

    import numpy as np

    t = _tables(sim_run, name)
    fig = draw(name, t, sim_run / "results/traces")
    own = _filled_bands(fig)
    plt.close(fig)
    drawn = []
    for seed in (1, 2):
        np.random.seed(seed)
        fig = draw(name, _doubled(t), sim_run / "results/traces")
        try:
            assert "no data to draw" not in " ".join(x.get_text() for x in fig.findobj(plt.Text))
            assert _filled_bands(fig) == own
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            drawn.append(buf.getvalue())
        finally:
            plt.close(fig)
    assert drawn[0] == drawn[1]


def test_fixed_jitter_seeds_the_global_state_and_gives_it_back():
    import numpy as np

    from phase_energy.report.figbase import fixed_jitter

    np.random.seed(7)
    expected = np.random.uniform(size=3)
    np.random.seed(7)
    with fixed_jitter(3):
        inside = np.random.uniform(size=3)
    after = np.random.uniform(size=3)
    np.random.seed(3)
    assert (inside == np.random.uniform(size=3)).all()  # drawn from the seeded state
    assert (after == expected).all()  # the state outside as if nothing had drawn from it
    np.random.seed(7)
    with pytest.raises(ZeroDivisionError), fixed_jitter(3):
        np.random.uniform(size=5)
        _ = 1 / 0
    assert (np.random.uniform(size=3) == expected).all()  # given back when the figure fails too


@pytest.mark.parametrize("cap_first", [False, True])
def test_cap_sweep_draws_one_estimate_per_cap_the_cap_lever_before_the_default(sim_run, cap_first):
    """A cap lever at the card's limit is added (the 300 W cap's rows, 10 % more throughput and its interval's
    bounds), next to the default, which the sweep places at the limit too, its rows before or after the default's:
    the line at the limit shows the cap lever's estimate and interval, neither the default's nor a mean of the
    two, and no band is drawn."""
    from matplotlib.collections import PolyCollection

    t = _tables(sim_run, "fig09_cap_sweep")
    pe = t["phase_energy"]
    limit = float(pe["power_limit_w"].max())
    at_limit = pe[pe["lever"] == "powercap:300"].assign(lever=f"powercap:{limit:g}", lever_value=limit)
    at_limit["tokens_per_s"] *= 1.1
    at_limit[["tokens_per_s_ci_low", "tokens_per_s_ci_high"]] *= 1.1
    t["phase_energy"] = pd.concat([at_limit, pe] if cap_first else [pe, at_limit], ignore_index=True)
    row = at_limit[(at_limit["arch"] == "qwen3-4b") & (at_limit["phase"] == "decode") & (at_limit["batch"] == 8)]
    fig = draw("fig09_cap_sweep", t, sim_run / "results/traces")
    try:
        ax = next(ax for ax in fig.axes if ax.get_title() == "throughput (tokens/s) | decode")
        ys = [float(y) for ln in ax.get_lines() for x, y in zip(ln.get_xdata(), ln.get_ydata(), strict=True)
              if x == limit]
        assert float(row["tokens_per_s"].iloc[0]) in ys
        default = pe[(pe["arch"] == "qwen3-4b") & (pe["phase"] == "decode") & (pe["batch"] == 8)
                     & (pe["lever"] == "default")]["tokens_per_s"].iloc[0]
        assert float(default) not in ys and (float(default) + float(row["tokens_per_s"].iloc[0])) / 2 not in ys
        # its interval too: the cap lever's, not the default's
        bounds = {(lo, hi) for title, x, lo, hi, _ in _interval_lines(fig)
                  if title == "throughput (tokens/s) | decode" and x == limit}
        assert (float(row["tokens_per_s_ci_low"].iloc[0]), float(row["tokens_per_s_ci_high"].iloc[0])) in bounds
        base = pe[(pe["arch"] == "qwen3-4b") & (pe["phase"] == "decode") & (pe["batch"] == 8)
                  & (pe["lever"] == "default")].iloc[0]
        assert (float(base["tokens_per_s_ci_low"]), float(base["tokens_per_s_ci_high"])) not in bounds
        assert not [c for a in fig.axes for c in a.collections if isinstance(c, PolyCollection)]
    finally:
        plt.close(fig)


def test_figure_time_draws_every_figure_and_gives_back_what_it_timed(sim_run, tmp_path):
    """bench/figure_time.py draws every figure of a finished run into its folder, times each and splits the
    whole into its parts; afterwards the functions it timed are matplotlib's and this package's own again."""
    import matplotlib.figure
    import matplotlib.layout_engine
    from bench.figure_time import time_figures

    from phase_energy.report import figures

    before = (figures.draw, figures.read_tables, matplotlib.figure.Figure.savefig,
              matplotlib.layout_engine.ConstrainedLayoutEngine.execute)
    res = time_figures(sim_run, tmp_path)
    assert list(res["figures_s"]) == list(FIGURES)
    assert {f"{n}.{ext}" for n in FIGURES for ext in ("png", "svg")} <= {p.name for p in tmp_path.iterdir()}
    # each figure read its tables, was drawn and saved twice; the untimed first figure is not counted
    assert {"read_tables", "draw", "save_png", "save_svg"} <= set(res["parts_s"])
    assert sum(res["parts_s"].values()) <= res["total_s"] + 0.15  # parts inside the figures; each rounded
    assert (figures.draw, figures.read_tables, matplotlib.figure.Figure.savefig,
            matplotlib.layout_engine.ConstrainedLayoutEngine.execute) == before


def _panel(fig: plt.Figure, ax: plt.Axes, grid_names: bool) -> str:
    """A panel's name: its title, or (``grid_names``: a grid titled above its first row, labelled beside its first
    column, as fig14) ``column | row``, the title above its column and the y label beside its row."""
    if not grid_names:
        return ax.get_title()
    spec = ax.get_subplotspec()
    grid = [(a, a.get_subplotspec()) for a in fig.axes if a.get_subplotspec() is not None]
    title = next(a.get_title() for a, sp in grid if sp.colspan == spec.colspan and a.get_title())
    label = next(a.get_ylabel() for a, sp in grid if sp.rowspan == spec.rowspan and a.get_ylabel())
    return f"{title} | {label}"


def _interval_lines(fig: plt.Figure, grid_names: bool = False
                    ) -> list[tuple[str, float, float, float, tuple[float, ...]]]:
    """Every vertical interval line drawn: (panel title, x, low, high, colour)."""
    from matplotlib.collections import LineCollection

    out = []
    for ax in fig.axes:
        for c in ax.collections:
            if isinstance(c, LineCollection):
                colours = c.get_colors()
                for i, seg in enumerate(c.get_segments()):
                    (x0, y0), (x1, y1) = seg
                    assert x0 == x1, "an interval line is vertical"
                    out.append((_panel(fig, ax, grid_names), float(x0), float(min(y0, y1)), float(max(y0, y1)),
                                tuple(float(v) for v in colours[i % len(colours)][:3])))
    return out


def _markers(fig: plt.Figure) -> int:
    """The estimates drawn: every finite point of the panels' lines that carry markers."""
    import numpy as np

    return sum(int(np.isfinite(np.asarray(ln.get_ydata(), dtype=float)).sum()) for ax in fig.axes
               for ln in ax.get_lines() if ln.get_marker() not in (None, "None", "", " "))


def test_power_vs_batch_draws_each_estimates_interval_in_its_architectures_colour(sim_run):
    """fig02: one vertical line per point and phase, from its power interval's low to its high bound (the
    table's own interval, phase_energy.csv), in its architecture's colour; the code before drew none."""
    from collections import Counter

    t = _tables(sim_run, "fig02_power_vs_batch")
    d = t["phase_energy"][t["phase_energy"]["lever"] == "default"]
    fig = draw("fig02_power_vs_batch", t, sim_run / "results/traces")
    try:
        lines = _interval_lines(fig)
        palette = arch_palette(d["arch"])
        expected = Counter((r.phase, float(r.batch), float(r.power_mean_w_ci_low), float(r.power_mean_w_ci_high),
                            tuple(float(v) for v in palette[r.arch])) for r in d.itertuples())
        assert len(expected) == len(d) > 0
        assert Counter(lines) == expected
        assert len(lines) == _markers(fig)
    finally:
        plt.close(fig)


def _two_engines(t: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The phase-energy table measured again by a second engine: 10 % more power and 20 % more energy per token,
    their intervals' bounds too."""
    pe = t["phase_energy"]
    other = pe.assign(engine="vllm")
    for c in [c for c in pe.columns if c.startswith(("power_mean_w", "j_per_token"))]:
        other[c] = other[c] * (1.1 if c.startswith("power") else 1.2)
    return label_engines({**t, "phase_energy": pd.concat([pe.assign(engine="native"), other], ignore_index=True)})


@pytest.mark.parametrize("name", ["fig09_cap_sweep", "fig14_engines"])
def test_a_line_figure_draws_one_interval_per_estimate_from_the_table(sim_run, name):
    """fig09 (cap sweep) and fig14 (engines, on a second engine's copy of the table): as many interval lines
    as markers; each from the low to the high bound of the interval of a table row whose metric, phase (fig09)
    or paradigm (fig14) is its panel's and whose cap (fig09) or batch (fig14) is its x, in that row's colour:
    its architecture's (fig09), one colour per engine (fig14). The code before drew none."""
    import numpy as np

    t = _tables(sim_run, name)
    if name == "fig14_engines":
        t = _two_engines(t)
    pe = t["phase_energy"]
    cap = np.where(pe["lever_kind"] == "default", pe["power_limit_w"], pe["lever_value"])
    palette = arch_palette(pe["arch"])
    fig = draw(name, t, sim_run / "results/traces")
    try:
        assert "no data to draw" not in " ".join(x.get_text() for x in fig.findobj(plt.Text))
        lines = _interval_lines(fig, grid_names=name == "fig14_engines")
        assert len(lines) == _markers(fig) > 0
        metric = {"power": "power_mean_w", "throughput": "tokens_per_s", "energy": "j_per_token"}
        engine_colours: dict[str, set] = {}
        for title, x, low, high, colour in lines:
            left, right = title.split(" | ")
            label, panel = (left, right) if name == "fig09_cap_sweep" else (right, left)
            m = next(v for k, v in metric.items() if k in label)
            same = (pe[f"{m}_ci_low"] == low) & (pe[f"{m}_ci_high"] == high)
            if name == "fig09_cap_sweep":
                rows = pe[same & (pe["phase"] == panel) & (cap == x)]
                assert any(np.allclose(colour, palette[a]) for a in rows["arch"]), (title, x, low, high)
            else:
                rows = pe[same & (pe["paradigm"] == panel) & (pe["batch"] == x)]
                assert rows["engine"].nunique() == 1, (title, x, low, high)
                engine_colours.setdefault(rows["engine"].iloc[0], set()).add(colour)
        if name == "fig14_engines":  # one colour per engine, and the engines' apart
            assert sorted(engine_colours) == ["native", "vllm"]
            assert all(len(c) == 1 for c in engine_colours.values())
            assert engine_colours["native"] != engine_colours["vllm"]
    finally:
        plt.close(fig)


def test_the_engines_figure_names_each_panel_once_and_ticks_the_batches_measured(sim_run):
    """fig14 on the test grid: no two panel titles or row labels overlap (the code before wrote 'paradigm |
    metric' over each panel, and the bottom row's ran together), and the batch axis is labelled at the batches
    measured only (before: minor labels such as 2x10^0 ran together between 1 and 8)."""
    t = _two_engines(_tables(sim_run, "fig14_engines"))
    batches = sorted(t["phase_energy"]["batch"].unique())
    fig = draw("fig14_engines", t, sim_run / "results/traces")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        grid = [a for a in fig.axes if a.get_subplotspec() is not None]
        names = [a.title for a in grid if a.get_title()] + [a.yaxis.label for a in grid if a.get_ylabel()]
        boxes = [n.get_window_extent(renderer) for n in names]
        assert len(boxes) == 4  # two paradigms above, two metrics beside
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        labelled = 0
        for ax in grid:  # the top row shares the bottom row's axis and shows no labels of its own
            assert [float(x) for x in ax.get_xticks()] == [float(b) for b in batches]
            shown = [x.get_text() for x in ax.get_xticklabels()]
            assert shown in ([], [str(b) for b in batches]), shown
            labelled += bool(shown)
            assert not any(x.get_text() for x in ax.xaxis.get_minorticklabels())
        assert labelled == len(grid) // 2  # the bottom row's
    finally:
        plt.close(fig)


def test_request_energy_draws_each_ratios_interval_as_a_band_in_its_architectures_colour(sim_run):
    """fig07: in each batch's panel, one band per architecture through the low and high bounds of every ratio's
    interval (request_energy), in the architecture's colour; the code before drew none."""
    import numpy as np
    from matplotlib.collections import PolyCollection

    from phase_energy.report.figbase import pick

    t = _tables(sim_run, "fig07_request_energy")
    r = t["request_energy"]
    d = r[(r["context"] == pick(r["context"], 2048)) & r["ratio_ci_low"].notna()]
    palette = arch_palette(r["arch"])
    fig = draw("fig07_request_energy", t, sim_run / "results/traces")
    try:
        checked = 0
        for ax in fig.axes:
            if not ax.get_title().startswith("batch "):
                continue
            b = int(ax.get_title().removeprefix("batch "))
            bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
            expected = d[d["batch"] == b]
            assert len(bands) == expected["arch"].nunique() > 0
            for arch, e in expected.groupby("arch"):
                band = next(c for c in bands if np.allclose(c.get_facecolor()[0][:3], palette[arch]))
                corners = {tuple(v) for p in band.get_paths() for v in p.vertices.round(9)}
                for x, lo, hi in e[["output_length", "ratio_ci_low", "ratio_ci_high"]].to_numpy(dtype=float):
                    assert (round(x, 9), round(lo, 9)) in corners and (round(x, 9), round(hi, 9)) in corners
                checked += 1
        assert checked > 0
    finally:
        plt.close(fig)

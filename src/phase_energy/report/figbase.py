"""What every figure function shares: the missing-data signal and small choices of what to draw.

Kept apart from :mod:`phase_energy.report.figures` so that figures in other modules of this package
(:mod:`~phase_energy.report.headline`, :mod:`~phase_energy.report.weights_figure`) use the same helpers.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


@contextmanager
def _scipy_unimportable() -> Iterator[None]:
    """SciPy's ``stats`` and ``cluster`` unimportable for a while, where nothing has imported them yet.

    seaborn imports them when it is imported, for what no figure here draws (kernel densities, which without them
    use seaborn's own copy of SciPy's KDE, and clustered heatmaps); they are about half the start of a figure job.
    """
    hidden = [m for m in ("scipy.stats", "scipy.cluster") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # None in sys.modules: an import of it fails
    try:
        yield
    finally:
        for m in hidden:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]  # importable again, by whatever needs it later


with _scipy_unimportable():  # figures.py takes sns from here: the first import of seaborn in a figure job
    import seaborn as sns


class MissingData(Exception):
    """Raised by a figure function when its table lacks what it needs."""


def need(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """``df`` itself, or :class:`MissingData` naming ``what`` when it has no rows."""
    if df is None or df.empty:
        raise MissingData(what)
    return df


def _draw_if_laid_out(fig: plt.Figure) -> None:
    """No draw where no engine lays the figure out when drawn (a grid's legend measures itself); else one unrendered.

    ``tight_layout`` leaves a placeholder engine behind, which lays out nothing.
    """
    from matplotlib.layout_engine import PlaceHolderLayoutEngine

    if not isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine | None):
        fig.draw_without_rendering()


@contextmanager
def lean_seaborn() -> Iterator[None]:
    """Seaborn's plotting functions without the full draws of a figure that come to nothing.

    ``FacetGrid.add_legend`` (every ``relplot`` with a legend) draws the whole figure twice, before and after
    widening it, to measure its legend, which measures itself (``Legend.get_window_extent`` takes the figure's
    renderer): those draws are left out where no layout engine acts when the figure is drawn (a grid's own
    figure), else the figure is drawn without rendering. ``heatmap`` draws the whole figure to see whether its
    tick labels overlap, which needs the figure laid out and its ticks placed: it is drawn without rendering.
    The figure comes out the same (pixel for pixel; ``tests/test_figures.py`` compares the files), drawn once
    per saved file only. This replaces seaborn's private helper ``_draw_figure`` in the two modules that call it
    (seaborn 0.13); where a seaborn has no such helper, nothing is replaced. One figure at a time: the
    helper is the module's, for every thread.
    """
    import seaborn.axisgrid
    import seaborn.matrix

    replace = ((seaborn.axisgrid, _draw_if_laid_out), (seaborn.matrix, plt.Figure.draw_without_rendering))
    patched = [(m, draw) for m, draw in replace
               if hasattr(m, "_draw_figure")]  # seaborn's helper (seaborn.utils), imported by each module
    saved = [(m, m._draw_figure) for m, _ in patched]
    for m, draw in patched:
        m._draw_figure = draw
    try:
        yield
    finally:
        for m, draw in saved:
            m._draw_figure = draw


@contextmanager
def fixed_jitter(seed: int = 0) -> Iterator[None]:
    """NumPy's global random state seeded for a while, then restored as it was.

    Seaborn's strip plot jitters its points with draws from that state: seeded, a figure that jitters
    comes out the same in every run (as every other figure does), and whatever else draws from the state
    afterwards gets what it would have got. One figure at a time: the state is the process's.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def interval_bars(g: sns.FacetGrid, data: pd.DataFrame, x: str, hue: str, palette: Mapping[Any, Any],
                  row: str | None = None, col: str | None = None, low: str = "low", high: str = "high") -> None:
    """The interval of each estimate (this project's), a vertical line from its low to its high bound, in each panel.

    ``data``: one row per estimate drawn, with the grid's ``row`` and ``col`` variables, ``x``, ``hue`` and the
    interval's bounds (``low``, ``high``); a row without both bounds gets no line. Each line takes its hue's
    colour from ``palette``. The panels' limits grow to hold the lines.
    Rows that share a panel, hue and x (estimates the plot's hue does not tell apart, such as two kinds of
    weights of one architecture) each get their line; the plot's marker there is seaborn's mean of them.
    """
    for key, ax in g.axes_dict.items():
        keys = key if row is not None and col is not None else (key,)
        sub = data
        for var, value in zip([v for v in (row, col) if v is not None], keys, strict=True):
            sub = sub[sub[var] == value]
        sub = sub[sub[low].notna() & sub[high].notna()]
        for level, d in sub.groupby(hue, sort=False):
            ax.vlines(d[x].to_numpy(dtype=float), d[low].to_numpy(dtype=float), d[high].to_numpy(dtype=float),
                      colors=[palette[level]], lw=1.2, alpha=0.8, zorder=1.5)


def facet(g: sns.FacetGrid) -> plt.Figure:
    """The figure of a seaborn grid, marked so that the frame keeps its legend outside the panels."""
    g.figure._phase_energy_facet = True  # type: ignore[attr-defined]
    return g.figure


def pick(values: pd.Series, prefer: int) -> Any:
    """The value of ``values`` nearest ``prefer`` on a log scale (a batch size, a context)."""
    return pick_point(pd.DataFrame({"value": values}), value=prefer)[0]


def pick_point(d: pd.DataFrame, **prefer: int) -> tuple[Any, ...]:
    """The combination of the columns ``prefer`` names that ``d`` holds nearest the preferred values.

    Nearest by the summed distances on a log scale, among the combinations present in a row, so a grid that
    has batch 32 only at context 8192 and context 2048 only at batch 128 gives one of those points, not the
    pair (32, 2048) it lacks. Ties go to the smallest values.
    """
    cols = list(prefer)
    combos = sorted(d[cols].drop_duplicates().itertuples(index=False, name=None))
    if not combos:
        raise MissingData(f"rows with {', '.join(cols)}")

    def distance(c: tuple[Any, ...]) -> float:
        return float(sum(abs(np.log(v) - np.log(prefer[k])) for k, v in zip(cols, c, strict=True)))

    return min(combos, key=lambda c: (round(distance(c), 9), c))  # equal distances are equal to rounding

"""What every figure function shares: the missing-data signal and small choices of what to draw.

Kept apart from :mod:`phase_energy.report.figures` so that figures in other modules of this package
(:mod:`~phase_energy.report.headline`, :mod:`~phase_energy.report.weights_figure`) use the same helpers.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


class MissingData(Exception):
    """Raised by a figure function when its table lacks what it needs."""


def need(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """``df`` itself, or :class:`MissingData` naming ``what`` when it has no rows."""
    if df is None or df.empty:
        raise MissingData(what)
    return df


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

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
    u = sorted(values.unique())
    return min(u, key=lambda v: abs(np.log(v) - np.log(prefer)))

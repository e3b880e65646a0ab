"""The look shared by every figure: theme, one fixed colour per architecture, the provenance mark, the layout check.

Colours are defined here once, so that an architecture keeps its colour in every figure whatever else is
drawn next to it. The provenance mark says where the data came from: SIMULATED (the simulator, with a
watermark) or MEASURED with the card and the engine. :func:`layout_problems` finds text that overlaps
other text or leaves the canvas; the tests run it over every figure.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import matplotlib.text
import pandas as pd
import seaborn as sns
from matplotlib.transforms import Bbox

# One colour per architecture preset (Okabe-Ito / seaborn colorblind hues, darker ones for the larger
# presets of the same family; the tiny presets share their family's colour). Names not listed take the
# spare colours below, in order of first appearance.
ARCH_COLOURS: dict[str, str] = {
    "qwen3-4b": "#0173b2",  # blue (GQA)
    "minicpm3-4b": "#de8f05",  # orange (MLA)
    "qwen3.5-4b": "#029e73",  # green (Gated DeltaNet hybrid)
    "mamba2-2.7b": "#cc78bc",  # pink-purple (Mamba2)
    "qwen3-4b-transmla": "#8c564b",  # brown (MLA converted from GQA)
    "nemotron-h-4b": "#6a3d9a",  # dark violet (Mamba2 hybrid)
    "qwen3-32b": "#1b3a6b",
    "qwen3-32b-transmla": "#4d2b1f",
    "qwen3.5-27b": "#00441b",
    "nemotron-h-47b": "#3f007d",
    "tiny-gqa": "#0173b2",
    "tiny-mla": "#de8f05",
    "tiny-gdn": "#029e73",
    "tiny-mamba2": "#cc78bc",
    "tiny-nemotron": "#6a3d9a",
    "tiny-gqa-tp2": "#1b3a6b",
}
SPARE_COLOURS = ("#56b4e9", "#d55e00", "#949494", "#ece133", "#7a0177", "#000000", "#fbafe4")
LIMIT_COLOUR = "#c0001a"  # the power limit, red dashed in every figure
WATERMARK_GID = "provenance-watermark"


def set_theme() -> None:
    """The one theme for every figure; SVG text kept as text."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"svg.fonttype": "none", "figure.dpi": 110, "savefig.dpi": 130,
                         "axes.titlesize": 11, "figure.titlesize": 13})


def _lighter(colour: str, amount: float) -> tuple[float, float, float]:
    r, g, b = mcolors.to_rgb(colour)
    h, lum, s = colorsys.rgb_to_hls(r, g, b)
    return colorsys.hls_to_rgb(h, lum + (1 - lum) * amount, s)


def arch_palette(names: Iterable[Any]) -> dict[str, Any]:
    """The fixed colour of each architecture name; ``name (engine)`` takes a lighter shade for a second engine."""
    out: dict[str, Any] = {}
    spare = iter(SPARE_COLOURS * 4)
    unknown: dict[str, str] = {}
    for name in dict.fromkeys(str(n) for n in names):
        base, _, engine = name.partition(" (")
        engine = engine.rstrip(")")
        if base not in ARCH_COLOURS and base not in unknown:
            unknown[base] = next(spare)
        colour = ARCH_COLOURS.get(base) or unknown[base]
        out[name] = _lighter(colour, 0.45) if engine and engine != "native" else mcolors.to_rgb(colour)
    return out


# ----------------------------------------------------------------------------- provenance
@dataclass(frozen=True)
class Provenance:
    """Where a figure's data came from: ``simulated`` or measured on ``gpus`` with ``engines``."""

    simulated: bool
    gpus: tuple[str, ...] = ()
    engines: tuple[str, ...] = ()

    @property
    def mark(self) -> str:
        """The title prefix: ``SIMULATED`` or ``MEASURED: NVIDIA H200, native``."""
        if self.simulated:
            return "SIMULATED"
        gpu = " + ".join(self.gpus) or "GPU not recorded"
        return f"MEASURED: {gpu}, {' + '.join(self.engines) or 'engine not recorded'}"


def _values(tables: Mapping[str, pd.DataFrame], column: str, skip: Iterable[Any] = ("", "sim", "none")) -> list[str]:
    seen: dict[str, None] = {}
    for df in tables.values():
        if len(df) and column in df:
            for v in df[column].dropna().astype(str):
                if v not in skip:
                    seen.setdefault(v)
    return sorted(seen)


def provenance(tables: Mapping[str, pd.DataFrame], gpus_from_traces: Iterable[str] = ()) -> Provenance:
    """Simulated when any row came from the simulator; else the cards (``gpu_name``, else the traces) and engines."""
    simulated = any(bool(len(df)) and "backend" in df and bool((df["backend"] == "sim").any())
                    for df in tables.values())
    if simulated:
        return Provenance(True)
    gpus = _values(tables, "gpu_name") or sorted(set(gpus_from_traces))
    return Provenance(False, tuple(gpus), tuple(_values(tables, "engine")))


def watermark(fig: plt.Figure) -> None:
    """The SIMULATED watermark across the figure (a deliberate overlay, left out of the layout check)."""
    fig.text(0.5, 0.5, "SIMULATED", fontsize=64, color="red", alpha=0.12, ha="center", va="center", rotation=25,
             transform=fig.transFigure, zorder=100, gid=WATERMARK_GID)


# ----------------------------------------------------------------------------- layout check
@contextmanager
def _recording_texts(found: list[tuple[matplotlib.text.Text, Bbox]]):  # type: ignore[no-untyped-def]
    original = matplotlib.text.Text.draw

    def draw(self: matplotlib.text.Text, renderer: Any) -> None:
        original(self, renderer)
        if self.get_visible() and self.get_text().strip() and self.get_gid() != WATERMARK_GID:
            found.append((self, self.get_window_extent(renderer)))

    matplotlib.text.Text.draw = draw  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        matplotlib.text.Text.draw = original  # type: ignore[method-assign]


def layout_problems(fig: plt.Figure, tolerance_px: float = 2.0) -> list[str]:
    """Text drawn over other text or outside the canvas, each as a sentence naming both texts; [] if none.

    Every text the figure draws is recorded as it is drawn (titles, labels, tick labels, legends, table
    cells, annotations), so texts outside the view (hidden ticks) do not count; the watermark does not.
    """
    found: list[tuple[matplotlib.text.Text, Bbox]] = []
    with _recording_texts(found):
        fig.canvas.draw()
    w, h = fig.canvas.get_width_height()
    problems = []
    for text, box in found:
        if box.x0 < -tolerance_px or box.y0 < -tolerance_px or box.x1 > w + tolerance_px or box.y1 > h + tolerance_px:
            problems.append(f"{text.get_text()!r} leaves the {w}x{h} canvas: {box.bounds}")
    for i, (a, ba) in enumerate(found):
        for b, bb in found[i + 1:]:
            dx = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
            dy = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
            if dx > tolerance_px and dy > tolerance_px:
                problems.append(f"{a.get_text()!r} overlaps {b.get_text()!r} by {dx:.0f}x{dy:.0f} px")
    return problems

"""The figures: name, report category, the tables each draws and what it needs to show anything.

Light on purpose (no plotting library): the workflow reads it when it parses, to give each figure's rule
exactly the tables the figure draws as inputs. :mod:`phase_energy.report.figures` draws them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One figure of the report."""

    category: str
    needs: str  # what the data must hold, said on the placeholder drawn without it
    tables: tuple[str, ...]  # names of phase_energy.analysis.tables (phase_energy always: engines, SIMULATED)


def _fig(category: str, needs: str, *tables: str) -> Figure:
    return Figure(category, needs, ("phase_energy", *tables))


FIGURES: dict[str, Figure] = {
    "fig00_headline": _fig("Headline", "decode at the default lever, power caps or SM clock locks"),
    "fig01_power_timeline": _fig("Power", "one trace at the default lever"),
    "fig02_power_vs_batch": _fig("Power", "prefill and decode at the default lever"),
    "fig03_clock_policy": _fig("Levers", "smclock levers and the default"),
    "fig04_pareto": _fig("Levers", "two or more levers per point", "pareto"),
    "fig05_roofline": _fig("Roofline", "decode windows", "windows"),
    "fig06_dvfs_classes": _fig("Levers", "three or more smclock levers", "dvfs_classes", "dvfs_curves"),
    "fig07_request_energy": _fig("Architectures", "GQA and another paradigm at default", "request_energy",
                                 "crossovers"),
    "fig08_clocks_throttle": _fig("Levers", "decode windows"),
    "fig09_cap_sweep": _fig("Levers", "powercap levers"),
    "fig10_claims": _fig("Claims", "the claims table (results/claims.csv)", "claims"),
    "fig11_sweetspot": _fig("SweetSpot", "3+ contexts and 3+ output lengths per architecture", "sweetspot_cells",
                            "sweetspot_fit"),
    "fig12_sweetspot_residuals": _fig("SweetSpot", "a SweetSpot fit (enough input x output cells)",
                                      "sweetspot_cells"),
    "fig13_clear": _fig("CLEAR", "CLEAR measurements (config clear.architectures)", "clear_components",
                        "clear_coverage"),
    "fig14_engines": _fig("Engines", "two engines (config engines: [native, vllm])"),
    "fig15_phase_policy": _fig("Levers", "two or more static levers per point, both phases measured (phase policy)",
                               "phase_policy"),
    "fig16_random_vs_trained": _fig("Weights", "two kinds of weights on the same shapes (a config like "
                                    "config/random-vs-trained.yaml: a preset with random weights next to its "
                                    "checkpoint)"),
}


# The figures are drawn in a few jobs (several figures each, not one job per figure), each as soon as its tables
# exist: those of the energy stage's tables, those of the later stages' and the claims' figure.
ENERGY_TABLES = frozenset({"phase_energy", "windows"})


def figure_batches() -> dict[str, list[str]]:
    """The figures each job draws: ``after_energy``, ``after_analysis``, ``after_claims`` (catalog order)."""
    def batch(f: Figure) -> str:
        if "claims" in f.tables:
            return "after_claims"
        return "after_energy" if set(f.tables) <= ENERGY_TABLES else "after_analysis"

    out: dict[str, list[str]] = {"after_energy": [], "after_analysis": [], "after_claims": []}
    for name, f in FIGURES.items():
        out[batch(f)].append(name)
    return out


def figure(name: str) -> Figure:
    """The catalog entry of ``name``; an unknown name is an error listing the figures."""
    try:
        return FIGURES[name]
    except KeyError:
        raise KeyError(f"unknown figure {name!r}; accepted: {', '.join(FIGURES)}") from None


def run_mark(status_files: Iterable[str | Path]) -> str:
    """What this run's traces are, for the report's landing text: SIMULATED, or MEASURED with cards and engines.

    Reads the metadata of about 50 jobs spread over the list whose ``status.json`` says ok; "no traces yet"
    before any job has run.
    """
    backends, gpus, engines = set(), set(), set()
    files = list(status_files)
    for f in files[:: max(1, len(files) // 50)]:  # about 50 jobs spread over the grid: it runs while parsing
        meta = Path(f).parent / "metadata.json"
        try:
            if json.loads(Path(f).read_text()).get("status") != "ok":
                continue
            m = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        backends.add(str(m.get("backend")))
        engines.add(str(m.get("engine", "native")))
        gpu = m.get("gpu")
        if isinstance(gpu, dict) and gpu.get("name"):
            gpus.add(str(gpu["name"]))
    if not backends:
        return "no traces yet"
    if "sim" in backends:
        return "SIMULATED (the simulator, no GPU measured)" + ("; some traces are real" if len(backends) > 1 else "")
    return f"MEASURED: {' + '.join(sorted(gpus)) or 'GPU not recorded'}, {' + '.join(sorted(engines))}"

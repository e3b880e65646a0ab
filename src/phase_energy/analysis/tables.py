"""The result tables: one registry of names, paths and columns, and the only code that reads or writes them.

Every table of ``results/`` is declared once in :data:`TABLES`: its name (the name of a rule's input or
output), its path under the results folder and the columns its readers rely on. Stages get explicit paths
from their rule (``phase-energy analyse <stage> --in NAME=PATH --out NAME=PATH``) and read and write
through :func:`read_table` / :func:`write_table`, so that

- a missing input, or one with no header (a stage that died while writing), is an error that names it;
- a table without a column its readers need is an error that names the column, on write and on read;
- a table may have no rows (a study that is off, an analysis nothing is testable for): it still has its
  columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where tables are read or written: the workflow parses this module
    import pandas as pd

POINT_KEYS = ("engine", "arch", "paradigm", "batch", "context")
SWEET_KEYS = ("engine", "arch", "paradigm", "batch")
CLEAR_KEYS = ("arch", "paradigm", "batch", "context", "phase")


class TableError(ValueError):
    """A result table that is missing, unreadable or lacks columns its readers need."""


@dataclass(frozen=True)
class Table:
    """One result table: where it lives (relative to the results folder) and the columns it must hold."""

    name: str
    path: str
    columns: tuple[str, ...]
    about: str

    @property
    def file(self) -> str:
        """The file name."""
        return Path(self.path).name


def _t(name: str, path: str, columns: Iterable[str], about: str) -> Table:
    return Table(name, path, tuple(columns), about)


TABLES: dict[str, Table] = {t.name: t for t in (
    _t("windows", "tables/windows.parquet",
       ["job", *POINT_KEYS, "lever", "rep", "backend", "gpu_name", "weights", "phase", "trial", "start_s", "end_s",
        "duration_s", "energy_j", "tokens", "flags", "excluded", "power_mean_w", "sm_clock_mhz", "j_per_token",
        "tokens_per_s", "lever_kind", "lever_value"],
       "every measured window of every job, summarised again from its samples, with its metrics"),
    _t("phase_trials", "tables/phase_trials.parquet",
       ["job", *POINT_KEYS, "lever", "rep", "backend", "lever_kind", "lever_value", "phase", "trial",
        "energy_j", "tokens", "duration_s", "j_per_token", "tokens_per_s", "power_mean_w", "sm_clock_mhz"],
       "one row per job, phase and trial: the trial's unexcluded windows summed"),
    _t("phase_energy", "tables/phase_energy.parquet",
       [*POINT_KEYS, "lever", "backend", "gpu_name", "weights", "lever_kind", "lever_value", "phase", "trials",
        "jobs",
        "j_per_token", "j_per_token_ci_low", "j_per_token_ci_high", "tokens_per_s", "power_mean_w",
        "power_mean_w_ci_low", "power_mean_w_ci_high", "sw_power_cap_share_steady", "interval_basis", "flags"],
       "per point and phase: estimates with 95 % intervals over jobs and trials"),
    _t("phase_energy_csv", "tables/phase_energy.csv", [*POINT_KEYS, "lever", "phase", "j_per_token"],
       "the per-phase summary as CSV, for reading by eye"),
    _t("jobs", "tables/jobs.csv", [*POINT_KEYS, "lever", "rep", "backend", "job", "status", "reason"],
       "every job the analysis read, with its status (ok or skipped, and why)"),
    _t("pareto", "tables/pareto.parquet",
       [*POINT_KEYS, "phase", "lever", "lever_kind", "lever_value", "tokens_per_s", "j_per_token", "on_frontier",
        "frontier_probability"],
       "throughput against energy per token per lever, and each lever's probability of being on the frontier"),
    _t("dominance", "tables/dominance.csv",
       [*POINT_KEYS, "testable", "lock_dominates_caps", "dominating_locks", "caps", "locks"],
       "per point: whether a clock lock dominates every power cap in decode"),
    _t("dvfs_classes", "tables/dvfs_classes.csv", [*POINT_KEYS, "class", "confidence", "point_class", "reason"],
       "the DVFS behaviour class of each point"),
    _t("dvfs_curves", "tables/dvfs_curves.parquet",
       [*POINT_KEYS, "lever_value", "sm_clock_mhz", "j_per_token", "tokens_per_s", "energy_norm",
        "throughput_norm"],
       "energy and throughput against the locked clock, relative to the default"),
    _t("clock_policy", "tables/clock_policy.csv",
       [*POINT_KEYS, "best_clock_mhz", "energy_saving", "energy_saving_ci_low", "energy_saving_ci_high",
        "throughput_loss", "power_saved_w"],
       "the lowest-energy clock within the throughput-loss bound, cross-fitted"),
    _t("fleet", "tables/fleet.csv",
       ["engine", "scope", "gpus", "decode_share", "points", "mean_saved_w_per_gpu", "fleet_saved_mw",
        "fleet_saved_mw_ci_low", "fleet_saved_mw_ci_high"],
       "the clock policy's saving projected to a fleet"),
    _t("phase_pairs", "tables/phase_pairs.parquet",
       [*POINT_KEYS, "output_length", "mix_share", "prefill_lever", "decode_lever", "switches", "request_j",
        "request_s", "latency_change", "within_bound"],
       "phase policy: request energy and latency of every (prefill lever, decode lever) pair"),
    _t("phase_policy", "tables/phase_policy.csv",
       [*POINT_KEYS, "output_length", "mix_share", "prefill_lever", "decode_lever", "request_j", "request_s",
        "saving_vs_default", "saving_vs_default_lo", "saving_vs_default_hi", "saving_vs_static",
        "saving_vs_static_lo", "saving_vs_static_hi", "best_static_lever", "pays", "switch_j", "switch_s",
        "switch_basis"],
       "phase policy: the best lever pair within the latency bound, against the best static lever and the default"),
    _t("request_energy", "tables/request_energy.parquet",
       ["engine", "arch", "paradigm", "batch", "context", "output_length", "prefill_j", "decode_j", "total_j",
        "total_ci_low", "total_ci_high", "ratio_vs_gqa", "ratio_ci_low", "ratio_ci_high"],
       "energy of a whole request (prefill and decode) and its ratio to GQA"),
    _t("crossovers", "tables/crossovers.csv",
       ["engine", "kind", "arch", "paradigm", "reference", "batch", "at", "crossover", "ci_low", "ci_high",
        "share_none", "direction"],
       "output lengths and contexts where an architecture's request energy crosses GQA's"),
    _t("sweetspot_cells", "tables/sweetspot_cells.parquet",
       [*SWEET_KEYS, "input", "output", "energy_j", "tokens_per_j", "relative_efficiency", "in_sweet_region",
        "predicted_j", "residual_pct", "held_out"],
       "SweetSpot: tokens per joule over input and output length, with the model's prediction"),
    _t("sweetspot_fit", "tables/sweetspot_fit.csv",
       [*SWEET_KEYS, "cells", "held_out", "mape_fit_pct", "mape_heldout_pct", "peak_input", "peak_output",
        "peak_tokens_per_j"],
       "SweetSpot: the analytical model's fit and its error on held-out input lengths"),
    _t("clear_components", "tables/clear_components.csv",
       [*CLEAR_KEYS, "component", "count", "jobs", "energy_per_call_j", "cv", "job_cv", "scaled_j", "j_per_flop",
        "backend"],
       "CLEAR: energy per call of each component, its spreads and its energy per FLOP"),
    _t("clear_coverage", "tables/clear_coverage.csv",
       [*CLEAR_KEYS, "model_j", "components_j", "coverage", "coverage_dynamic", "max_cv", "model_cv", "backend"],
       "CLEAR: the components' energy scaled by their counts against the whole model's"),
    _t("claims", "claims.csv", ["id", "source", "engine", "claim", "verdict", "reason", "evidence", "weights"],
       "each claim (the papers' and this project's own) with its verdict, a short reason, its evidence and the "
       "weights the evidence used"),
    _t("claims_sensitivity", "tables/claims_sensitivity.csv",
       ["id", "engine", "verdict_flagged_left_out", "verdict_all_windows", "changed", "left_out"],
       "each verdict with flagged windows left out (as published) and with every window counted"),
)}


def table(name: str) -> Table:
    """The registry entry of ``name``; an unknown name is an error listing the known ones."""
    try:
        return TABLES[name]
    except KeyError:
        raise TableError(f"unknown table {name!r}; known tables: {', '.join(TABLES)}") from None


def _missing_columns(df: pd.DataFrame, t: Table) -> list[str]:
    return [c for c in t.columns if c not in df.columns]


def read_table(name: str, path: str | Path) -> pd.DataFrame:
    """Read table ``name`` from ``path``: an error names a missing file, an empty one or missing columns."""
    import pandas as pd

    t, p = table(name), Path(path)
    if not p.is_file():
        raise TableError(f"table {name!r} ({t.about}): {p} does not exist; the stage that writes it has not run "
                         "or failed (see its log: logs/analysis/, or <results>/logs/analysis/ for a run with its own "
                         "results folder)")
    if p.stat().st_size == 0:
        raise TableError(f"table {name!r}: {p} is an empty file (no header); the stage that wrote it stopped "
                         "part-way: delete it and run the workflow again")
    if p.suffix != ".parquet" and not _ends_a_line(p):  # the workflow writes whole files (or none)
        raise TableError(f"table {name!r}: {p} does not end with a whole line: it was cut short or edited; delete "
                         "it and run the workflow again")
    try:
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as e:  # pyarrow and pandas raise many kinds for a damaged file
        raise TableError(f"table {name!r}: {p} cannot be read ({type(e).__name__}: {e}); delete it and run the "
                         "workflow again") from e
    missing = _missing_columns(df, t)
    if missing:
        raise TableError(f"table {name!r}: {p} lacks the columns {missing} its readers need; was it written by "
                         "another version? Delete it and run the workflow again")
    return df


def _ends_a_line(p: Path) -> bool:
    """Whether a text file's last byte ends a line (every CSV the stages write does)."""
    with p.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) in (b"\n", b"\r")


def write_table(name: str, df: pd.DataFrame, path: str | Path) -> None:
    """Write table ``name`` to ``path`` (format from the suffix); refuse a frame without its columns.

    A frame with no rows gets the registry's columns it lacks, so an empty result is still a whole table.
    """
    t, p = table(name), Path(path)
    if len(df) == 0:  # no rows: still the table's columns
        df = df.reindex(columns=[*df.columns, *_missing_columns(df, t)])
    missing = _missing_columns(df, t)
    if missing:
        raise TableError(f"table {name!r}: the stage produced no columns {missing}; the registry "
                         "(phase_energy.analysis.tables) says its readers need them")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    if p.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    tmp.replace(p)


def read_tables(paths: Mapping[str, str | Path]) -> dict[str, pd.DataFrame]:
    """Several tables at once: ``{name: path}`` -> ``{name: frame}``."""
    return {name: read_table(name, path) for name, path in paths.items()}


def default_paths(names: Iterable[str], results: str | Path = "results") -> dict[str, Path]:
    """Where the workflow puts the tables ``names`` under ``results`` (for a reader outside a rule)."""
    return {n: Path(results) / table(n).path for n in names}

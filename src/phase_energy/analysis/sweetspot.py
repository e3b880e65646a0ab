"""SweetSpot: energy efficiency over input x output length, and an analytical model of request energy.

Cells come from the request-energy table (one job per input length measures every output length: its
decode windows span the outputs). Efficiency is output tokens per joule of the whole request (prefill of
the input plus decode of the output), per sequence.

The model follows the cost model's terms per phase. Prefill costs FLOPs linear in the input (the GEMMs)
plus a term quadratic in it (attention over all pairs); a decode step at position p moves the weights plus
cache bytes growing linearly in p, so the decode of ``o`` tokens after ``i`` costs ``o`` times a constant
plus a term in ``sum_p p = i*o + o*(o-1)/2``. With a per-request constant:

    E(i, o) = c0 + c1*i + c2*i^2 + c3*o + c4*(i*o + o*(o-1)/2)

Architectures without attention layers (the cost model says so) drop c2 and c4. The coefficients are
fitted per architecture, batch and GPU by least squares on relative residuals, on all cells but a held-out
share, which measures the error (MAPE) of the prediction.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from phase_energy.model.costmodel import CostModel
from phase_energy.model.presets import get_preset

log = logging.getLogger(__name__)

TERMS = ("c0_request", "c1_input", "c2_input_sq", "c3_output", "c4_output_position")


def terms_for(arch: str) -> list[str]:
    """The model's terms for an architecture: no quadratic or position terms without attention layers."""
    if CostModel(get_preset(arch)).n_attention_layers == 0:
        return ["c0_request", "c1_input", "c3_output"]
    return list(TERMS)


def design(inputs: np.ndarray, outputs: np.ndarray, terms: list[str]) -> np.ndarray:
    """The model's feature columns for cells (input, output)."""
    i = np.asarray(inputs, dtype=float)
    o = np.asarray(outputs, dtype=float)
    cols = {"c0_request": np.ones_like(i), "c1_input": i, "c2_input_sq": i * i, "c3_output": o,
            "c4_output_position": i * o + o * (o - 1) / 2}
    return np.column_stack([cols[t] for t in terms])


def fit(inputs: np.ndarray, outputs: np.ndarray, energy: np.ndarray, terms: list[str]) -> np.ndarray:
    """Least squares on relative residuals (energies span orders of magnitude); columns scaled first."""
    x = design(inputs, outputs, terms)
    w = 1.0 / np.asarray(energy, dtype=float)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    coef, *_ = np.linalg.lstsq((x / scale) * w[:, None], np.asarray(energy) * w, rcond=None)
    return coef / scale


def predict(coef: np.ndarray, inputs: np.ndarray, outputs: np.ndarray, terms: list[str]) -> np.ndarray:
    """Request energy (J) the model predicts."""
    return design(inputs, outputs, terms) @ coef


def mape(measured: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error (%)."""
    return float(np.mean(np.abs(predicted - measured) / np.abs(measured)) * 100.0)


def cells_from_request(request: pd.DataFrame) -> pd.DataFrame:
    """The input x output cells: request energy at the configured output lengths."""
    if request.empty:
        return pd.DataFrame(columns=["engine", "arch", "paradigm", "batch", "input", "output", "prefill_j", "decode_j",
                                     "energy_j", "tokens_per_j", "prefill_tokens_per_j", "decode_tokens_per_j"])
    r = request[request["in_output_grid"].astype(bool)]
    cells = r.rename(columns={"context": "input", "output_length": "output", "total_j": "energy_j"})[
        ["engine", "arch", "paradigm", "batch", "input", "output", "prefill_j", "decode_j", "energy_j"]].copy()
    cells["tokens_per_j"] = cells["output"] / cells["energy_j"]
    cells["prefill_tokens_per_j"] = cells["input"] / cells["prefill_j"]  # per phase
    cells["decode_tokens_per_j"] = cells["output"] / cells["decode_j"]
    return cells.reset_index(drop=True)


def sweet_region(cells: pd.DataFrame, drop_share: float) -> pd.DataFrame:
    """Per arch and batch: the peak tokens/J cell, and which cells fall more than ``drop_share`` below it."""
    out = []
    for _, g in cells.groupby(["engine", "arch", "batch"]):
        peak = g["tokens_per_j"].max()
        g = g.copy()
        g["relative_efficiency"] = g["tokens_per_j"] / peak
        g["in_sweet_region"] = g["relative_efficiency"] >= 1.0 - drop_share
        out.append(g)
    return pd.concat(out, ignore_index=True) if out else cells


def input_terms(terms: list[str]) -> int:
    """Distinct input lengths the fit needs: the input terms (constant, linear, quadratic) it must separate."""
    return sum(t in terms for t in ("c0_request", "c1_input", "c2_input_sq"))


def fit_cells(cells: pd.DataFrame, holdout_share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit every (engine, arch, batch) without some whole input lengths; return per-cell and per-fit tables.

    All cells of one input length come from one job (its decode windows give every output length), so they
    are not independent: the held-out share is taken in whole input lengths (at least one), chosen among the
    inner ones, so the error measures how well the model predicts a job it has not seen. A fit needs as many
    other input lengths as it has input terms, and two output lengths.
    """
    rng = np.random.default_rng(seed)
    fits, per_cell = [], []
    for (engine, arch, batch), g in cells.groupby(["engine", "arch", "batch"]):
        terms = terms_for(arch)
        n = len(g)
        inputs = sorted(g["input"].unique())
        n_held = max(1, round(holdout_share * len(inputs)))
        inner = inputs[1:-1]
        if len(inputs) - n_held < input_terms(terms) or len(inner) < n_held or g["output"].nunique() < 2:
            log.warning("sweetspot: %s %s batch %d has %d input lengths, too few to fit %d input terms and hold "
                        "out %d", engine, arch, batch, len(inputs), input_terms(terms), n_held)
            continue
        held_inputs = set(rng.choice(inner, size=n_held, replace=False).tolist())
        i, o, e = g["input"].to_numpy(), g["output"].to_numpy(), g["energy_j"].to_numpy()
        held = np.isin(i, list(held_inputs))
        coef = fit(i[~held], o[~held], e[~held], terms)
        pred = predict(coef, i, o, terms)
        gg = g.copy()
        gg["predicted_j"] = pred
        gg["residual_pct"] = (pred - e) / e * 100.0
        gg["held_out"] = held
        per_cell.append(gg)
        peak = g.loc[g["tokens_per_j"].idxmax()]
        row: dict[str, Any] = {"engine": engine, "arch": arch, "paradigm": g["paradigm"].iloc[0], "batch": batch,
                               "cells": n,
                               "held_out": int(held.sum()),
                               "mape_fit_pct": mape(e[~held], pred[~held]),
                               "mape_heldout_pct": mape(e[held], pred[held]) if held.any() else np.nan,
                               "peak_input": int(peak["input"]), "peak_output": int(peak["output"]),
                               "peak_tokens_per_j": float(peak["tokens_per_j"])}
        row.update({t: float(coef[terms.index(t)]) if t in terms else 0.0 for t in TERMS})
        fits.append(row)
    cols = ["engine", "arch", "paradigm", "batch", "cells", "held_out", "mape_fit_pct", "mape_heldout_pct",
            "peak_input", "peak_output", "peak_tokens_per_j", *TERMS]
    cell_table = pd.concat(per_cell, ignore_index=True) if per_cell else cells.assign(
        predicted_j=np.nan, residual_pct=np.nan, held_out=False)
    return cell_table, pd.DataFrame(fits, columns=cols)

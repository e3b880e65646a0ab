"""CLEAR's analysis: energy per call of each component, its spreads, and coverage of the whole model."""

from __future__ import annotations

import pandas as pd

from phase_energy.model.costmodel import MODEL

GROUP = ["arch", "paradigm", "batch", "context", "phase"]


def summarise_components(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per component: energy per call, spreads, scaled energy, energy per FLOP; and coverage.

    With several jobs (``clear.repetitions``) each value is the mean over jobs of the job's mean over its
    trials. ``cv`` is the spread between back-to-back trials of a job (coefficient of variation, ddof 1,
    averaged over jobs); ``job_cv`` the spread between jobs (their means' coefficient of variation; NaN with
    one job), which is what a rerun shows (K2). Coverage is the sum over components of (energy per call x
    count) over the whole model's energy per call in the same phase (K1); ``coverage_dynamic`` does the same
    above the idle power.
    """
    if df.empty:
        return pd.DataFrame(), pd.DataFrame()
    if "job" not in df:
        df = df.assign(job="job")
    per_job = df.groupby([*GROUP, "component", "job"], sort=False).agg(
        job_energy=("energy_per_call_j", "mean"), job_sd=("energy_per_call_j", "std")).reset_index()
    per_job["job_cv"] = per_job["job_sd"] / per_job["job_energy"]
    spread = per_job.groupby([*GROUP, "component"], sort=False).agg(
        jobs=("job", "nunique"), energy_of_jobs=("job_energy", "mean"), job_sd=("job_energy", "std"),
        cv=("job_cv", "mean")).reset_index()
    spread["job_cv"] = (spread["job_sd"] / spread["energy_of_jobs"]).where(spread["jobs"] > 1)
    g = df.groupby([*GROUP, "component"], sort=False)
    comp = g.agg(count=("count", "first"), trials=("trial", "nunique"), calls=("calls", "median"),
                 energy_per_call_j=("energy_per_call_j", "mean"), sd=("energy_per_call_j", "std"),
                 energy_dynamic_per_call_j=("energy_dynamic_per_call_j", "mean"),
                 power_mean_w=("power_mean_w", "mean"), duration_s=("duration_s", "mean"),
                 counter_ticks=("counter_ticks", "min"), flops_per_call=("flops_per_call", "first"),
                 bytes_per_call=("bytes_per_call", "first"), sequences=("sequences", "first"),
                 backend=("backend", "first"),
                 flagged=("flags", lambda f: int((f.fillna("") != "").sum()))).reset_index()
    comp = comp.merge(spread[[*GROUP, "component", "jobs", "energy_of_jobs", "cv", "job_cv"]],
                      on=[*GROUP, "component"], how="left")
    comp["energy_per_call_j"] = comp.pop("energy_of_jobs")  # the mean of the jobs' means
    comp["scaled_j"] = comp["energy_per_call_j"] * comp["count"]
    comp["scaled_dynamic_j"] = comp["energy_dynamic_per_call_j"] * comp["count"]
    comp["j_per_flop"] = comp["energy_per_call_j"] / comp["flops_per_call"].where(comp["flops_per_call"] > 0)
    comp["dynamic_j_per_flop"] = comp["energy_dynamic_per_call_j"] / comp["flops_per_call"].where(
        comp["flops_per_call"] > 0)
    comp = comp.drop(columns="sd")
    rows = []
    for key, grp in comp.groupby(GROUP, sort=False):
        model = grp[grp["component"] == MODEL]
        parts = grp[grp["component"] != MODEL]
        if model.empty or parts.empty:
            continue
        m = model.iloc[0]
        rows.append({**dict(zip(GROUP, key, strict=True)),
                     "model_j": m["energy_per_call_j"], "components_j": parts["scaled_j"].sum(),
                     "coverage": parts["scaled_j"].sum() / m["energy_per_call_j"],
                     "coverage_dynamic": parts["scaled_dynamic_j"].sum() / m["energy_dynamic_per_call_j"],
                     "max_cv": grp["cv"].max(), "model_cv": m["cv"], "backend": m["backend"]})
    return comp, pd.DataFrame(rows)

"""Native engine against vLLM on one GPU, point by point, with the pipeline's own protocol and trace format.

Run on a GPU node (default lever only: nothing here changes a GPU setting):

    python bench/engine_compare.py plan --config config/h200-engines.yaml --out OUT \\
        --presets qwen3-4b,qwen3.5-4b --points 1x2048,32x2048,128x2048 --deadline-s 540

runs, for each preset in turn, vLLM and then the native engine (each in a process of its own, so that one
engine's memory and compiled state never meet the other's), and writes every point as a trace under
``OUT/engine~E/arch~A/bs~B/ctx~C/lever~default/rep~0`` -- the folder layout the workflow reads. One vLLM
engine serves all points of a preset (vLLM's start-up costs a minute or more, ``engine_start_s`` in the
metadata); the native engine builds each point as the workflow's job does. A point is started only when
the time left covers it. ``--weight-init`` runs the native engine with another random-weight distribution
(issue of trained-like weights) into ``OUT/init~<name>/...``. ``--step-timings warm-up,lead-in,warm-up`` runs
each vLLM point three times on the one engine (repetitions 0, 1, 2), its decode step timed in a warm-up decode
trial, in the first trial's lead-in, then in the warm-up again: the lead-in's before-and-after.

    python bench/engine_compare.py table --traces OUT [OUT2 ...] --json bench/engine-compare-h200.json \\
        [--points 1x2048,32x2048,128x2048,32x8192]

prints and writes the comparison: per engine, preset, batch and context the decode step time, fraction of
the bandwidth floor, decode power, J/token, prefill TFLOP/s and engine start-up, each with the card's UUID.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from phase_energy.grid import GridPoint
from phase_energy.measure.group import FIRST_POINT_S, VLLM_START_S, label, parse_points

log = logging.getLogger("engine_compare")
STEP_TIMINGS_HELP = ("vLLM: each point once per entry, as repetition 0, 1, ..., where the decode step that sizes "
                     "the windows is timed (e.g. warm-up,lead-in,warm-up: a before-and-after on one engine)")
START_S = {"vllm": VLLM_START_S, "native": 5.0}  # an engine's start before its first point, a guess


def run_engine(a: argparse.Namespace) -> None:
    """One engine, one preset, several points, in this process (:mod:`phase_energy.measure.group`)."""
    from phase_energy.config import load_config
    from phase_energy.measure.group import measure_group

    cfg = load_config(a.config)
    timings = a.step_timings.split(",") if a.step_timings else [""]
    try:
        points = [GridPoint(a.arch, b, c, "default", rep, a.engine)
                  for rep in range(len(timings)) for b, c in parse_points(a.points)]
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if a.step_timings:  # a before-and-after on one engine: repetition r runs with the r-th step timing
        from phase_energy.engines import vllm as vllm_engine
        from phase_energy.measure import job

        for mode in timings:
            if mode not in vllm_engine.STEP_TIMINGS:
                raise SystemExit(f"--step-timings: {mode!r} is not accepted; expected one of "
                                 f"{', '.join(vllm_engine.STEP_TIMINGS)}")
        build_vllm = job.vllm_workload

        def timed_as_rep(cfg: Any, engine: Any, p: GridPoint, settings: Any) -> Any:
            os.environ["PHASE_ENERGY_VLLM_STEP_TIMING"] = timings[p.rep]
            return build_vllm(cfg, engine, p, settings)
        job.vllm_workload = timed_as_rep  # type: ignore[assignment]
    out_root = Path(a.out) / (f"init~{a.weight_init}" if a.weight_init != "normal" else "")
    workload_for = None
    if a.weight_init != "normal":  # the native engine with another random-weight distribution
        from phase_energy.engines.native.runner import EngineWorkload

        def workload_for(p: GridPoint, s: Any, backend: Any) -> Any:
            return EngineWorkload(p.arch, p.batch, p.context, s.max_output, seed=cfg["seed"],
                                  weight_init=a.weight_init)
    res = measure_group(cfg, points, out_root, backend="nvml", deadline=time.monotonic() + a.deadline - time.time(),
                        extra={"driver": "bench/engine_compare.py", "weight_init": a.weight_init},
                        workload_for=workload_for, first_point_s=FIRST_POINT_S, reps=bool(a.step_timings))
    log.info("%s %s: %s", a.engine, a.arch, json.dumps(res.summary()))
    if a.summary:  # for the plan: the points the shared engine left for an engine of their own
        Path(a.summary).write_text(json.dumps(res.summary()))


def plan(a: argparse.Namespace) -> None:
    """Each preset: vLLM, then native (own processes), until the deadline."""
    deadline = time.time() + a.deadline_s
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,uuid,serial,driver_version,power.limit,clocks.max.sm",
                          "--format=csv"], capture_output=True, text=True, check=False)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "nvidia-smi.csv").write_text(smi.stdout)
    log.info("card:\n%s", smi.stdout.strip())
    jobs = []
    for arch in a.presets.split(","):
        for engine in a.engines.split(","):
            jobs.append((arch, engine, "normal", a.points))
        if arch == a.init_preset:
            jobs += [(arch, "native", init, a.init_points) for init in a.weight_inits.split(",") if init]
    summary = Path(a.out) / "run-summary.json"
    while jobs:
        arch, engine, init, points = jobs.pop(0)
        left = deadline - time.time()
        if left < START_S[engine] + FIRST_POINT_S:
            log.warning("plan: %.0f s left, not starting %s %s %s", left, engine, arch, init)
            continue
        cmd = [sys.executable, __file__, "run", "--config", a.config, "--engine", engine, "--arch", arch,
               "--points", points, "--out", a.out, "--deadline", str(deadline), "--weight-init", init,
               "--summary", str(summary)]
        if engine == "vllm" and a.step_timings:
            cmd += ["--step-timings", a.step_timings]
        log.info("plan: %s", " ".join(cmd))
        t0 = time.monotonic()
        summary.unlink(missing_ok=True)
        try:
            res = subprocess.run(cmd, timeout=max(left + 15, 1), check=False)
            log.info("plan: %s %s %s ended with %d after %.0f s", engine, arch, init, res.returncode,
                     time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            log.error("plan: %s %s past the deadline: stopped", engine, arch)
        alone = json.loads(summary.read_text()).get("alone", {}) if summary.exists() else {}
        # a point the shared engine could not hold by a little, or one after a CUDA error in the group's
        # process: next, in a process (and on an engine) of its own
        jobs[:0] = [(arch, engine, init, label(GridPoint.from_path(path))) for path in alone]


def table(a: argparse.Namespace) -> None:
    """The comparison table from traces (any number of folders of engine~E/... points)."""
    import numpy as np
    import pandas as pd

    from phase_energy.analysis.energy import WORKLOAD_FLAGS, add_window_metrics, rederive_windows
    from phase_energy.config import load_config
    from phase_energy.measure.layout import job_dirs
    from phase_energy.measure.trace import collect_windows

    cfg = load_config(a.config)  # the measurement settings the traces were taken with
    try:
        only = set(parse_points(a.points)) if a.points else None
    except ValueError as e:
        raise SystemExit(str(e)) from None
    rows = []
    for folder in a.traces:
        dirs = [d for d in job_dirs(folder)]
        windows, jobs = collect_windows(dirs)
        if windows.empty:
            continue
        w = add_window_metrics(rederive_windows(windows, cfg))  # summaries by the current code
        for job, g in w.groupby("job"):
            meta = json.loads((Path(job) / "metadata.json").read_text())
            if meta["lever_requested"] != "default" or (only and (meta["batch"], meta["context"]) not in only):
                continue
            dec = g[(g["phase"] == "decode") & (g["flags"].fillna("") == "")]
            pre = g[(g["phase"] == "prefill") & (g["flags"].fillna("") == "")]
            # a serving engine's whole-batch prefill, one run from idle: kept unless too short for the counter
            # (a ramp from idle often flags it counter_trapz_mismatch or temperature_drift: fill_flags says so)
            fill = g[(g["phase"] == "fill") & ~g["flags"].fillna("").str.contains("short_window")]
            # step time from every decode window whose step count is sure: a flag on a window's energy (say a
            # counter/trapezoid mismatch) does not make its clock wrong, and dropping it can leave one window
            timed = g[(g["phase"] == "decode") & ~g["flags"].fillna("").str.contains("|".join(WORKLOAD_FLAGS))]
            step_ms = timed["duration_s"] / (timed["steps"] * timed["repetitions"]) * 1e3
            info = meta.get("engine_info") or {}
            start = info.get("engine_start_s")
            if start is None and "build_s" in info:
                start = info["build_s"] + info.get("capture_s", 0.0)
            rows.append({
                "engine": meta["engine"], "weights": info.get("weights"), "arch": meta["arch"],
                "batch": meta["batch"], "context": meta["context"], "rep": meta.get("rep", 0),
                "decode_step_timing": info.get("decode_step_timing"), "card_uuid": meta["gpu"].get("uuid"),
                "decode_step_ms": float(step_ms.median()), "decode_step_ms_min": float(step_ms.min()),
                "decode_step_ms_max": float(step_ms.max()), "timed_windows": len(timed),
                "floor_fraction": float(dec["floor_fraction"].median()),
                "decode_power_w": float(dec["power_mean_w"].median()),
                "decode_j_per_token": float(dec["j_per_token"].median()),
                "sw_power_cap_share": float(dec["sw_power_cap_share"].median()),
                "prefill_tflops": float((pre["achieved_flops"]).median() / 1e12),
                "prefill_power_w": float(pre["power_mean_w"].median()),
                "prefill_j_per_token": float(pre["j_per_token"].median()),
                "fill_j_per_token": float(fill["j_per_token"].median()) if len(fill) else None,
                "fill_power_w": float(fill["power_mean_w"].median()) if len(fill) else None,
                "fill_flags": ",".join(sorted({f for x in fill["flags"].fillna("") for f in x.split(",") if f})),
                "vllm_async_scheduling": info.get("async_scheduling"), "git_commit": meta.get("git_commit"),
                "folder": str(Path(job).relative_to(folder)) if Path(job).is_relative_to(folder) else job,
                "engine_start_s": start, "decode_windows": len(dec), "prefill_windows": len(pre),
                # flagged fill windows are in fill_flags
                "flagged_windows": int(((g["phase"] != "fill") & (g["flags"].fillna("") != "")).sum()),
                "attention_backends": info.get("attention_backends"),
            })
        for _, j in jobs[jobs["status"] != "ok"].iterrows():
            rows.append({"engine": j.get("engine"), "arch": j.get("arch"), "batch": j.get("batch"),
                         "context": j.get("context"), "skipped": j.get("reason")})
    df = pd.DataFrame(rows).sort_values(["arch", "batch", "context", "engine"], kind="stable")
    pd.set_option("display.width", 200)
    df["card"] = df["card_uuid"].str[4:12]
    cols = [c for c in ("card", "engine", "vllm_async_scheduling", "weights", "arch", "batch", "context", "rep",
                        "decode_step_timing",
                        "decode_step_ms", "decode_step_ms_min", "decode_step_ms_max", "floor_fraction",
                        "decode_power_w", "decode_j_per_token", "prefill_tflops", "prefill_j_per_token",
                        "fill_j_per_token", "engine_start_s", "skipped")
            if c in df]
    print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if a.json:
        out = {"command": " ".join(["python", *sys.argv]), "cards": sorted(df["card_uuid"].dropna().unique()),
               "rows": json.loads(df.replace({np.nan: None}).to_json(orient="records"))}
        Path(a.json).write_text(json.dumps(out, indent=1))


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--config", required=True)
    r.add_argument("--engine", choices=["native", "vllm"], required=True)
    r.add_argument("--arch", required=True)
    r.add_argument("--points", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--deadline", type=float, default=time.time() + 1e6)
    r.add_argument("--weight-init", default="normal")
    r.add_argument("--summary", help="write the group's summary (JSON) here")
    r.add_argument("--step-timings", default="", help=STEP_TIMINGS_HELP)
    r.set_defaults(fn=run_engine)
    pl = sub.add_parser("plan")
    pl.add_argument("--config", required=True)
    pl.add_argument("--out", required=True)
    pl.add_argument("--presets", required=True)
    pl.add_argument("--engines", default="vllm,native")
    pl.add_argument("--points", default="1x2048,32x2048,128x2048")
    pl.add_argument("--init-preset", default="qwen3-4b")
    pl.add_argument("--weight-inits", default="", help="e.g. heavy-tailed,trained-like,uniform-1e-3 (native engine)")
    pl.add_argument("--init-points", default="1x2048,32x2048")
    pl.add_argument("--deadline-s", type=float, default=540.0)
    pl.add_argument("--step-timings", default="", help=STEP_TIMINGS_HELP)
    pl.set_defaults(fn=plan)
    t = sub.add_parser("table")
    t.add_argument("--traces", nargs="+", required=True)
    t.add_argument("--json")
    t.add_argument("--config", default="config/h200-engines.yaml", help="the config the traces were measured with")
    t.add_argument("--points", default="", help="only these BATCHxCONTEXT points (e.g. 1x2048,32x8192; default: all)")
    t.set_defaults(fn=table)
    a = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    a.fn(a)


if __name__ == "__main__":
    main()

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
(issue of trained-like weights) into ``OUT/init~<name>/...``.

    python bench/engine_compare.py table --traces OUT [OUT2 ...] --json bench/engine-compare-h200.json

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

log = logging.getLogger("engine_compare")
DEFAULT_POINT_S = 40.0  # guess for the first point of a process (warm-up and protocol)
DEFAULT_START_S = {"vllm": 120.0, "native": 5.0}


def parse_points(text: str) -> list[tuple[int, int]]:
    """``1x2048,32x2048`` -> [(1, 2048), (32, 2048)]."""
    out = []
    for part in text.split(","):
        b, _, c = part.strip().partition("x")
        if not (b.isdigit() and c.isdigit()):
            raise SystemExit(f"--points: {part!r} is not BATCHxCONTEXT (e.g. 32x2048)")
        out.append((int(b), int(c)))
    return out


def run_engine(a: argparse.Namespace) -> None:
    """One engine, one preset, several points, in this process; stop before the deadline."""
    import torch

    from phase_energy.config import load_config
    from phase_energy.grid import GridPoint
    from phase_energy.measure.backend import nvml_backend
    from phase_energy.measure.job import build_workload, job_settings, measure_point, point_skip_reason, write_skipped
    from phase_energy.measure.nvml import GPU
    from phase_energy.measure.trace import utc_now

    origin = time.monotonic()
    cfg = load_config(a.config)
    points = [GridPoint(a.arch, b, c, "default", 0, a.engine) for b, c in parse_points(a.points)]
    out_root = Path(a.out) / (f"init~{a.weight_init}" if a.weight_init != "normal" else "")
    backend = nvml_backend(GPU(0), torch.cuda.synchronize)  # one process, one card: no lock taken here
    desc = backend.describe(probe=True)
    log.info("card %s (%s), copy %.2f TB/s, matmul %.0f TFLOP/s", desc.get("uuid"), desc.get("name"),
             desc["bandwidth_bps"] / 1e12, desc["matmul_flops"] / 1e12)
    runnable = []
    for p in points:
        why = point_skip_reason(cfg, p, "nvml")
        if why:
            write_skipped(cfg, p, out_root / p.path, "nvml", why)
        else:
            runnable.append(p)
    engine = None
    if a.engine == "vllm" and runnable:
        from phase_energy.engines.vllm import VllmEngine, VllmSettings, max_model_len
        from phase_energy.measure.protocol import forward_positions
        from phase_energy.model.costmodel import CostModel
        from phase_energy.model.presets import get_preset

        vs = VllmSettings.from_config(cfg["vllm"])
        s = job_settings(cfg, runnable[0])
        cost = CostModel(get_preset(a.arch), engine="vllm")
        chunk = vs.chunk_tokens
        mml = max(max_model_len(p.context, forward_positions(s, cost, p.batch, p.context), p.batch, chunk)
                  for p in runnable)
        t0 = time.monotonic()
        engine = VllmEngine(a.arch, max_num_seqs=max(p.batch for p in runnable), max_model_len=mml,
                            capture_sizes=[p.batch for p in runnable], settings=vs, seed=cfg["seed"])
        log.info("vllm engine for %s up in %.1f s", a.arch, time.monotonic() - t0)
    spent: list[float] = []
    for p in runnable:
        workload: Any = None
        left = a.deadline - time.time()
        need = max(spent) if spent else DEFAULT_POINT_S
        if left < need * 1.2:
            log.warning("stopping before %s: %.0f s left, a point took up to %.0f s", p.path, left, need)
            break
        t0 = time.monotonic()
        started = utc_now()
        settings = job_settings(cfg, p)
        try:
            if engine is not None:
                from phase_energy.engines.vllm import DoesNotFit, VllmWorkload
                from phase_energy.measure.protocol import forward_positions
                from phase_energy.model.costmodel import CostModel
                from phase_energy.model.presets import get_preset

                positions = forward_positions(settings, CostModel(get_preset(a.arch), engine="vllm"), p.batch,
                                              p.context)
                try:
                    workload = VllmWorkload(engine, p.batch, p.context, settings.max_output, seed=cfg["seed"],
                                                 positions=positions)
                except DoesNotFit as e:
                    write_skipped(cfg, p, out_root / p.path, "nvml", str(e))
                    continue
            else:
                from phase_energy.engines.native.runner import EngineWorkload

                workload = EngineWorkload(p.arch, p.batch, p.context, settings.max_output, seed=cfg["seed"],
                                          weight_init=a.weight_init) if a.weight_init != "normal" \
                    else build_workload(cfg, p, settings, backend)
            measure_point(cfg, p, out_root / p.path, backend, workload, settings, desc, started, origin=origin,
                          extra={"driver": "bench/engine_compare.py", "engine_shared_by_points": engine is not None,
                                 "weight_init": a.weight_init})
        except Exception:
            log.exception("point %s failed", p.path)
        finally:
            spent.append(time.monotonic() - t0)
            log.info("point %s: %.1f s", p.path, spent[-1])
            import torch

            workload = None
            torch.cuda.empty_cache()


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
            jobs.append((arch, engine, "normal"))
        if arch == a.init_preset:
            jobs += [(arch, "native", init) for init in a.weight_inits.split(",") if init]
    for arch, engine, init in jobs:
        left = deadline - time.time()
        if left < DEFAULT_START_S[engine] + DEFAULT_POINT_S:
            log.warning("plan: %.0f s left, not starting %s %s %s", left, engine, arch, init)
            continue
        cmd = [sys.executable, __file__, "run", "--config", a.config, "--engine", engine, "--arch", arch,
               "--points", a.points if init == "normal" else a.init_points, "--out", a.out,
               "--deadline", str(deadline), "--weight-init", init]
        log.info("plan: %s", " ".join(cmd))
        t0 = time.monotonic()
        try:
            res = subprocess.run(cmd, timeout=max(left + 15, 1), check=False)
            log.info("plan: %s %s %s ended with %d after %.0f s", engine, arch, init, res.returncode,
                     time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            log.error("plan: %s %s past the deadline: stopped", engine, arch)


def table(a: argparse.Namespace) -> None:
    """The comparison table from traces (any number of folders of engine~E/... points)."""
    import numpy as np
    import pandas as pd

    from phase_energy.analysis.energy import WORKLOAD_FLAGS, add_window_metrics, rederive_windows
    from phase_energy.config import load_config
    from phase_energy.measure.layout import job_dirs
    from phase_energy.measure.trace import collect_windows

    cfg = load_config(a.config)  # the measurement settings the traces were taken with
    rows = []
    for folder in a.traces:
        dirs = [d for d in job_dirs(folder)]
        windows, jobs = collect_windows(dirs)
        if windows.empty:
            continue
        w = add_window_metrics(rederive_windows(windows, cfg))  # summaries by the current code
        for job, g in w.groupby("job"):
            meta = json.loads((Path(job) / "metadata.json").read_text())
            if meta["lever_requested"] != "default":
                continue
            dec = g[(g["phase"] == "decode") & (g["flags"].fillna("") == "")]
            pre = g[(g["phase"] == "prefill") & (g["flags"].fillna("") == "")]
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
                "batch": meta["batch"], "context": meta["context"], "card_uuid": meta["gpu"].get("uuid"),
                "decode_step_ms": float(step_ms.median()), "decode_step_ms_min": float(step_ms.min()),
                "decode_step_ms_max": float(step_ms.max()), "timed_windows": len(timed),
                "floor_fraction": float(dec["floor_fraction"].median()),
                "decode_power_w": float(dec["power_mean_w"].median()),
                "decode_j_per_token": float(dec["j_per_token"].median()),
                "sw_power_cap_share": float(dec["sw_power_cap_share"].median()),
                "prefill_tflops": float((pre["achieved_flops"]).median() / 1e12),
                "prefill_power_w": float(pre["power_mean_w"].median()),
                "vllm_async_scheduling": info.get("async_scheduling"), "git_commit": meta.get("git_commit"),
                "folder": str(Path(job).relative_to(folder)) if Path(job).is_relative_to(folder) else job,
                "engine_start_s": start, "decode_windows": len(dec), "prefill_windows": len(pre),
                "flagged_windows": int((g["flags"].fillna("") != "").sum()),
                "attention_backends": info.get("attention_backends"),
            })
        for _, j in jobs[jobs["status"] != "ok"].iterrows():
            rows.append({"engine": j.get("engine"), "arch": j.get("arch"), "batch": j.get("batch"),
                         "context": j.get("context"), "skipped": j.get("reason")})
    df = pd.DataFrame(rows).sort_values(["arch", "batch", "context", "engine"], kind="stable")
    pd.set_option("display.width", 200)
    df["card"] = df["card_uuid"].str[4:12]
    cols = [c for c in ("card", "engine", "vllm_async_scheduling", "weights", "arch", "batch", "context",
                        "decode_step_ms", "decode_step_ms_min", "decode_step_ms_max", "floor_fraction",
                        "decode_power_w", "decode_j_per_token", "prefill_tflops", "engine_start_s", "skipped")
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
    pl.set_defaults(fn=plan)
    t = sub.add_parser("table")
    t.add_argument("--traces", nargs="+", required=True)
    t.add_argument("--json")
    t.add_argument("--config", default="config/h200-engines.yaml", help="the config the traces were measured with")
    t.set_defaults(fn=table)
    a = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    a.fn(a)


if __name__ == "__main__":
    main()

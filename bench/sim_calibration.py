"""The simulator against the H200 measurements (h200-measurements.md): prints and writes the table.

    python bench/sim_calibration.py --out bench/sim-calibration.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from phase_energy.presets import get_preset
from phase_energy.sim import REASON_SW_POWER_CAP, SimGPU, SimWorkload

MEASURED = {1: (3.74, 396), 8: (4.34, 441), 32: (6.01, 556), 64: (8.17, 656), 128: (12.83, 696)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench/sim-calibration.json")
    a = p.parse_args()
    rows = []
    for batch, (ms, watts) in MEASURED.items():
        gpu = SimGPU()
        w = SimWorkload(gpu, get_preset("qwen3-4b"), batch, 2048)
        t0, e0 = gpu.t, gpu.energy
        w.decode(2048, 20)
        dt = gpu.t - t0
        tl = gpu.timeline()
        rows.append({"batch": batch, "context": 2048, "measured_step_ms": ms, "sim_step_ms": round(dt / 20 * 1e3, 3),
                     "measured_power_w": watts, "sim_power_w": round((gpu.energy - e0) / dt, 1),
                     "sim_sw_power_cap": bool((tl["reasons"][-20:] & REASON_SW_POWER_CAP).any()),
                     "sim_sm_clock_mhz": float(tl["clock"][-1])})
    mm = SimGPU().matmul_load(8192, 8.0)
    matmul = {"sim_tflops": round(mm["flops"] / 1e12, 1), "sim_power_w": round(mm["power_w"]),
              "sim_sm_clock_mhz": mm["sm_clock_mhz"], "measured_tflops": 653, "measured_power_w": 687}
    out = {"decode": rows, "matmul_8192": matmul,
           "command": "python bench/sim_calibration.py"}
    print(json.dumps(out, indent=1))
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""The simulated card's parameters and the physics they define (clocks, voltage, rates, power, heat, sensors).

One frozen set per card, recorded in full in each simulated trace's metadata; the simulator
(:mod:`phase_energy.measure.sim`) reads nothing else. docs/simulator.md says where each number comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from phase_energy.config import schema_defaults


@dataclass(frozen=True)
class SimParams:
    """All parameters of the simulated card, fitted to the H200 reference traces (docs/simulator.md).

    Physical constants of the card (clocks, copy bandwidth, bf16 peak, power limits) are held fixed; the
    power and timing parameters marked "fitted" come from ``bench/sim_calibration.py --fit``.
    """

    name: str = "NVIDIA H200 (simulated)"
    # clocks
    sm_clock_max_mhz: int = 1980
    sm_clock_min_mhz: int = 345
    sm_clock_step_mhz: int = 15  # 110 supported values, as the card reports
    mem_clock_mhz: int = 3201
    # voltage relative to the top clock: v(f) = v_min + (1 - v_min) * (f - f_min) / (f_max - f_min)
    v_min: float = 0.65
    # rates
    bandwidth_bps: float = 4.29e12  # measured device-to-device copy (read + write)
    stream_efficiency: float = 0.902  # fitted: share of copy bandwidth a decode step's streaming reaches
    bw_knee_mhz: float = 1000.0  # below this SM clock the SMs cannot keep HBM busy
    matmul_peak_flops: float = 989e12  # dense bf16 tensor-core peak at the top clock (datasheet)
    gemm_efficiency: float = 0.805  # share of the peak a large GEMM reaches (8192^3: ~790 TFLOP/s measured)
    matmul_rows_half: float = 64.0  # rows at which a GEMM reaches half its rate (small-batch curve)
    prefill_efficiency: float = 0.433  # fitted: prefill (GEMM + attention mix) share of the large-GEMM rate
    kernel_time_fixed_s: float = 1.27e-6  # fitted: per-kernel cost independent of the clock (graph replay)
    kernel_time_clocked_s: float = 2.54e-6  # fitted: per-kernel latency at the top clock, scales as 1/f
    prefill_kernel_time_s: float = 99e-6  # fitted: host time to issue one kernel of the eager prefill
    # power (W)
    static_w: float = 53.0  # fitted: leakage and board at leakage_ref_c, independent of clock
    leakage_per_c: float = 0.0080  # fitted: static power's rise per degree C above leakage_ref_c (fraction)
    leakage_ref_c: float = 40.0  # temperature at which static_w holds
    clock_tree_w: float = 73.0  # fitted: idle with a context open at the top clock, on top of static
    memory_w: float = 120.0  # HBM traffic at full copy bandwidth, clock independent (~3.5 pJ/bit)
    memory_sm_w: float = 481.0  # fitted: SM load/store side of full-bandwidth traffic, at the top clock
    compute_w: float = 631.0  # fitted: SMs busy on compute (a large GEMM at its full rate), at the top clock
    power_limit_w: float = 700.0
    power_limit_min_w: float = 200.0
    # power-cap controller: after capped work the SW power-cap reason stays set this long (median measured)
    cap_hold_s: float = 0.365
    # thermal (first order; fitted to the traces' temperature readings)
    ambient_c: float = 35.1
    thermal_resistance_c_per_w: float = 0.0332
    thermal_tau_s: float = 0.261
    # sensors
    counter_period_s: float = 0.1
    instant_window_s: float = 0.025  # part of each period the instant reading covers
    average_window_s: float = 1.0
    power_noise: float = schema_defaults("sim")["noise"]  # relative, per sample (config sim.noise)
    # firmware clamp of locked clocks under load (None: the lock is honoured)
    firmware_clamp_mhz: int | None = None
    # a changed setting (lock, release, limit) reaches the clocks this long after the call; assumed, not
    # fitted (config sim.clock_switch_latency_s, docs/phase-policy.md)
    clock_switch_latency_s: float = schema_defaults("sim")["clock_switch_latency_s"]
    # kernels per block kind for the native engine's decode step (launch-gap model)
    kernels_per_block: dict[str, int] = field(
        default_factory=lambda: {"A": 14, "G": 20, "M": 12, "*": 10, "-": 4}
    )
    kernels_mla_extra: int = 4
    kernels_head: int = 4

    def supported_clocks(self) -> np.ndarray:
        """Supported SM clocks, MHz, ascending."""
        return np.arange(self.sm_clock_min_mhz, self.sm_clock_max_mhz + 1, self.sm_clock_step_mhz)

    def gemm_rate(self, f: np.ndarray | float) -> np.ndarray:
        """Rate of a large bf16 GEMM at SM clock ``f`` (MHz): the peak times the GEMM efficiency, ~f."""
        return self.matmul_peak_flops * self.gemm_efficiency * (np.asarray(f, dtype=float) / self.sm_clock_max_mhz)

    def static_power(self, temp_c: np.ndarray | float) -> np.ndarray:
        """Static (leakage and board) power at a temperature, W: linear in the temperature."""
        rise = 1.0 + self.leakage_per_c * (np.asarray(temp_c, dtype=float) - self.leakage_ref_c)
        return self.static_w * np.maximum(rise, 0.0)

    def idle_temperature(self) -> float:
        """Steady temperature of the idle card (context open, top clock), C."""
        temp = self.ambient_c
        for _ in range(5):  # the static power depends on the temperature it sets (weakly)
            p = float(self.static_power(temp)) + self.clock_tree_w
            temp = self.ambient_c + self.thermal_resistance_c_per_w * p
        return temp

    def clock_scale(self, f: np.ndarray | float) -> np.ndarray:
        """Dynamic-power scale f * V(f)^2 relative to the top clock."""
        f = np.asarray(f, dtype=float)
        lo, hi = self.sm_clock_min_mhz, self.sm_clock_max_mhz
        v = self.v_min + (1 - self.v_min) * (f - lo) / (hi - lo)
        return (f / hi) * v**2

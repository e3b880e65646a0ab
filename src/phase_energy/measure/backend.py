"""Device backends: the NVML card and the simulated one behind one interface, opened by one factory.

A measurement job and a CLEAR job both open their backend here and get a :class:`Backend`: the device (whose
setters :class:`~phase_energy.measure.levers.LeverControl` drives, with the same names on both), a started
meter for the protocol's windows, the device synchronisation and the GPU block of the metadata. The NVML
backend holds the GPU's job lock (:mod:`phase_energy.measure.gpulock`) while it is open; the simulated one
needs none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from phase_energy.measure.protocol import SampledMeter

log = logging.getLogger(__name__)

BACKENDS = ("sim", "nvml")


class Device(Protocol):
    """What levers and jobs use of a GPU; :class:`~phase_energy.measure.nvml.GPU` and ``SimGPU`` provide it."""

    index: int
    keeps_settings: bool  # True when a setting outlives the process (a real card): levers journal it

    def uuid(self) -> str:
        """Which card."""
        ...

    def describe(self) -> dict[str, Any]:
        """The GPU block of the trace metadata."""
        ...

    def other_compute_pids(self) -> list[int]:
        """Processes other than this one computing on the device."""
        ...

    def power_limit_range_w(self) -> tuple[float, float]:
        """The settable power-limit range."""
        ...

    def supported_sm_clocks_mhz(self) -> list[int]:
        """Clocks an SM clock lock accepts."""
        ...

    def power_limit_w(self) -> float:
        """The power limit set now."""
        ...

    def enforced_power_limit_w(self) -> float:
        """The limit the firmware enforces."""
        ...

    def set_power_limit_w(self, watts: float) -> None:
        """Set the power limit."""
        ...

    def lock_sm_clock_mhz(self, mhz: int) -> None:
        """Lock the SM clock."""
        ...

    def reset_sm_clock(self) -> None:
        """Release an SM clock lock."""
        ...

    def clocks_mhz(self) -> tuple[int, int]:
        """The (SM, memory) clocks the device reports now."""
        ...


@dataclass
class Backend:
    """An open backend: its name (``sim`` or ``nvml``), device, meter factory and synchronisation."""

    name: str
    device: Any  # a Device (SimGPU or GPU)
    synchronize: Callable[[], None]
    open_meter: Callable[[float], SampledMeter]
    probe: Callable[[], dict[str, float]] = field(default=dict)
    hold: Callable[[], None] = field(default=lambda: None)  # before a job writes its trace (sim.wall_delay_s)
    devices: list[Any] = field(default_factory=list)  # every GPU of the job (tensor parallel), the first is device
    # seconds of each part of opening a real card (import torch, NVML, the GPU's lock, CUDA); empty on sim
    open_parts: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.devices:
            self.devices = [self.device]

    @property
    def gpus(self) -> int:
        """GPUs the job runs on."""
        return len(self.devices)

    @property
    def simulated(self) -> bool:
        """True for the simulated card (its traces say ``backend: sim``)."""
        return self.name == "sim"

    def meter(self, sampling_period_s: float) -> SampledMeter:
        """A started meter sampling every ``sampling_period_s``."""
        return self.open_meter(sampling_period_s)

    def describe(self, probe: bool = False) -> dict[str, Any]:
        """The GPU block of the metadata; ``probe`` adds the copy bandwidth and matmul rate measured now.

        The simulated card states its own.
        """
        desc = self.device.describe()
        if probe:
            desc.update(self.probe())
        if self.gpus > 1:  # every GPU of the job: which cards, their settings
            desc["gpus"] = [d.describe() for d in self.devices]
        return desc


def nvidia_gpu_visible() -> bool:
    """True when NVML initialises and reports at least one device (never changes any setting)."""
    try:
        import pynvml
    except ImportError:
        return False
    try:
        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # any NVML failure means: no usable GPU here
        return False


def resolve_backend(requested: str) -> str:
    """``auto`` becomes ``nvml`` when an NVIDIA GPU is visible, else ``sim`` (said loudly in the log)."""
    if requested != "auto":
        return requested
    if nvidia_gpu_visible():
        log.warning("backend auto: an NVIDIA GPU is visible, measuring it through NVML")
        return "nvml"
    log.warning("backend auto: NO NVIDIA GPU visible -- using the SIMULATED backend; traces say backend: sim")
    return "sim"


def sim_params(cfg: Mapping[str, Any]) -> Any:
    """The simulated card's parameters from the config (``sim:`` and the counter period)."""
    from phase_energy.measure.sim_params import SimParams

    return SimParams(firmware_clamp_mhz=cfg["sim"]["firmware_clamp_mhz"], power_noise=cfg["sim"]["noise"],
                     counter_period_s=cfg["measurement"]["counter_period_ms"] / 1000.0,
                     clock_switch_latency_s=cfg["sim"]["clock_switch_latency_s"])


@contextmanager
def open_backend(cfg: Mapping[str, Any], name: str, seed: int, job: str = "", gpus: int = 1) -> Iterator[Backend]:
    """Open backend ``name`` (``sim`` or ``nvml``, already resolved) for one job on ``gpus`` GPUs.

    ``sim``: a fresh simulated card seeded with ``seed``; its ``hold`` keeps a job for ``sim.wall_delay_s`` of
    real time before it writes its trace, when the config asks for it (a slow job, for tests).
    ``nvml``: GPUs 0 to ``gpus - 1``, each locked for this job (``job`` names it in the lock) until the block ends.
    The simulator models one GPU: ``gpus > 1`` is refused there.
    """
    if name == "sim" and gpus != 1:
        raise ValueError(f"backend sim models one GPU; gpus={gpus} is not accepted there (accepted: 1; a job on "
                         "several GPUs runs on backend nvml)")
    if name == "sim":
        from phase_energy.measure.sim import SimGPU, SimMeter

        gpu = SimGPU(sim_params(cfg), seed=seed)
        delay = float(cfg["sim"]["wall_delay_s"])

        def hold() -> None:
            if delay:
                log.info("sim.wall_delay_s: holding the job for %.1f s of real time", delay)
                time.sleep(delay)

        yield Backend("sim", gpu, lambda: None, lambda period: SimMeter(gpu, period).start(), hold=hold)
        return
    if name != "nvml":
        raise ValueError(f"backend {name!r} is not accepted; expected one of {', '.join(BACKENDS)}")
    t0 = time.monotonic()
    import torch

    from phase_energy.measure.gpulock import gpu_lock
    from phase_energy.measure.nvml import GPU

    t_torch = time.monotonic()
    cards = [GPU(i) for i in range(gpus)]
    t_nvml = time.monotonic()
    with ExitStack() as locks:
        for card in cards:
            locks.enter_context(gpu_lock(card, job=job))
        t_lock = time.monotonic()
        # CUDA's context, once the cards are this job's: here rather than inside the probe's first copy, so
        # that its driver calls overlap a job's other start-up work (engines.compiler) and it has its own part
        if torch.cuda.is_available():
            torch.cuda.init()
        backend = nvml_backend(cards[0], torch.cuda.synchronize, cards if gpus > 1 else None)
        backend.open_parts = {"import_torch_s": t_torch - t0, "nvml_open_s": t_nvml - t_torch,
                              "gpu_lock_s": t_lock - t_nvml, "cuda_init_s": time.monotonic() - t_lock}
        yield backend


def nvml_backend(gpu: Any, synchronize: Callable[[], None], devices: list[Any] | None = None) -> Backend:
    """The backend of open NVML GPUs (``open_backend`` locks them first; a benchmark may pass its own).

    One GPU: its meter. Several (``devices``, ``gpu`` the first): a sampler per GPU on one origin, the counter
    reads summed (:class:`~phase_energy.measure.multigpu.MultiMeter`).
    """
    from phase_energy.measure.nvml import NvmlMeter

    if not devices or len(devices) == 1:
        return Backend("nvml", gpu, synchronize, lambda period: NvmlMeter(gpu, period).start(),
                       lambda: measure_bandwidth_and_matmul())

    def multi_meter(period: float) -> SampledMeter:
        from phase_energy.measure.multigpu import MultiMeter

        origin = time.monotonic()
        return MultiMeter([NvmlMeter(d, period, origin).start() for d in devices])

    return Backend("nvml", gpu, synchronize, multi_meter, lambda: measure_bandwidth_and_matmul(), devices=list(devices))


def measure_bandwidth_and_matmul(device: str = "cuda") -> dict[str, float]:
    """Copy bandwidth (bytes read + written per s) and bf16 matmul rate of the card, measured now."""
    import torch

    n = 1 << 30  # 2 GiB of bf16
    a = torch.empty(n, dtype=torch.bfloat16, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        b.copy_(a)
    torch.cuda.synchronize()
    bw = reps * 2 * a.numel() * a.element_size() / (time.perf_counter() - t0)
    del a, b
    m = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    for _ in range(3):
        m @ m
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    reps = 30
    for _ in range(reps):
        m @ m
    torch.cuda.synchronize()
    flops = reps * 2 * 8192**3 / (time.perf_counter() - t0)
    torch.cuda.empty_cache()  # give the probes' memory back before an engine sizes itself from what is free
    return {"bandwidth_bps": float(bw), "matmul_flops": float(flops)}

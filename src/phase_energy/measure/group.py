"""Several points of one engine measured in one process, on one engine where it can be shared.

Each workflow job measures one point in a process of its own, so every vLLM point pays vLLM's start (70-184 s
on an H200, ``engine_start_s`` in the metadata) before a measurement of 12-30 s, and every native point the
import of torch and its compiler (about 13 s on an H200 node). A group runs several points of one engine,
lever and repetition in one process instead. A vLLM group is one preset: one vLLM engine is started for all
of its points (its ``max_model_len`` the largest any point needs, a CUDA graph for each batch,
``max_num_seqs`` the largest batch), and each point runs its own workload on it. A native point builds its own
engine, as its job does, so a native group may hold several presets.

Each point is written as its job writes it, under ``<out_root>/<point path>``: its trace, the skipped record of
a point that cannot run (:func:`~phase_energy.measure.job.point_skip_reason`, or vLLM's
:class:`~phase_energy.engines.vllm.DoesNotFit` on an engine of its own), or, for a point that raises, what a
failed job leaves: no trace and a log that ends with the error (``<log_dir>/<point path>.log``, where the
workflow's job writes its log). A failed point never stops the others. A point is started only when the
time left covers the longest point done so far (a guess for the first); the vLLM engine only when the time
left covers its start too: the longest start of the preset's engine that its traces under ``out_root``
recorded (:func:`vllm_start_estimate`), so that a session's last minutes are not spent starting an engine
that has no time left to measure.

A point that an engine shared with other points cannot hold by a small margin is left without a record
(``alone``): the shared engine holds a little less than the point's own would (its CUDA graphs cover every
batch of the group), so its own job may fit; ``phase-energy campaign`` measures such points as jobs of their
own. A point short by more (:data:`NEAR_FIT`) gets its skipped record, as its own job would.

The traces say so in their metadata: ``measured_in_group`` (the group's points, ``BxC``, or
``ARCH:BxC`` where the group holds several presets), and on a shared
vLLM engine ``engine_shared_by_points`` (the points it was sized for) and ``engine_start_s``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phase_energy.engines.vllm import DoesNotFit
from phase_energy.grid import GridPoint
from phase_energy.measure import job
from phase_energy.measure.backend import Backend, open_backend, resolve_backend
from phase_energy.measure.protocol import Settings, Workload
from phase_energy.measure.trace import utc_now
from phase_energy.model.presets import get_preset

log = logging.getLogger(__name__)

FIRST_POINT_S = 40.0  # a guess for the first point of a process on a real card (warm-up and protocol)
VLLM_START_S = 120.0  # a guess for vLLM's start where no trace recorded one (70-184 s on an H200)
MARGIN = 1.2  # a point is started when the time left is at least this many times the longest point done

WorkloadFactory = Callable[[GridPoint, Settings, Backend], Workload]


def vllm_start_estimate(out_root: Path, arch: str) -> tuple[float, str]:
    """How long a vLLM engine of ``arch`` takes to start, and whence.

    The longest start that its traces in ``out_root`` recorded (``engine_start_s``: a group's traces carry it
    at the top, a job's own in ``engine_info``; on an H200 one preset's starts differed by up to a third, the
    presets' between 70 and 184 s), else :data:`VLLM_START_S`. A trace that cannot be read, or a start that
    is not a finite positive number of seconds, is passed over. Only ``out_root``'s traces count: a run into
    an empty folder (``bench/engine_compare.py``'s) guesses.
    """
    starts = []
    for meta in sorted((out_root / "engine~vllm" / f"arch~{arch}").rglob("metadata.json")):
        try:
            m = json.loads(meta.read_text())
            value = m.get("engine_start_s", (m.get("engine_info") or {}).get("engine_start_s"))
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf:
            starts.append(float(value))
    if starts:
        return max(starts), f"the longest of {len(starts)} recorded in its traces"
    return VLLM_START_S, "a guess: no trace of it recorded one"


def parse_points(text: str) -> list[tuple[int, int]]:
    """``"1x2048,32x2048"`` -> ``[(1, 2048), (32, 2048)]``; a bad item is named with the form accepted."""
    out = []
    for part in text.split(","):
        b, sep, c = part.strip().partition("x")
        if not (sep and b.isdigit() and c.isdigit() and int(b) > 0 and int(c) > 0):
            raise ValueError(f"--points: {part.strip()!r} is not accepted; expected BATCHxCONTEXT with positive "
                             "integers, comma-separated (e.g. 1x2048,32x2048)")
        if (int(b), int(c)) in out:
            raise ValueError(f"--points: {part.strip()!r} is given twice; give each BATCHxCONTEXT once")
        out.append((int(b), int(c)))
    return out


def parse_arch_points(text: str, arch: str | None) -> list[tuple[str, int, int]]:
    """``"32x2048,mamba2-2.7b:1x512"`` -> ``[(arch, 32, 2048), ("mamba2-2.7b", 1, 512)]``.

    An item without a preset is ``arch``'s; a bad item is named with the forms accepted.
    """
    out: list[tuple[str, int, int]] = []
    for part in text.split(","):
        name, sep, shape = part.strip().rpartition(":")
        name = name.strip() if sep else (arch or "")
        if sep and not name:
            raise ValueError(f"--points: {part.strip()!r} has nothing before ':'; write ARCH:{shape.strip()} or "
                             f"{shape.strip()} with --arch")
        try:
            ((b, c),) = parse_points(shape)
        except ValueError:
            raise ValueError(f"--points: {part.strip()!r} is not accepted; expected BATCHxCONTEXT or "
                             "ARCH:BATCHxCONTEXT with positive integers, comma-separated (e.g. "
                             "1x2048,mamba2-2.7b:32x2048)") from None
        if not name:
            raise ValueError(f"--points: {part.strip()!r} names no preset; give --arch or write ARCH:{shape}")
        if (name, b, c) in out:
            raise ValueError(f"--points: {part.strip()!r} is given twice; give each point once")
        out.append((name, b, c))
    return out


def label(point: GridPoint) -> str:
    """``BxC`` of a point."""
    return f"{point.batch}x{point.context}"


def labels(points: list[GridPoint]) -> list[str]:
    """Each point's ``BxC``, or ``ARCH:BxC`` where the points are of several presets (a native group)."""
    if len({p.arch for p in points}) > 1:
        return [f"{p.arch}:{label(p)}" for p in points]
    return [label(p) for p in points]


@dataclass
class GroupResult:
    """What a group did with each of its points (point paths)."""

    measured: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # point -> reason
    failed: dict[str, str] = field(default_factory=dict)  # point -> the error
    not_started: list[str] = field(default_factory=list)  # left for a later run: the time was up
    alone: dict[str, str] = field(default_factory=dict)  # point -> why it needs a process of its own (the shared
    # engine cannot hold it, or an earlier point left the GPU unusable in this process)
    engine_start_s: float | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON line ``phase-energy measure --points`` prints."""
        return {"measured": self.measured, "skipped": self.skipped, "failed": self.failed,
                "not_started": self.not_started, "alone": self.alone, "engine_start_s": self.engine_start_s}


# A shared engine holds less than a point's own only by its other batches' CUDA graphs: well under 5 % of the
# KV cache on the H200's presets. A point short by more than this would not fit its own engine either.
NEAR_FIT = 1.05


def near_fit(e: DoesNotFit) -> bool:
    """Whether a point the shared engine cannot hold might fit an engine of its own (short by < 5 %)."""
    return e.capacity is not None and e.need is not None and e.need <= NEAR_FIT * e.capacity


def check_group(points: list[GridPoint], reps: bool = False) -> None:
    """A group is one engine, one lever and one repetition, and for vLLM one preset; each point once.

    A vLLM group shares one engine, so one preset; the native engine builds each point's own, so a native
    group may hold several presets (the process imports torch and the compiler once for all of them). With
    ``reps`` the repetitions may differ (a before-and-after on one engine, ``bench/engine_compare.py
    --step-timings``): the workflow never groups them, so that a rerun's variation stays between processes.
    """
    if not points:
        raise ValueError("a group needs at least one point")
    first = points[0]
    several_presets = first.engine == "native"
    names = ("engine", "lever") + (() if several_presets else ("arch",)) + (() if reps else ("rep",))
    for p in points[1:]:
        for name in names:
            if getattr(p, name) != getattr(first, name):
                raise ValueError(f"a group is one {name}: {p.path} has {name} {getattr(p, name)!r}, the group "
                                 f"{getattr(first, name)!r}; accepted: points that differ in batch and context "
                                 "only (and in preset, for the native engine)")
    if len({p.path for p in points}) < len(points):
        raise ValueError(f"a group names a point twice: {[p.path for p in points]}")


@contextmanager
def point_log(path: Path | None) -> Iterator[None]:
    """The package's log records also go to ``path`` (a point's own log, as its job would write) meanwhile."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    pkg = logging.getLogger("phase_energy")
    level = pkg.level
    pkg.addHandler(handler)
    if pkg.getEffectiveLevel() > logging.INFO:
        pkg.setLevel(logging.INFO)
    try:
        yield
    finally:
        pkg.removeHandler(handler)
        pkg.setLevel(level)
        handler.close()


def _fail(point: GridPoint, out: Path, err: BaseException, result: GroupResult) -> None:
    """What a failed job leaves: the error at the end of its log, no trace (nothing partial stays)."""
    log.error("job %s failed", point.path, exc_info=err)
    if out.is_dir() and not (out / "status.json").exists():
        shutil.rmtree(out)
    result.failed[point.path] = f"{type(err).__name__}: {err}"[:300]


def leaves_device_broken(err: BaseException) -> bool:
    """Whether ``err`` leaves this process's GPU context unusable.

    A CUDA error is sticky: every later call in the process fails with it, so the group's later points would
    only fail the same way.
    """
    return type(err).__name__ == "AcceleratorError" or "CUDA error" in str(err)


def measure_group(cfg: Mapping[str, Any], points: list[GridPoint], out_root: str | Path,
                  backend: str | None = None, deadline: float | None = None, log_dir: str | Path | None = None,
                  extra: Mapping[str, Any] | None = None, workload_for: WorkloadFactory | None = None,
                  clock: Callable[[], float] = time.monotonic, first_point_s: float | None = None,
                  reps: bool = False) -> GroupResult:
    """Measure ``points`` (one engine, lever, repetition; see :func:`check_group`) in this process.

    ``deadline``: on ``clock``'s scale (``time.monotonic``), the time by which the group must have ended.
    ``backend``: ``sim`` or ``nvml`` (default: the config's, resolved). ``workload_for`` builds a point's
    workload where no vLLM engine is shared (default: the job's own build). ``extra`` goes into every
    trace's metadata. On the simulator each point gets its own simulated card, seeded as its job's. ``reps``:
    see :func:`check_group`.
    """
    check_group(points, reps)
    out_root = Path(out_root)
    name = resolve_backend(backend or cfg["backend"])
    result = GroupResult()
    group = labels(points)
    runnable = []
    for p in points:
        why = job.point_skip_reason(cfg, p, name)
        if why:
            with point_log(Path(log_dir) / f"{p.path}.log" if log_dir else None):
                job.write_skipped(cfg, p, out_root / p.path, name, why)
            result.skipped[p.path] = why
        else:
            runnable.append(p)
    if not runnable:
        return result
    first = FIRST_POINT_S if first_point_s is None else first_point_s
    if name == "sim" and first_point_s is None:
        first = 0.0  # a simulated point takes well under a second (sim.wall_delay_s aside)
    shared = runnable[0].engine == "vllm" and name != "sim"
    build = workload_for or (lambda p, s, b: job.build_workload(cfg, p, s, b))

    def left() -> float:
        return float("inf") if deadline is None else deadline - clock()

    if shared:
        start_s, whence = vllm_start_estimate(out_root, runnable[0].arch)
        if left() < start_s + first:
            log.warning("group %s: %.0f s left, not starting vLLM (about %.0f s, %s) and a point (about %.0f s)",
                        runnable[0].arch, left(), start_s, whence, first)
            result.not_started = [p.path for p in runnable]
            return result
    with ExitStack() as stack:
        opened: Backend | None = None
        desc: dict[str, Any] | None = None
        if name != "sim":  # one real card (or the preset's cards), locked for the whole group
            opened = stack.enter_context(open_backend(cfg, name, job.point_seed(cfg, runnable[0]),
                                                      job=f"group {runnable[0].engine} {','.join(group)}",
                                                      gpus=max(get_preset(p.arch).gpus for p in runnable)))
            desc = opened.describe(probe=True)
        engine, meta_extra = None, {"measured_in_group": group, **(extra or {})}
        if shared:
            t0 = time.monotonic()
            try:
                engine = job.vllm_engine(cfg, runnable)
            except Exception as e:  # every point fails as its own job would have, with this error
                for p in runnable:
                    with point_log(Path(log_dir) / f"{p.path}.log" if log_dir else None):
                        _fail(p, out_root / p.path, e, result)
                return result
            result.engine_start_s = time.monotonic() - t0
            log.info("vllm engine for %s up in %.1f s, shared by %s", runnable[0].arch, result.engine_start_s,
                     ",".join(label(p) for p in runnable))
            meta_extra.update(engine_shared_by_points=[label(p) for p in runnable],
                              engine_start_s=result.engine_start_s)
        spent: list[float] = []
        now = clock()
        presets: set[str] = set()
        for i, p in enumerate(runnable):
            # a preset's first point compiles its own blocks: at least the first point's guess
            need = max(spent) if spent else first
            if p.arch not in presets:
                need = max(need, first)
            presets.add(p.arch)
            if deadline is not None and deadline - now < need * MARGIN:
                log.warning("group: stopping before %s: %.0f s left, a point takes about %.0f s", p.path,
                            deadline - now, need)
                result.not_started = [q.path for q in runnable[i:]]
                break
            out = out_root / p.path
            with point_log(Path(log_dir) / f"{p.path}.log" if log_dir else None):
                err = _measure_one(cfg, p, out, name, (opened, desc), engine, build, meta_extra, result)
            if err is not None and leaves_device_broken(err):
                log.error("group: %s left the GPU unusable in this process (%s); the later points are left for "
                          "jobs of their own", p.path, result.failed[p.path])
                result.alone.update({q.path: f"{p.path} left the GPU unusable in its group's process"
                                     for q in runnable[i + 1:]})
                break
            end = clock()
            spent.append(end - now)
            log.info("point %s: %.1f s", p.path, spent[-1])
            now = end
    return result


def free_gpu_cache() -> None:
    """Give the memory torch's allocator keeps back to the GPU (between a group's points)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _measure_one(cfg: Mapping[str, Any], p: GridPoint, out: Path, name: str,
                 opened: tuple[Backend | None, dict[str, Any] | None], engine: Any, build: WorkloadFactory,
                 meta_extra: Mapping[str, Any], result: GroupResult) -> BaseException | None:
    """One point of a group: its workload on the shared engine or its own, the protocol, its trace.

    ``opened``: the group's open backend and its GPU block, or (None, None) to open one for this point.
    Returns the error a failed point raised (recorded in ``result``), else None.
    """
    workload: Any = None
    t0 = time.monotonic()  # the point's time to its first window counts from here
    try:
        with ExitStack() as stack:
            backend, gpu = opened
            if backend is None:
                backend = stack.enter_context(open_backend(cfg, name, job.point_seed(cfg, p), job=str(out)))
                gpu = backend.describe(probe=True)
            assert gpu is not None
            started = utc_now()
            settings = job.job_settings(cfg, p)
            try:
                workload = job.vllm_workload(cfg, engine, p, settings) if engine is not None \
                    else build(p, settings, backend)
            except DoesNotFit as e:  # the engine is up but cannot hold the point: a record, not a failure
                if len(meta_extra.get("engine_shared_by_points") or ()) > 1 and near_fit(e):  # its own may
                    log.warning("group: the engine shared by %s cannot hold %s (%s); left for a job of its own",
                                ",".join(meta_extra["engine_shared_by_points"]), p.path, e)
                    result.alone[p.path] = str(e)
                    return None
                job.write_skipped(cfg, p, out, name, str(e))
                result.skipped[p.path] = str(e)
                return None
            job.measure_point(cfg, p, out, backend, workload, settings, gpu, started, origin=t0,
                              extra=meta_extra)
        result.measured.append(p.path)
        return None
    except Exception as e:
        _fail(p, out, e, result)
        return e
    finally:
        workload = None
        if name != "sim":
            try:
                free_gpu_cache()
            except Exception as e:  # after a sticky CUDA error this raises it again: the caller has it
                log.warning("group: freeing the cached GPU memory after %s failed: %s", p.path, e)

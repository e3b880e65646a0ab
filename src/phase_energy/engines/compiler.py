"""The compiler's side of a native job: one cache for all jobs, and its modules imported ahead in a thread.

Nothing here imports torch at module level, so that a job can start :class:`CompilePrefetch` before it
imports torch itself. A native job on a GPU compiles its decode step (``torch.compile``), and the first
compile needs torch._dynamo, TorchInductor and Triton: thousands of modules, seconds of Python (8.6 s of
a warm job's build on an H200, where the compile itself was cached). The prefetch imports them in a
background thread while the job's main thread opens the GPU (NVML, its lock, CUDA), so that the compile
finds them imported.

Python runs one thread at a time: the imports gain only the time the main thread spends outside Python
(NVML and CUDA driver calls release the interpreter lock). The job waits for the prefetch before its
first timed GPU work (the copy-bandwidth and matmul probe), so that no import competes with anything
measured; every window comes later still.

Off by default: on an H200 (three pairs of warm-cache jobs in fresh processes, the order alternating) it
gained nothing: 21.4 s to the first window with it, 20.4 s without (medians; the pairs' differences -1.7,
+1.8 and +0.8 s), because the main thread itself imports torch meanwhile and the two imports take turns.
``PHASE_ENERGY_COMPILE_PREFETCH=1`` turns it on, for a comparison on another machine.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

PREFETCH_ENV = "PHASE_ENERGY_COMPILE_PREFETCH"
PYCACHE_ENV = "PHASE_ENERGY_PYCACHE"
WAIT_S = 120.0  # the imports take seconds; a job holding its GPU never waits on a hung one for longer
# what torch.compile (the wrapper) and the first compiled call import, in import order; triton only where it
# is installed (CUDA builds of torch ship it)
PREFETCH_MODULES = ("torch", "triton", "triton.language", "torch._dynamo", "torch._inductor.compiler_bisector",
                    "torch._inductor.async_compile", "torch._inductor.compile_fx")


def compile_cache_root(root: str | None = None) -> str:
    """The compile cache's folder, absolute: ``root``, else ``PHASE_ENERGY_COMPILE_CACHE``, else ``.compile-cache``."""
    return os.path.abspath(root or os.environ.get("PHASE_ENERGY_COMPILE_CACHE", ".compile-cache"))


def use_bytecode_cache() -> str | None:
    """Where the interpreter writes no bytecode, write it into the compile cache's ``pycache`` folder; that folder.

    A Python image may set ``PYTHONDONTWRITEBYTECODE=1`` and ship torch without ``__pycache__`` files: then every
    new process compiles the sources of torch, Triton and torch's compiler again, and the imports of a GPU job
    (torch, torch._dynamo, torch._inductor.compile_fx) took 9-15 s per process on such an image. Here
    ``sys.pycache_prefix`` is set to ``<compile cache>/pycache`` and ``sys.dont_write_bytecode`` to False:
    bytecode is written only into that folder, nothing next to the sources. ``PYTHONPYCACHEPREFIX`` is set to
    the same folder, so that child processes read what this one wrote. Call before the imports it should
    speed up.

    A no-op (None) where the interpreter writes bytecode normally (``sys.dont_write_bytecode`` False), where
    a bytecode folder is set already (``sys.pycache_prefix``), or with ``PHASE_ENERGY_PYCACHE=0``.
    """
    raw = os.environ.get(PYCACHE_ENV, "1")
    if raw not in ("0", "1"):
        raise ValueError(f"{PYCACHE_ENV}={raw!r} is not accepted; expected 0 (leave the interpreter's setting) "
                         "or 1 (where the interpreter writes no bytecode, write it into the compile cache's pycache "
                         "folder, the default)")
    if raw == "0" or not sys.dont_write_bytecode or sys.pycache_prefix is not None:
        return None
    folder = os.path.join(compile_cache_root(), "pycache")
    sys.pycache_prefix = folder
    sys.dont_write_bytecode = False
    os.environ["PYTHONPYCACHEPREFIX"] = folder
    return folder


def set_compile_caches(root: str | None = None) -> None:
    """One Triton and one TorchInductor cache for all jobs of a run.

    Kernels, compiled graphs and the autotuners' choices (flash-linear-attention's kernels autotune on
    first use, which costs tens of seconds per job otherwise) are reused across jobs and, when the folder
    is kept, across runs. Environment settings take precedence. Call before the kernels are imported.
    """
    base = compile_cache_root(root)
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(base, "triton"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(base, "inductor"))
    os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")


def prefetch_enabled() -> bool:
    """``PHASE_ENERGY_COMPILE_PREFETCH``: ``1`` imports the compiler ahead, ``0`` or unset leaves it to the compile."""
    raw = os.environ.get(PREFETCH_ENV, "0")
    if raw not in ("0", "1"):
        raise ValueError(f"{PREFETCH_ENV}={raw!r} is not accepted; expected 0 (import the compiler's modules when "
                         "the step is compiled, the default) or 1 (import them in a thread at the job's start)")
    return raw == "1"


class CompilePrefetch:
    """Imports ``modules`` in a background thread; :meth:`wait` joins it and says what it did.

    A failed import is logged and ends the prefetch; it never fails the job (the compile imports the module
    again, and raises or falls back to eager as it would have). A module that is not installed is skipped.
    """

    def __init__(self, modules: tuple[str, ...] | None = None):
        self.modules = PREFETCH_MODULES if modules is None else modules
        self.imported: dict[str, float] = {}  # module: seconds its import took (in import order)
        self.error: str | None = None
        self.import_s = 0.0
        self._thread = threading.Thread(target=self._run, name="compile-prefetch", daemon=True)

    def start(self) -> CompilePrefetch:
        """Start the imports (after the compile caches are set: Triton and Inductor read them)."""
        set_compile_caches()
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        name = ""
        try:
            for name in self.modules:
                top = name.partition(".")[0]
                if importlib.util.find_spec(top) is None:  # not installed (triton on a CPU build of torch)
                    if top == name:
                        log.info("compile prefetch: %s is not installed; skipped", name)
                    continue
                t = time.monotonic()
                importlib.import_module(name)
                self.imported[name] = time.monotonic() - t
        except Exception as e:  # never the job's failure: the compile imports it again
            self.error = f"{name}: {type(e).__name__}: {e}"[:500]
            log.warning("compile prefetch: importing %s failed (%s); the compile will import it", name, self.error)
        finally:
            self.import_s = time.monotonic() - t0

    def wait(self, timeout_s: float = WAIT_S) -> dict[str, Any]:
        """Wait for the imports to end, at most ``timeout_s``; the record for the trace's metadata.

        ``import_s``: the thread's seconds; ``modules``: each module imported and the seconds its import took
        (what an earlier one had not imported already; ``torch`` may have been imported by the job meanwhile);
        ``error``: what ended the prefetch, or None. An import still running after ``timeout_s`` is left to
        finish in the background (the job, holding its GPU, goes on; the record says so).
        """
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.error = f"still importing after {timeout_s:.0f} s; the job went on without waiting"
            log.warning("compile prefetch: %s", self.error)
        return {"import_s": self.import_s, "modules": dict(self.imported), "error": self.error}


def start_compile_prefetch(modules: tuple[str, ...] | None = None) -> CompilePrefetch | None:
    """A started :class:`CompilePrefetch` where ``PHASE_ENERGY_COMPILE_PREFETCH=1`` turns it on, else None."""
    return CompilePrefetch(modules).start() if prefetch_enabled() else None

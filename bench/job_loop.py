"""GPU measurement jobs one after another, each in a fresh process, as the workflow's measure rule starts them.

Run on a GPU node (default lever only: nothing here changes a GPU setting):

    python bench/job_loop.py --config config/h200-reference.yaml --out OUT --cache OUT-cache \\
        --points qwen3-4b:32x2048,qwen3-4b:32x2048 --env PHASE_ENERGY_COMPILE_SCOPE=block --deadline-s 300

Each point is ``arch:BATCHxCONTEXT``; a point named again runs again as the next repetition (``rep~1``), so
the second run finds the compiled artefacts of the first in ``--cache`` (the job's compile cache, the
``PHASE_ENERGY_COMPILE_CACHE`` a campaign keeps between jobs). Every job is ``phase-energy measure`` in a new
Python process, the command the workflow runs; its wall time goes to ``OUT/jobs.jsonl``. Then

    python bench/gpu_job_time.py OUT --out bench/gpu-job-time-after.json

gives the time to the first window and the share of job time inside windows from the traces.

With ``--fork`` the loop itself imports what a native job imports first (torch, Triton, torch's compiler;
nothing that starts CUDA: fla's kernels are left to the job, since importing ``fla.ops`` asks the GPU for its
name and capability, which starts CUDA) and forks a child per job,
which runs the same command in-process (``phase_energy.cli.main``) and exits: each job still has a process
of its own (its own CUDA context, GPU lock, lever and exit status), but starts with those modules imported.
It measures what a job would gain from a pre-importing parent (a fork server), before any is built. The
child's clock starts when it imports the job's module, after the fork: its ``time_to_first_window_s``
leaves out a client's own start, about a tenth of a second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def parse_points(text: str) -> list[tuple[str, int, int]]:
    """``qwen3-4b:32x2048,mamba2-2.7b:1x512`` -> [("qwen3-4b", 32, 2048), ("mamba2-2.7b", 1, 512)]."""
    out = []
    for part in text.split(","):
        arch, _, shape = part.strip().partition(":")
        b, _, c = shape.partition("x")
        if not (arch and b.isdigit() and c.isdigit()):
            raise SystemExit(f"--points: {part!r} is not ARCH:BATCHxCONTEXT (e.g. qwen3-4b:32x2048)")
        out.append((arch, int(b), int(c)))
    return out


# What a native job imports before its first window, outside the project: imported once by the --fork parent.
# torch.cuda is never initialised here (a CUDA context does not survive a fork), which the parent checks after
# each import. Not fla.ops: its import reads the GPU's name and capability (fla.utils), which starts CUDA; on
# the H200 of 2026-12-03 a parent that imported it could not fork a job.
PRELOAD = ("torch", "triton", "triton.language", "torch._dynamo", "torch._inductor.compile_fx")


def preload(modules: tuple[str, ...] = PRELOAD) -> dict[str, float]:
    """Import ``modules`` (those not installed are skipped); return each import's seconds."""
    import importlib
    import importlib.util

    took: dict[str, float] = {}
    for name in modules:
        root = name.split(".")[0]
        if importlib.util.find_spec(root) is None:
            continue
        t0 = time.monotonic()
        importlib.import_module(name)
        took[name] = round(time.monotonic() - t0, 3)
        torch: Any = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            raise SystemExit(f"--fork: importing {name} initialised CUDA; a job forked after it could not use "
                             f"the GPU (imported before it: {', '.join(took) or 'nothing'})")
    return took


def run_forked(argv: list[str], env: dict[str, str], log: Path, timeout_s: float) -> int:
    """``phase-energy <argv>`` in a forked child with ``env``, its output to ``log``; its exit status.

    For the default lever only: the child leaves by ``os._exit``, without the interpreter's exit handlers,
    one of a lever's restore paths.

    The child is killed (SIGTERM, then SIGKILL 10 s later) if it runs past ``timeout_s``.
    """
    import signal

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pid = os.fork()
    if pid == 0:  # the job's process
        code = 1
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (the process's own streams)
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            os.environ.clear()
            os.environ.update(env)
            import logging

            for h in list(logging.root.handlers):  # the job sets up its own, as in a new process
                logging.root.removeHandler(h)
            from phase_energy.cli import main as cli_main

            code = cli_main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            import logging

            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # not the parent's exit handlers (the default lever has nothing to restore)
    os.close(fd)
    deadline, sent = time.monotonic() + timeout_s, None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        now = time.monotonic()
        if now > deadline and sent is None:
            os.kill(pid, signal.SIGTERM)
            sent = now
        elif sent is not None and now > sent + 10:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def main() -> None:
    """Entry point."""
    from phase_energy.grid import GridPoint

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cache", required=True, help="compile cache folder shared by the jobs")
    p.add_argument("--points", required=True)
    p.add_argument("--engine", default="native", choices=["native", "vllm"])
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--deadline-s", type=float, default=540.0)
    p.add_argument("--fork", action="store_true",
                   help="import torch and its compiler once here and fork each job from this process")
    a = p.parse_args()
    deadline = time.time() + a.deadline_s
    env = dict(os.environ, PHASE_ENERGY_COMPILE_CACHE=os.path.abspath(a.cache))
    env.update(kv.split("=", 1) for kv in a.env)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.fork:
        from phase_energy.engines.compiler import set_compile_caches, use_bytecode_cache

        # the caches' settings before the kernels are imported: an autotuner reads TRITON_CACHE_AUTOTUNING then
        os.environ.update(env)
        set_compile_caches()
        use_bytecode_cache()  # the parent's imports read the bytecode a job of its own writes, as a job would
        env = dict(os.environ)
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # the parent only: no CUDA driver start
        print(json.dumps({"preload_s": preload()}), flush=True)
    seen: Counter[tuple[str, int, int]] = Counter()
    longest = 0.0
    for arch, batch, context in parse_points(a.points):
        rep = seen[(arch, batch, context)]
        seen[(arch, batch, context)] += 1
        point = GridPoint(arch, batch, context, "default", rep, a.engine)
        left = deadline - time.time()
        if left < 1.2 * (longest or 30.0):  # 30 s before any job has run, then the longest job seen
            print(f"stopping before {point.path}: {left:.0f} s left, a job took up to {longest:.0f} s", flush=True)
            break
        argv = ["measure", "--config", a.config, "--engine", a.engine, "--arch", arch, "--batch", str(batch),
                "--context", str(context), "--lever", "default", "--rep", str(rep), "--out", str(out / point.path)]
        t0 = time.monotonic()
        log = out / f"{point.path.replace('/', '_')}.log"
        if a.fork:
            rc = run_forked(argv, env, log, left)
        else:
            with log.open("w") as fh:
                rc = subprocess.run([sys.executable, "-m", "phase_energy.cli", *argv], env=env, stdout=fh,
                                    stderr=subprocess.STDOUT, timeout=left, check=False).returncode
        wall = time.monotonic() - t0
        longest = max(longest, wall)
        rec = {"point": point.path, "rc": rc, "wall_s": round(wall, 2), "env": a.env, "fork": a.fork}
        print(json.dumps(rec), flush=True)
        with (out / "jobs.jsonl").open("a") as fh:
            fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()

from __future__ import annotations

import os

# the engine's Triton kernels run in Triton's interpreter on CPU tensors (set before they are defined)
os.environ.setdefault("TRITON_INTERPRET", "1")
# a measure or clear command run in-process would otherwise move the whole test worker's bytecode (and its
# children's) into a compile cache's pycache folder where PYTHONDONTWRITEBYTECODE is set; the tests of that
# cache (test_job_start.py) run their own processes with their own setting
os.environ.setdefault("PHASE_ENERGY_PYCACHE", "0")

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI in a copy of the workflow."""
    cmd = [sys.executable, "-m", "snakemake", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False)


def copy_workflow(dest: Path) -> Path:
    """A throw-away copy of the workflow (Snakefile, rules, config, profiles)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "profiles", "envs"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=False)
        else:
            shutil.copy(src, dest / name)
    return dest


@pytest.fixture(scope="session")
def sim_run(tmp_path_factory) -> Path:
    """The test config run end to end on the simulator once per session."""
    wd = copy_workflow(tmp_path_factory.mktemp("wf"))
    res = run_snakemake(wd, "--cores", "2", "--configfile", "config/test.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (wd / "console.txt").write_text(res.stdout + res.stderr)  # what the person running it saw
    return wd


class EngineStarted(Exception):
    """Raised by the stand-in ``LLM`` once it has recorded its arguments (the engine goes no further)."""


@pytest.fixture
def vllm_args(monkeypatch) -> list[dict]:
    """vLLM cannot run on these CPUs: a stand-in ``vllm`` module whose ``LLM`` records each engine's keyword
    arguments in the returned list, then raises :class:`EngineStarted`."""
    import types

    seen: list[dict] = []

    def llm(**kwargs):
        seen.append(kwargs)
        raise EngineStarted

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(__version__="0.26.0", LLM=llm))
    return seen

"""The offline wheelhouse: built here, installed into a fresh venv with no index, and the CLI works."""

import subprocess
import sys

import pytest

from phase_energy.wheelhouse import requirements

from .conftest import ROOT


def test_requirements_follow_the_extras():
    core = requirements([], with_torch=False)
    gpu = requirements(["gpu"], with_torch=False)
    assert any(r.startswith("pandas") for r in core)
    assert any(r.startswith("nvidia-ml-py") for r in gpu) and any(r.startswith("fla-core") for r in gpu)
    assert not any(r.startswith("flash-linear-attention") for r in gpu)  # its models import transformers
    assert not any(r.startswith("torch") for r in gpu)
    assert any(r.startswith("torch") for r in requirements(["gpu"], with_torch=True))
    assert any(r.startswith("vllm") for r in requirements(["gpu", "vllm"], with_torch=False))
    assert not any(r.startswith("vllm") for r in gpu)
    with pytest.raises(ValueError, match=r"tensorrt.*accepted: .*vllm"):
        requirements(["tensorrt"], with_torch=False)


@pytest.mark.slow
def test_offline_install_from_the_wheelhouse(tmp_path):
    wh = tmp_path / "wheelhouse"
    res = subprocess.run([sys.executable, "-m", "phase_energy.cli", "wheelhouse", "--dest", str(wh), "--extras", ""],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert list(wh.glob("phase_energy-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/pip"), "install", "-q", "--no-index", "--find-links", str(wh), "phase-energy"]
    res = subprocess.run(pip, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    res = subprocess.run([str(venv / "bin/phase-energy"), "check-config", str(ROOT / "config/test.yaml")],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0 and "12 measurement jobs" in res.stdout, res.stdout + res.stderr

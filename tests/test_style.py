"""Linters and the type checker, so the README's one test command checks everything."""

import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.parametrize("cmd", [
    ["ruff", "check", "src", "tests", "bench"],
    ["mypy"],
    ["snakefmt", "--check", "Snakefile", "workflow"],
], ids=["ruff", "mypy", "snakefmt"])
def test_tool_is_clean(cmd):
    res = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]

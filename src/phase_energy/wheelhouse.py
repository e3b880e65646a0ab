"""An offline wheelhouse: every wheel a measurement job needs, for the compute nodes' Python and platform.

Compute nodes often have no network. Build the wheelhouse on a login node (or any machine with PyPI),
copy it along, and install with ``pip install --no-index --find-links WHEELHOUSE 'phase-energy[...]'``.
torch is left out by default: sites and GPU images bring their own build of it.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


def requirements(extras: list[str], with_torch: bool) -> list[str]:
    """The package's requirements for the given extras (from its installed metadata).

    An extra the package does not declare is an error naming the accepted ones. ``with_torch`` false leaves
    torch out of the list; an extra that pins torch itself (vllm) still brings it through pip's resolution.
    """
    known = set(metadata.metadata("phase-energy").get_all("Provides-Extra") or [])
    unknown = sorted(set(extras) - known)
    if unknown:
        raise ValueError(f"wheelhouse --extras: {', '.join(unknown)} is not an extra of phase-energy; accepted: "
                         f"{', '.join(sorted(known))}")
    reqs = []
    for r in metadata.requires("phase-energy") or []:
        name, _, marker = r.partition(";")
        m = re.search(r'extra\s*==\s*"([^"]+)"', marker)
        if m and m.group(1) not in extras:
            continue
        if not with_torch and re.match(r"torch\b", name.strip()):
            continue
        reqs.append(name.strip())
    return reqs


def build(dest: Path, python_version: str, platforms: list[str] | None, extras: list[str], with_torch: bool = False,
          source: Path = ROOT) -> list[Path]:
    """Download the wheels (dependencies resolved for the target) and build our own; return the files."""
    reqs = requirements(extras, with_torch)  # a bad extra stops here, before any download
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest), str(source)],
                   check=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "-d", str(dest), "--only-binary=:all:"]
    if platforms:  # another machine's Python and platform; without them: this machine's
        cmd += ["--python-version", python_version, "--implementation", "cp"]
        for p in platforms:
            cmd += ["--platform", p]
    cmd += reqs
    log.info("downloading: %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    return sorted(dest.glob("*.whl"))

"""Two runs of the main job, compared: every trace, table, claim and figure the same?

    python bench/sim_default_grid.py --root OLD --cores 1 --workdir A --out a.json
    python bench/sim_default_grid.py --cores 1 --workdir B --out b.json
    python bench/compare_results.py A/cores-1 B/cores-1

For a change meant to leave the results alone (a speed-up). Traces: samples.parquet and windows.parquet
equal value for value (and their SHA-256 in status.json equal: the same bytes); metadata.json equal but
for the job's times and the code's commit (``--values-only``: the tables value for value only, for a change
of how they are encoded). Tables under results/tables and results/claims*.csv: parquet
equal value for value, CSV byte for byte. Figures: PNG byte for byte; SVG after the ids and the date that
matplotlib draws at random or from the clock. Prints each file that differs and a count per kind; exits
1 when any differs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

TIMES = ("started_at", "finished_at", "git_commit")


def _svg(text: str) -> str:
    text = re.sub(r"<dc:date>.*?</dc:date>", "", text)
    text = re.sub(r'(id|xlink:href|clip-path)="[^"]*"', "", text)
    return re.sub(r"url\(#[^)]*\)", "url()", text)


def _same_frames(a: Path, b: Path) -> bool:
    try:
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)
    except AssertionError:
        return False
    return True


def compare(a: Path, b: Path, values_only: bool = False) -> dict[str, list[str]]:
    """Per kind, the files under ``a`` that differ from (or are missing in) ``b``; and the counts compared.

    ``values_only``: the traces' tables compared value for value only (a change of how they are encoded).
    """
    out: dict[str, list[str]] = {"traces": [], "tables": [], "figures": [], "compared": []}
    statuses = sorted((a / "results/traces").rglob("status.json"))
    for sa in statuses:
        rel = sa.parent.relative_to(a)
        da, db = a / rel, b / rel
        if not (db / "status.json").exists():
            out["traces"].append(f"{rel}: missing")
            continue
        ja, jb = (json.loads((d / "status.json").read_text()) for d in (da, db))
        for name in ("samples.parquet", "windows.parquet"):
            digests = [j.get("files", {}).get(name, {}).get("sha256") for j in (ja, jb)]
            bytes_differ = digests[0] != digests[1] and not values_only
            if (da / name).exists() and (bytes_differ or not _same_frames(da / name, db / name)):
                out["traces"].append(f"{rel}/{name}")
        ma, mb = (json.loads((d / "metadata.json").read_text()) for d in (da, db))
        for k in TIMES:
            ma.pop(k, None)
            mb.pop(k, None)
        if ma != mb:
            keys = sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))
            out["traces"].append(f"{rel}/metadata.json: {keys}")
    tables = sorted([*(a / "results/tables").glob("*"), *(a / "results").glob("claims*.csv")])
    for ta in tables:
        tb = b / ta.relative_to(a)
        same = tb.exists() and (_same_frames(ta, tb) if ta.suffix == ".parquet" else ta.read_bytes() == tb.read_bytes())
        if not same:
            out["tables"].append(str(ta.relative_to(a)))
    figures = sorted((a / "figures").glob("*.png")) + sorted((a / "figures").glob("*.svg"))
    for fa in figures:
        fb = b / fa.relative_to(a)
        if fa.suffix == ".png":
            same = fb.exists() and fa.read_bytes() == fb.read_bytes()
        else:
            same = fb.exists() and _svg(fa.read_text()) == _svg(fb.read_text())
        if not same:
            out["figures"].append(str(fa.relative_to(a)))
    out["compared"] = [f"{len(statuses)} traces", f"{len(tables)} tables", f"{len(figures)} figure files"]
    return out


def main() -> None:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="a run's folder (holding results/ and figures/)")
    p.add_argument("b", help="the other run's folder")
    p.add_argument("--values-only", action="store_true",
                   help="the traces' tables value for value only, not byte for byte (a change of their encoding)")
    args = p.parse_args()
    res = compare(Path(args.a), Path(args.b), args.values_only)
    for kind in ("traces", "tables", "figures"):
        for f in res[kind]:
            print(f"DIFFERS {f}")
    print(f"compared {', '.join(res['compared'])}: " + ", ".join(f"{len(res[k])} {k} differ"
                                                                  for k in ("traces", "tables", "figures")))
    sys.exit(1 if any(res[k] for k in ("traces", "tables", "figures")) else 0)


if __name__ == "__main__":
    main()

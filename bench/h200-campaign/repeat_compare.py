"""Decode and prefill J/token of the points measured twice (run 10, kept here, and run 11, in reference-data).

    python bench/h200-campaign/repeat_compare.py
"""

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
EARLIER = ROOT / "bench/h200-campaign/run10-repeat"
LATER = ROOT / "reference-data/h200-default/traces/engine~native"  # the same points, in the engine layout


def mj_per_token(point: Path) -> dict[str, float]:
    """Median over trials of energy / tokens, per phase, in mJ."""
    w = pd.read_parquet(point / "windows.parquet")
    out = {}
    for phase in ("prefill", "decode"):
        g = w[w.phase == phase].groupby("trial")[["energy_j", "tokens"]].sum()
        out[phase] = float((g.energy_j / g.tokens).median() * 1e3)
    return out


def main() -> None:
    print("| point | decode mJ/token, run 10 | run 11 | prefill mJ/token, run 10 | run 11 |")
    print("|---|---|---|---|---|")
    for status in sorted(EARLIER.glob("arch~*/bs~*/ctx~*/lever~*/rep~*/status.json")):
        rel = status.parent.relative_to(EARLIER)
        a, b = mj_per_token(status.parent), mj_per_token(LATER / rel)
        print(f"| {rel.parts[0][5:]} {rel.parts[1].replace('bs~', 'b')} {rel.parts[2].replace('~', ' ')} "
              f"| {a['decode']:.1f} | {b['decode']:.1f} ({(b['decode'] / a['decode'] - 1) * 100:+.1f} %) "
              f"| {a['prefill']:.2f} | {b['prefill']:.2f} ({(b['prefill'] / a['prefill'] - 1) * 100:+.1f} %) |")


if __name__ == "__main__":
    main()

"""The spread between runs of one point, from the points the committed traces hold twice.

Pairs of runs that measured the same points with the same engine and settings: five qwen3-4b-transmla points
of the reference campaign measured in runs 10 and 11 (two machines, 49 minutes apart); qwen3-4b at batch 1
and 32 measured by the native engine on the two cards of the first engine comparison (one session); and
vLLM 0.26 on three pairs of cards, each pair measured in two sessions. A vLLM point counts only where its
version, scheduling and attention backends agree on both sides (its other settings, such as max_num_seqs
and the CUDA-graph sizes, follow each session's points and are not compared; the native engine changed
its kernels between the other sessions, so its points there are not pairs of runs). Decode J/token is the
mean over a job's trials of its windows that the analysis keeps (``analysis.exclude_flags``). A
run (or card) moves all its points together, so each pair of runs gives one difference: the mean of its
points' relative differences. The spread of one run's value is that difference over sqrt(2); the largest
of the pairs is what ``analysis.run_to_run_sd`` takes (config default), a conservative choice.

    python bench/run_to_run.py          # prints the pairs, writes bench/run-to-run.json
"""

import json
import math
from pathlib import Path

import pandas as pd

from phase_energy.config import validate_config

ROOT = Path(__file__).resolve().parents[1]
PAIRS = {
    "campaign runs 10 and 11 (qwen3-4b-transmla, context 512)": (
        ROOT / "bench/h200-campaign/run10-repeat", ROOT / "reference-data/h200-default/traces/engine~native"),
    "engine comparison cards GPU-2fe7af5a and GPU-d4fa298c (qwen3-4b native, context 2048)": (
        ROOT / "reference-data/h200-engines/card-2fe7af5a/traces/engine~native",
        ROOT / "reference-data/h200-engines/card-d4fa298c/traces/engine~native"),
    **{f"vLLM 0.26 on cards GPU-{a} and GPU-{b} ({what})": (
        ROOT / f"reference-data/h200-engines/card-{a}/traces/engine~vllm",
        ROOT / f"reference-data/h200-engines/card-{b}/traces/engine~vllm")
       for a, b, what in (("d4fa298c", "9a0794a0", "qwen3-4b, context 2048"),
                          ("bd829914", "69640ece", "mamba2-2.7b and nemotron-h-4b, 128 x 2048"),
                          ("33a90a04", "f019b024", "qwen3-4b-transmla and qwen3.5-4b"))},
}
# what must agree between the two runs of a point for them to count as a pair
SETTINGS = ("vllm_version", "async_scheduling", "attention_backends")


def settings(point: Path) -> tuple:
    """The engine settings a pair must share (empty for the native engine: its pairs are listed by hand)."""
    info = json.loads((point / "metadata.json").read_text()).get("engine_info") or {}
    return tuple(str(info.get(k)) for k in SETTINGS) if "vllm_version" in info else ()


EXCLUDED = set(validate_config({})["analysis"]["exclude_flags"])  # the windows the analysis leaves out


def decode_j_per_token(point: Path) -> float:
    """Mean over trials of a job's decode energy per token (J), as the analysis takes it: without the windows
    whose validity flags ``analysis.exclude_flags`` names."""
    w = pd.read_parquet(point / "windows.parquet")
    kept = w["flags"].fillna("").map(lambda f: not EXCLUDED & set(filter(None, f.split(","))))
    g = w[(w["phase"] == "decode") & kept].groupby("trial")[["energy_j", "tokens"]].sum()
    return float((g["energy_j"] / g["tokens"]).mean())


def main() -> None:
    out = {"command": "python bench/run_to_run.py", "pairs": []}
    for name, (a_root, b_root) in PAIRS.items():
        diffs = []
        for status in sorted(a_root.rglob("status.json")):
            rel = status.parent.relative_to(a_root)
            if not (b_root / rel / "status.json").exists():
                continue
            pair = (status.parent, b_root / rel)
            if any(json.loads((d / "status.json").read_text())["status"] != "ok" for d in pair):
                continue
            if settings(status.parent) != settings(b_root / rel):
                print(f"  {rel}: engine settings differ, not a pair")
                continue
            a, b = decode_j_per_token(status.parent), decode_j_per_token(b_root / rel)
            diffs.append({"point": str(rel), "first": a, "second": b, "relative_difference": b / a - 1})
        mean = sum(d["relative_difference"] for d in diffs) / len(diffs)
        out["pairs"].append({"runs": name, "points": diffs, "mean_relative_difference": mean})
        print(f"{name}: {len(diffs)} points, mean difference {mean:+.2%}")
    worst = max(abs(p["mean_relative_difference"]) for p in out["pairs"])
    out["run_to_run_sd"] = worst / math.sqrt(2)
    print(f"run-to-run standard deviation of one run's value: {out['run_to_run_sd']:.2%} "
          f"(the largest pair's difference over sqrt(2))")
    (ROOT / "bench/run-to-run.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""The decode tables of docs/reference-data.md, from the tables the workflow derives from the reference traces.

    snakemake --cores 2 --configfile config/h200-reference.yaml     # results/tables/
    python bench/reference_tables.py results/tables                  # prints markdown
"""

import sys
from pathlib import Path

import pandas as pd

PARADIGM = {"gqa": "GQA", "mla": "MLA", "gdn": "GDN", "mamba2": "Mamba2"}


def main() -> None:
    tables = Path(sys.argv[1] if len(sys.argv) > 1 else "results/tables")
    s = pd.read_parquet(tables / "phase_energy.parquet")
    d = s[(s["phase"] == "decode") & (s["lever"] == "default")].sort_values(["context", "batch", "arch"])
    for ctx, g in d.groupby("context"):
        print(f"Decode at context {ctx}:\n")
        print("| arch | batch | decode W [95 % CI] | SW cap, steady decode | mJ/token [95 % CI] | tokens/s | floor "
              "fraction |")
        print("|---|---|---|---|---|---|---|")
        for r in g.itertuples():
            print(f"| {r.arch} ({PARADIGM[r.paradigm]}) | {r.batch} | {r.power_mean_w:.0f} "
                  f"[{r.power_mean_w_ci_low:.0f}, {r.power_mean_w_ci_high:.0f}] | "
                  f"{100 * r.sw_power_cap_share_steady:.1f} % | "
                  f"{1e3 * r.j_per_token:.4g} [{1e3 * r.j_per_token_ci_low:.4g}, {1e3 * r.j_per_token_ci_high:.4g}] | "
                  f"{r.tokens_per_s:.0f} | {r.floor_fraction:.2f} |")
        print()


if __name__ == "__main__":
    main()

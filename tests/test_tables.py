"""The table registry: what a stage may write and read, and the errors that name a missing or damaged table."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from phase_energy.analysis.stages import STAGES, run_stage
from phase_energy.analysis.tables import TABLES, TableError, default_paths, read_table, write_table
from phase_energy.cli import main
from phase_energy.config import validate_config
from phase_energy.report.catalog import FIGURES

ROOT = Path(__file__).parents[1]


def _row(name):
    return {c: 1 for c in TABLES[name].columns}


@pytest.mark.parametrize("suffix_table", ["pareto", "dominance"])  # one parquet, one CSV
def test_a_table_round_trips_and_an_empty_one_keeps_its_columns(tmp_path, suffix_table):
    path = tmp_path / TABLES[suffix_table].file
    write_table(suffix_table, pd.DataFrame([_row(suffix_table)]).assign(extra=2.5), path)
    back = read_table(suffix_table, path)
    assert len(back) == 1 and back.loc[0, "extra"] == 2.5 and set(TABLES[suffix_table].columns) <= set(back)
    write_table(suffix_table, pd.DataFrame(), path)  # nothing to report: still a table with its columns
    empty = read_table(suffix_table, path)
    assert empty.empty and list(empty.columns) == list(TABLES[suffix_table].columns)


def test_missing_damaged_or_foreign_tables_are_errors_that_name_them(tmp_path):
    path = tmp_path / "pareto.parquet"
    with pytest.raises(TableError, match=r"table 'pareto' .*pareto.parquet does not exist"):
        read_table("pareto", path)
    path.write_bytes(b"")
    with pytest.raises(TableError, match="empty file"):
        read_table("pareto", path)
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(TableError, match="cannot be read"):
        read_table("pareto", path)
    pd.DataFrame([{"tokens_per_s": 1.0}]).to_parquet(path)
    with pytest.raises(TableError, match=r"lacks the columns \['engine'"):
        read_table("pareto", path)
    with pytest.raises(TableError, match=r"no columns \['engine'"):
        write_table("pareto", pd.DataFrame([{"tokens_per_s": 1.0}]), path)
    with pytest.raises(TableError, match=r"unknown table 'paretto'; known tables: windows"):
        read_table("paretto", path)


def test_a_csv_table_cut_mid_row_is_an_error_naming_it(tmp_path):
    path = tmp_path / "dvfs_classes.csv"
    write_table("dvfs_classes", pd.DataFrame([_row("dvfs_classes"), _row("dvfs_classes")]), path)
    assert len(read_table("dvfs_classes", path)) == 2
    whole = path.read_bytes()
    path.write_bytes(whole[: whole.rindex(b",")])  # the last row without its last field: pandas would pad it
    with pytest.raises(TableError, match=r"table 'dvfs_classes': .*dvfs_classes.csv does not end with a whole line"):
        read_table("dvfs_classes", path)


def test_a_stage_takes_exactly_the_tables_it_declares(tmp_path):
    cfg = validate_config({})
    paths = default_paths(["phase_trials", "pareto", "dominance"], tmp_path)
    with pytest.raises(TableError, match=r"missing \['dominance'\]"):
        run_stage("pareto", cfg, {"phase_trials": paths["phase_trials"]}, {"pareto": paths["pareto"]})
    with pytest.raises(TableError, match=r"unknown \['windows'\]"):
        run_stage("pareto", cfg, {"phase_trials": paths["phase_trials"], "windows": paths["pareto"]},
                  {"pareto": paths["pareto"], "dominance": paths["dominance"]})
    with pytest.raises(TableError, match=r"phase_trials\.parquet does not exist"):  # declared, given, absent
        run_stage("pareto", cfg, {"phase_trials": paths["phase_trials"]},
                  {"pareto": paths["pareto"], "dominance": paths["dominance"]})
    assert not paths["pareto"].exists()


def test_the_cli_reports_a_missing_input_by_name_and_fails(tmp_path, caplog):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backend: sim\n")
    rc = main(["analyse", "sweetspot", "--config", str(cfg), "--in", f"request_energy={tmp_path}/r.parquet",
               "--out", f"sweetspot_cells={tmp_path}/c.parquet", "--out", f"sweetspot_fit={tmp_path}/f.csv"])
    assert rc == 2 and "table 'request_energy'" in caplog.text and "r.parquet does not exist" in caplog.text
    rc = main(["analyse", "pareto", "--config", str(cfg), "--in", "phase_trials"])
    assert rc == 2 and "expected NAME=PATH" in caplog.text


def test_every_stage_and_figure_names_only_registered_tables():
    for name, stage in STAGES.items():
        assert set(stage.inputs) | set(stage.outputs) <= set(TABLES), name
    written = {t for s in STAGES.values() for t in s.outputs}
    assert written == set(TABLES)  # every table has exactly one stage that writes it ...
    assert sum(len(s.outputs) for s in STAGES.values()) == len(TABLES)
    for name, fig in FIGURES.items():  # ... and a figure draws only tables a stage writes
        assert set(fig.tables) <= written, name
        # and the energy table, made from every trace: a figure job that reads a trace (fig01) takes no trace as
        # an input of its own (workflow/rules/common.smk), this table redraws it when a trace is measured again
        assert "phase_energy" in fig.tables, name


def test_parsing_the_workflow_imports_no_plotting_or_table_library_and_writes_nothing(tmp_path):
    """What the Snakefile imports (workflow/rules/common.smk) stays light: every SLURM job parses it again."""
    code = ("import sys\n"
            "import phase_energy.analysis.tables, phase_energy.config, phase_energy.grid\n"
            "import phase_energy.measure.layout, phase_energy.model.presets, phase_energy.report.catalog\n"
            "import phase_energy.report.progress\n"
            "heavy = sorted(m for m in ('matplotlib', 'seaborn', 'pandas', 'pyarrow', 'torch', 'scipy') "
            "if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    smk = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    imported = {line.split()[1] for line in smk.splitlines() if line.startswith(("from phase_energy", "import "))}
    assert {m for m in imported if m.startswith("phase_energy")} <= {
        "phase_energy.analysis.tables", "phase_energy.config", "phase_energy.grid", "phase_energy.measure.layout",
        "phase_energy.model.presets", "phase_energy.report.catalog", "phase_energy.report.progress"}

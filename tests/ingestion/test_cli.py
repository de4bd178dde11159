"""`python -m ingestion ingest|show`: exit codes and output (the library does the work)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from config.settings import REPO_ROOT, Settings
from ingestion.cli import app
from tests.ingestion.factories import valid_tables, write_batch

runner = CliRunner()


@pytest.mark.slow  # the CLI runs the real Great Expectations gate
def test_ingest_accepts_then_no_op_and_show(settings: Settings, tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "good", valid_tables(), "csv")
    first = runner.invoke(app, ["ingest", str(batch)])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("ACCEPTED batch ")
    again = runner.invoke(app, ["ingest", str(batch)])
    assert again.exit_code == 0 and "no change" in again.output
    shown = runner.invoke(app, ["show", "--limit", "1"])
    assert shown.exit_code == 0 and "batches published: 1" in shown.output
    assert "[price_features] 30 rows" in shown.output


def test_ingest_refusal_exits_1_and_names_the_problem(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    t["price_snapshots"].loc[0, "volume_24h"] = -5.0
    result = runner.invoke(app, ["ingest", str(write_batch(tmp_path / "bad", t))])
    assert result.exit_code == 1
    assert "REFUSED" in result.output and "price_snapshots.parquet" in result.output
    assert "'out_of_range'" in result.output and "'volume_24h'" in result.output
    assert "1 row(s)" in result.output
    assert str(settings.quarantine_dir) in result.output


@pytest.mark.slow
def test_assume_utc_flag(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    for df in t.values():
        for c in df.columns:
            if isinstance(df[c].dtype, pd.DatetimeTZDtype):
                df[c] = df[c].dt.tz_localize(None)
    batch = write_batch(tmp_path / "naive", t, "csv")
    assert runner.invoke(app, ["ingest", str(batch)]).exit_code == 1
    assert runner.invoke(app, ["ingest", str(batch), "--assume-utc"]).exit_code == 0


def test_missing_directory_is_a_usage_error(settings: Settings, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope")])
    assert result.exit_code == 2


def test_module_entry_point_help() -> None:
    out = subprocess.run([sys.executable, "-m", "ingestion", "ingest", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--assume-utc" in out.stdout


def test_generate_refuses_bad_arguments_with_a_message(tmp_path: Path) -> None:
    runner = CliRunner()
    backwards = runner.invoke(app, ["generate", "--out", str(tmp_path / "a"), "--start", "2024-05-01",
                                    "--end", "2024-01-01", "--no-progress"])
    assert backwards.exit_code == 2
    assert "end (2024-01-01) must be after start (2024-05-01)" in backwards.output
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("not ours")
    occupied = runner.invoke(app, ["generate", "--out", str(tmp_path / "b"), "--no-progress"])
    assert occupied.exit_code == 2 and "error:" in occupied.output
    assert (tmp_path / "b" / "keep.txt").read_text() == "not ours"

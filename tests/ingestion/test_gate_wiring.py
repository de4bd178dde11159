"""The Great Expectations gate inside ingest: runs on accepted batches, and its failure quarantines."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from config.settings import Settings
from ingestion.contract import TypedTable
from ingestion.ingest import _gate_violations, gate_frames, ingest_batch
from ingestion.store import committed_batches, read_published
from tests.ingestion.factories import valid_tables, write_batch

NOW = pd.Timestamp("2024-06-01", tz="UTC")
pytestmark = pytest.mark.slow  # Great Expectations: ~15 s for the first run in a process, ~3 s after


def test_gate_runs_and_a_gate_failure_quarantines(settings: Settings, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    t = valid_tables()
    accepted = ingest_batch(write_batch(tmp_path / "good", t), settings=settings, now=NOW)
    assert accepted.accepted, accepted.to_text()
    assert accepted.gate_docs_page and Path(accepted.gate_docs_page).is_file()

    # A batch the contract accepts but the gate refuses: the gate's row-count bound (a parameter of
    # the suite, tightened here) is a rule only Great Expectations checks.
    import validation.gate
    from validation.suites import Thresholds

    monkeypatch.setattr(validation.gate, "Thresholds", lambda: Thresholds(markets_rows_max=2))
    bad = {"markets": t["markets"].assign(market_id=lambda d: "n" + d["market_id"])}
    assert len(bad["markets"]) == 3
    before = set(settings.offline_store_dir.rglob("*.parquet"))
    refused = ingest_batch(write_batch(tmp_path / "bad", bad, "csv"), settings=settings, now=NOW)
    assert not refused.accepted
    assert [v.rule for v in refused.violations] == ["gate:expect_table_row_count_to_be_between"]
    assert refused.violations[0].file == "markets.csv" and refused.violations[0].table == "markets"
    # A table-level refusal: every row of the table, what the gate counted and the bounds it held it to.
    assert refused.violations[0].n_rows == 3
    assert "(observed 3, expected between 1 and 2)" in refused.violations[0].detail
    assert "3 row(s) refused" in refused.to_text() and "observed 3, expected between 1 and 2" in refused.to_text()
    assert "markets.csv" in refused.to_text() and "expect_table_row_count_to_be_between" in refused.to_text()
    reason = json.loads((refused.quarantine_path / "_reason.json").read_text())
    assert reason["gate"]["success"] is False
    assert reason["gate"]["docs_page"] and Path(reason["gate"]["docs_page"]).is_file()
    assert "Data Docs" in refused.to_text()
    assert set(settings.offline_store_dir.rglob("*.parquet")) == before
    assert list(committed_batches(settings.offline_store_dir)) == [accepted.batch_id]
    assert read_published(settings.offline_store_dir, "markets")["market_id"].str.startswith("m").all()


def test_gate_refusals_name_contract_columns(settings: Settings) -> None:
    """The gate checks derived columns (_market_known, ...); a refusal names the contract's columns."""
    from validation.gate import run_batch_checkpoint

    t = valid_tables()
    markets, prices = t["markets"].copy(), t["price_snapshots"].copy()
    markets.loc[0, "outcome"] = pd.NA  # resolved, without an outcome
    prices.loc[0, "market_id"] = "never-seen"
    prices.loc[11, "ts"] = markets.loc[1, "created_at"] - pd.Timedelta(hours=1)  # m001's first snapshot
    typed = {name: TypedTable(name, f"{name}.parquet", frame, frame)
             for name, frame in {"markets": markets, "price_snapshots": prices}.items()}
    gate = run_batch_checkpoint(gate_frames(typed), "contract-columns", settings=settings,
                                now=NOW.to_pydatetime())
    assert {f["column"] for f in gate.failures} == {
        "_outcome_is_null,_resolved_at_is_null", "_market_known", "ts,_market_created_at"}
    violations = _gate_violations(gate, typed)
    assert sorted((v.file, v.column, v.n_rows) for v in violations) == [
        ("markets.parquet", "outcome,resolved_at", 1), ("price_snapshots.parquet", "market_id", 1),
        ("price_snapshots.parquet", "ts", 1)]


def test_an_accepted_batch_with_warnings_points_to_the_page_with_them(settings: Settings, tmp_path: Path) -> None:
    """Every snapshot at price 0.01: the price checks warn on the price_snapshots page, markets all pass."""
    t = valid_tables()
    t["price_snapshots"] = t["price_snapshots"].assign(price=0.01)
    accepted = ingest_batch(write_batch(tmp_path / "skewed", t), settings=settings, now=NOW)
    assert accepted.accepted, accepted.to_text()
    gate_warnings = [w for w in accepted.warnings if w.startswith("validation warning")]
    assert len(gate_warnings) == 2, accepted.warnings  # mean and spread of price; 3 markets are too few to judge
    page = accepted.gate_docs_page
    assert page and Path(page).is_file() and "price_snapshots" in Path(page).parts
    for warning in gate_warnings:
        assert warning.startswith("validation warning: price_snapshots.price: ")
        assert warning.endswith(f"(Data Docs: {page})")
    assert f"data docs: {page}" in accepted.to_text()

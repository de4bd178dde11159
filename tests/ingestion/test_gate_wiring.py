"""The Great Expectations gate inside ingest: runs on accepted batches, and its failure quarantines."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from config.settings import Settings
from ingestion.ingest import ingest_batch
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
    assert "markets.csv" in refused.to_text() and "expect_table_row_count_to_be_between" in refused.to_text()
    reason = json.loads((refused.quarantine_path / "_reason.json").read_text())
    assert reason["gate"]["success"] is False
    assert reason["gate"]["docs_page"] and Path(reason["gate"]["docs_page"]).is_file()
    assert "Data Docs" in refused.to_text()
    assert set(settings.offline_store_dir.rglob("*.parquet")) == before
    assert list(committed_batches(settings.offline_store_dir)) == [accepted.batch_id]
    assert read_published(settings.offline_store_dir, "markets")["market_id"].str.startswith("m").all()

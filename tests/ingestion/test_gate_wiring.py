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


def test_gate_runs_and_a_gate_failure_quarantines(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    accepted = ingest_batch(write_batch(tmp_path / "good", t), settings=settings, now=NOW)
    assert accepted.accepted, accepted.to_text()
    assert accepted.gate_docs_page and Path(accepted.gate_docs_page).is_file()

    # Lowercase and non-empty (the contract's words) but not a platform name by the gate's stricter
    # suite (no spaces): the contract checks pass, the gate refuses, and nothing is published.
    bad = {"markets": t["markets"].assign(market_id=lambda d: "n" + d["market_id"],
                                          platform="poly market")}
    before = set(settings.offline_store_dir.rglob("*.parquet"))
    refused = ingest_batch(write_batch(tmp_path / "bad", bad, "csv"), settings=settings, now=NOW)
    assert not refused.accepted
    assert [v.rule for v in refused.violations] == ["gate:expect_column_values_to_match_regex"]
    v = refused.violations[0]
    assert (v.file, v.table, v.column, v.n_rows) == ("markets.csv", "markets", "platform", 3)
    assert "markets.csv" in refused.to_text() and "'platform'" in refused.to_text()
    reason = json.loads((refused.quarantine_path / "_reason.json").read_text())
    assert reason["gate"]["success"] is False and reason["gate"]["docs_page"]
    assert "poly market" in reason["violations"][0]["examples"][0].values()
    assert set(settings.offline_store_dir.rglob("*.parquet")) == before
    assert list(committed_batches(settings.offline_store_dir)) == [accepted.batch_id]
    assert read_published(settings.offline_store_dir, "markets")["market_id"].str.startswith("m").all()

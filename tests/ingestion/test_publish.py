"""Publishing: layout, idempotency, cross-batch repeats, market history, crash recovery, locking."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import ingestion.publish as publish_mod
from config.settings import Settings
from ingestion.ingest import ingest_batch
from ingestion.store import STAGING_DIR, STORE_SCHEMAS, committed_batches, describe_store, read_published
from tests.ingestion.factories import T0, markets_frame, polls_frame, prices_frame, valid_tables, write_batch

NOW = pd.Timestamp("2024-06-01", tz="UTC")


def _ingest(settings: Settings, batch: Path, now: pd.Timestamp = NOW, **kw: object):
    # Contract logic only; the Great Expectations gate (~3 s a run) is covered in test_gate_wiring.py.
    return ingest_batch(batch, settings=settings, now=now, run_gate=False, **kw)


def _store_files(settings: Settings) -> set[Path]:
    return set(settings.offline_store_dir.rglob("*.parquet"))


def test_layout_columns_and_types(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    # A market spanning two months lands in two month partitions.
    t["price_snapshots"] = pd.concat([t["price_snapshots"], pd.DataFrame({
        "market_id": ["m000"],
        "ts": pd.Series([T0 + pd.Timedelta(days=29, hours=23)], dtype="datetime64[us, UTC]"),
        "price": [0.5], "volume_24h": [1.0]})], ignore_index=True)
    t["markets"].loc[0, ["resolved_at", "updated_at"]] = T0 + pd.Timedelta(days=40)
    result = _ingest(settings, write_batch(tmp_path / "b", t))
    assert result.accepted, result.to_text()
    root = settings.offline_store_dir
    bid = result.batch_id
    assert len(bid) == 16 and int(bid, 16) >= 0
    expected = {f"markets/month=2024-01/{bid}.parquet", f"markets/month=2024-02/{bid}.parquet",
                f"market_info/month=2024-01/{bid}.parquet", f"market_info/month=2024-02/{bid}.parquet",
                f"price_features/month=2024-01/{bid}.parquet", f"poll_features/month=2024-01/{bid}.parquet"}
    assert {str(p.relative_to(root)) for p in _store_files(settings)} == expected
    for rel in expected:
        table = rel.split("/")[0]
        schema = pq.read_schema(root / rel)
        assert schema.names == STORE_SCHEMAS[table].names
        assert schema.equals(STORE_SCHEMAS[table], check_metadata=False)
    record = json.loads((root / "_batches" / f"{bid}.json").read_text())
    assert record["rows"] == {"markets": 3, "market_info": 6, "price_features": 31, "poll_features": 9}
    assert sorted(record["files"]) == sorted(expected)
    prices = read_published(root, "price_features")
    assert (prices["ingested_at"] == NOW).all() and (prices["batch_id"] == bid).all()
    assert not (root / STAGING_DIR / bid).exists()


def test_same_batch_twice_and_csv_vs_parquet_is_a_no_op(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    first = _ingest(settings, write_batch(tmp_path / "p", t, "parquet"))
    files = {p: p.stat().st_mtime_ns for p in _store_files(settings)}
    again = _ingest(settings, write_batch(tmp_path / "p", t, "parquet"), now=NOW + pd.Timedelta(hours=1))
    as_csv = _ingest(settings, write_batch(tmp_path / "c", t, "csv"), now=NOW + pd.Timedelta(hours=2))
    assert first.accepted and not first.no_op
    for r in (again, as_csv):
        assert r.accepted and r.no_op and r.batch_id == first.batch_id
        assert "no change" in r.to_text()
    assert {p: p.stat().st_mtime_ns for p in _store_files(settings)} == files
    assert list(committed_batches(settings.offline_store_dir)) == [first.batch_id]


def test_batch_id_ignores_row_order_but_not_content(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    shuffled = {k: v.sample(frac=1, random_state=3) for k, v in t.items()}
    a = _ingest(settings, write_batch(tmp_path / "a", t))
    b = _ingest(settings, write_batch(tmp_path / "b", shuffled))
    assert b.no_op and b.batch_id == a.batch_id
    t["price_snapshots"].loc[0, "price"] += 1e-9
    c = _ingest(settings, write_batch(tmp_path / "c", t))
    assert not c.accepted and c.batch_id != a.batch_id  # changed observation -> conflicts_with_published
    assert [v.rule for v in c.violations] == ["conflicts_with_published"]


@pytest.mark.parametrize("first, second", [
    (["Will x\x1fy?", "z"], ["Will x", "y?\x1fz"]),  # the same characters, split differently
    (["\x00", "b"], [None, "b"]),                    # a NUL character vs a null
])
def test_batch_id_tells_apart_strings_that_only_differ_in_where_they_split(settings: Settings, tmp_path: Path,
                                                                          first, second) -> None:
    """Different content must never share a batch id: the second batch would be taken as "already
    published" and silently dropped, instead of refused as a conflicting version."""
    a, b = markets_frame(2, resolved=False), markets_frame(2, resolved=False)
    a["question"], b["question"] = first, second
    first_result = _ingest(settings, write_batch(tmp_path / "a", {"markets": a}))
    second_result = _ingest(settings, write_batch(tmp_path / "b", {"markets": b}))
    assert first_result.accepted and second_result.batch_id != first_result.batch_id
    assert not second_result.no_op


def test_repeated_identical_rows_are_skipped(settings: Settings, tmp_path: Path) -> None:
    markets = markets_frame(3)
    prices = prices_frame(markets, n_per_market=10)
    first_half = prices.groupby("market_id").head(6)
    overlap = prices.groupby("market_id").tail(7)  # 3 rows per market repeat published ones
    first = {"markets": markets, "price_snapshots": first_half}
    assert _ingest(settings, write_batch(tmp_path / "1", first)).accepted
    repeat = {"markets": markets, "price_snapshots": overlap}
    second = _ingest(settings, write_batch(tmp_path / "2", repeat, "csv"))
    assert second.accepted and not second.no_op, second.to_text()
    assert second.duplicates_skipped == {"markets": 3, "price_snapshots": 9}
    assert second.rows_published["markets"] == 0 and second.rows_published["price_features"] == 12
    stored = read_published(settings.offline_store_dir, "price_features")
    assert len(stored) == 30 and not stored.duplicated(["market_id", "ts"]).any()


@pytest.mark.parametrize("table,column,value", [("price_snapshots", "price", 0.999),
                                                ("polls", "n_polls", 99),
                                                ("markets", "question", "Reworded?")])
def test_repeated_key_with_different_values_is_refused(settings: Settings, tmp_path: Path,
                                                       table: str, column: str, value: object) -> None:
    t = valid_tables()
    assert _ingest(settings, write_batch(tmp_path / "1", t)).accepted
    before = _store_files(settings)
    changed = {table: t[table].copy(), "markets": t["markets"].copy()} if table != "markets" else {
        "markets": t["markets"].copy()}
    changed[table].loc[1, column] = value
    result = _ingest(settings, write_batch(tmp_path / "2", changed))
    assert not result.accepted
    [v] = result.violations
    assert (v.table, v.rule, v.n_rows) == (table, "conflicts_with_published", 1)
    assert v.examples[0][f"published_{column}"] == t[table].loc[1, column]
    assert _store_files(settings) == before


def test_observations_of_a_published_market_without_markets(settings: Settings, tmp_path: Path) -> None:
    markets = markets_frame(2)
    prices = prices_frame(markets, n_per_market=6)
    assert _ingest(settings, write_batch(tmp_path / "1", {"markets": markets})).accepted
    observations = {"price_snapshots": prices, "polls": polls_frame(markets)}
    second = _ingest(settings, write_batch(tmp_path / "2", observations))
    assert second.accepted, second.to_text()
    assert second.rows_published["markets"] == 0 and second.rows_published["price_features"] == 12
    stray = prices.assign(market_id="unseen")
    third = _ingest(settings, write_batch(tmp_path / "3", {"price_snapshots": stray}))
    assert [v.rule for v in third.violations] == ["unknown_market"]


def test_market_history_over_several_batches(settings: Settings, tmp_path: Path) -> None:
    """Resolved version first, then the older creation version: it fills in history, newest stays current."""
    resolved = markets_frame(1, resolved=True, days=30)
    created = markets_frame(1, resolved=False)
    created["resolution_date"] = T0 + pd.Timedelta(days=20)  # at creation it was scheduled earlier
    root = settings.offline_store_dir

    first = _ingest(settings, write_batch(tmp_path / "1", {"markets": resolved}))
    info1 = read_published(root, "market_info")
    assert list(info1["event_ts"]) == [T0, T0 + pd.Timedelta(days=30)]
    assert (info1["resolution_date"] == T0 + pd.Timedelta(days=30)).all()

    later = NOW + pd.Timedelta(days=1)
    second = _ingest(settings, write_batch(tmp_path / "2", {"markets": created}), now=later)
    assert second.accepted and second.rows_published["markets"] == 1
    versions = read_published(root, "markets").sort_values("updated_at")
    assert list(versions["updated_at"]) == [T0, T0 + pd.Timedelta(days=30)]  # older version queryable
    assert versions["outcome"].isna().tolist() == [True, False]
    info = read_published(root, "market_info").sort_values(["event_ts", "ingested_at"])
    # A new creation row at created_at with the earliest version's resolution_date and a newer ingested_at.
    at_creation = info[info["event_ts"] == T0]
    newest = at_creation.sort_values("ingested_at").iloc[-1]
    assert newest["ingested_at"] == later and newest["resolution_date"] == T0 + pd.Timedelta(days=20)
    # The current state is still the resolved version, and observations use its lifetime.
    late_snapshot = pd.DataFrame({"market_id": ["m000"], "ts": pd.Series([T0 + pd.Timedelta(days=25)],
                                                                          dtype="datetime64[us, UTC]"),
                                  "price": [0.7], "volume_24h": [10.0]})
    assert _ingest(settings, write_batch(tmp_path / "3", {"price_snapshots": late_snapshot})).accepted
    after_resolution = late_snapshot.assign(ts=late_snapshot["ts"] + pd.Timedelta(days=10))
    refused = _ingest(settings, write_batch(tmp_path / "4", {"price_snapshots": after_resolution}))
    assert [v.rule for v in refused.violations] == ["outside_lifetime"]
    assert first.batch_id != second.batch_id


def test_new_version_may_not_strand_published_observations(settings: Settings, tmp_path: Path) -> None:
    opened = markets_frame(1, resolved=False)
    prices = prices_frame(opened, n_per_market=20, step=pd.Timedelta(days=1))
    first = {"markets": opened, "price_snapshots": prices}
    assert _ingest(settings, write_batch(tmp_path / "1", first)).accepted
    early = markets_frame(1, resolved=True, days=5)  # resolved before 14 published snapshots
    result = _ingest(settings, write_batch(tmp_path / "2", {"markets": early}))
    assert not result.accepted
    [v] = result.violations
    assert (v.file, v.rule, v.column, v.n_rows) == ("markets.parquet", "outside_lifetime", "resolved_at", 15)


def test_unknown_event_type_becomes_other_with_warning(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    t["markets"].loc[1, "event_type"] = "celebrity"
    result = _ingest(settings, write_batch(tmp_path / "b", t, "csv"))
    assert result.accepted
    assert any("celebrity" in w and "other" in w for w in result.warnings)
    stored = read_published(settings.offline_store_dir, "markets").set_index("market_id")
    assert stored.loc["m001", "event_type"] == "other" and stored.loc["m000", "event_type"] == "election"
    info = read_published(settings.offline_store_dir, "market_info")
    assert set(info.loc[info["market_id"] == "m001", "event_type"]) == {"other"}


def test_other_files_are_ignored_with_warning(settings: Settings, tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "b", valid_tables())
    (batch / "notes.txt").write_text("hello")
    (batch / "markets.json").write_text("{}")
    (batch / "sub").mkdir()
    result = _ingest(settings, batch)
    assert result.accepted
    assert sum("ignored" in w for w in result.warnings) == 3
    assert any("notes.txt" in w for w in result.warnings) and "warning: markets.json" in result.to_text()


def test_crash_after_rename_before_commit_is_rolled_forward(settings: Settings, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = settings.offline_store_dir
    t = valid_tables()
    real_commit = publish_mod.write_commit_record

    def crash(*_: object, **__: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(publish_mod, "write_commit_record", crash)
    with pytest.raises(OSError, match="power cut"):
        _ingest(settings, write_batch(tmp_path / "b", t))
    # Files were renamed into place but no commit record: readers see nothing.
    assert _store_files(settings) and not committed_batches(root)
    assert read_published(root, "price_features").empty
    monkeypatch.setattr(publish_mod, "write_commit_record", real_commit)

    other = markets_frame(2, start=T0 + pd.Timedelta(days=60))
    other["market_id"] = ["x1", "x2"]
    result = _ingest(settings, write_batch(tmp_path / "next", {"markets": other}))
    assert result.accepted and any("rolled forward" in w for w in result.warnings)
    assert len(committed_batches(root)) == 2
    assert len(read_published(root, "price_features")) == len(t["price_snapshots"])
    assert not any((root / STAGING_DIR).iterdir())
    assert _ingest(settings, write_batch(tmp_path / "b", t)).no_op


def test_crash_while_staging_is_discarded(settings: Settings, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = settings.offline_store_dir

    def crash(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(publish_mod, "write_manifest", crash)
    with pytest.raises(OSError, match="disk full"):
        _ingest(settings, write_batch(tmp_path / "b", valid_tables()))
    monkeypatch.undo()
    assert list((root / STAGING_DIR).iterdir())  # leftovers, never read
    assert "staged but not committed" in describe_store(settings=settings)
    result = _ingest(settings, write_batch(tmp_path / "b", valid_tables()))
    assert result.accepted and not result.no_op
    assert any("discarded" in w for w in result.warnings)
    assert len(read_published(root, "price_features")) == 30


def test_concurrent_ingests_do_not_interleave(settings: Settings, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """While one ingest holds the lock (slowed down mid-publish), the other waits and then sees its result."""
    events: list[str] = []
    real_move = publish_mod.move_into_place
    publishing = threading.Event()

    def slow_move(*args: object, **kw: object) -> None:
        events.append("move-start")
        publishing.set()
        time.sleep(0.5)
        real_move(*args, **kw)
        events.append("move-end")

    monkeypatch.setattr(publish_mod, "move_into_place", slow_move)
    t = valid_tables()
    b1 = write_batch(tmp_path / "one", t)
    b2 = write_batch(tmp_path / "two", t, "csv")
    results = {}
    th = threading.Thread(target=lambda: results.__setitem__("one", _ingest(settings, b1)))
    th.start()
    assert publishing.wait(30)
    results["two"] = _ingest(settings, b2)
    th.join()
    assert results["one"].accepted and not results["one"].no_op
    assert results["two"].accepted and results["two"].no_op  # waited, then found the batch committed
    assert events == ["move-start", "move-end"]


def test_describe_store_summarizes(settings: Settings, tmp_path: Path) -> None:
    result = _ingest(settings, write_batch(tmp_path / "b", valid_tables()))
    text = describe_store(limit=2, settings=settings)
    assert result.batch_id in text
    assert "[price_features] 30 rows in 1 file(s), 3 markets" in text
    assert "[markets] 3 rows" in text and "[poll_features] 9 rows" in text


def test_ingested_at_increases_even_if_the_clock_steps_back(settings: Settings, tmp_path: Path) -> None:
    markets = markets_frame(2)
    prices = prices_frame(markets, n_per_market=8)
    late = prices.iloc[[0]]
    first = {"markets": markets, "price_snapshots": prices.iloc[1:]}
    assert _ingest(settings, write_batch(tmp_path / "1", first)).accepted
    earlier_clock = NOW - pd.Timedelta(days=3)
    second = _ingest(settings, write_batch(tmp_path / "2", {"price_snapshots": late}), now=earlier_clock)
    assert second.accepted and second.feature_corrections > 0
    stored = read_published(settings.offline_store_dir, "price_features")
    newest = stored[stored["batch_id"] == second.batch_id]["ingested_at"].unique()
    assert list(newest) == [NOW + pd.Timedelta(microseconds=1)]


def test_newer_version_becomes_current(settings: Settings, tmp_path: Path) -> None:
    opened = markets_frame(2, resolved=False)
    prices = prices_frame(opened, n_per_market=4, step=pd.Timedelta(days=1))
    first = {"markets": opened, "price_snapshots": prices}
    assert _ingest(settings, write_batch(tmp_path / "1", first)).accepted
    resolved = markets_frame(2, resolved=True, days=10)
    second = _ingest(settings, write_batch(tmp_path / "2", {"markets": resolved}, "csv"))
    assert second.accepted and second.rows_published["markets"] == 2
    versions = read_published(settings.offline_store_dir, "markets")
    assert len(versions) == 4 and versions.groupby("market_id")["updated_at"].nunique().eq(2).all()
    # The resolved version is now the current one: a snapshot after its resolved_at is refused.
    after = prices.iloc[[0]].assign(ts=resolved.loc[0, "resolved_at"] + pd.Timedelta(hours=1))
    refused = _ingest(settings, write_batch(tmp_path / "3", {"price_snapshots": after}))
    assert [(v.rule, v.n_rows) for v in refused.violations] == [("outside_lifetime", 1)]
    # No new creation row: the earliest version was already published.
    info = read_published(settings.offline_store_dir, "market_info")
    assert info.groupby("market_id")["event_ts"].nunique().eq(2).all() and len(info) == 4


def test_a_directory_holding_the_quarantine_is_not_copied_into_it(settings: Settings, tmp_path: Path) -> None:
    """Given the data dir itself (or a parent, or "/") as the batch, a refusal must not copy it into its
    own quarantine folder: that nested ~100 levels deep until the file names grew too long."""
    published = _ingest(settings, write_batch(tmp_path / "b", valid_tables()))
    assert published.accepted
    refused = _ingest(settings, settings.data_dir)  # no table files at its top: refused
    assert not refused.accepted
    reason = json.loads((refused.quarantine_path / publish_mod.REASON_FILE).read_text())
    assert "contains the quarantine folder" in reason["files_not_copied"]
    assert [p.name for p in refused.quarantine_path.iterdir()] == [publish_mod.REASON_FILE]
    assert not list(settings.quarantine_dir.glob(".*.tmp")), "no half-copied tree left behind"

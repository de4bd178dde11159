"""Malformed files and values: refused by name (never a crash, never a silent guess), and quarantine keeps every delivery."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config.settings import Settings
from ingestion.ingest import ingest_batch
from ingestion.reading import read_table
from tests.ingestion.factories import bad_price_batch, valid_tables, write_batch

NOW = pd.Timestamp("2024-06-01", tz="UTC")


def _ingest(settings: Settings, batch: Path, **kw: object):
    return ingest_batch(batch, settings=settings, now=NOW, run_gate=False, **kw)


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _rules(result) -> list[tuple[str, str | None]]:
    return [(v.rule, v.column) for v in result.violations]


def test_naive_values_after_an_offset_keep_their_own_time(tmp_path: Path) -> None:
    """pandas 2.3 parsing both kinds in one call gives the naive value the earlier offset (+8 h here)."""
    path = _write_csv(tmp_path / "price_snapshots.csv", "market_id,ts,price,volume_24h",
                      ["m1,2024-01-01T00:00:00-08:00,0.5,1", "m1,2024-01-03T00:00:00,0.5,1",
                       "m1,2024-01-04T00:00:00Z,0.5,1"])
    t, violations = read_table(path, "price_snapshots", assume_utc=True, now=NOW)
    assert violations == []
    assert list(t.typed["ts"]) == [pd.Timestamp("2024-01-01T08:00Z"), pd.Timestamp("2024-01-03T00:00Z"),
                                   pd.Timestamp("2024-01-04T00:00Z")]


def test_words_pandas_reads_as_times_are_refused(tmp_path: Path) -> None:
    """'now' and 'today' would become the wall-clock time: a different value on every ingest."""
    path = _write_csv(tmp_path / "price_snapshots.csv", "market_id,ts,price,volume_24h",
                      ["m1,now,0.5,1", "m1,today,0.5,1", "m1,2024-01-04T00:00:00Z,0.5,1"])
    _, violations = read_table(path, "price_snapshots", assume_utc=True, now=NOW)
    [v] = violations
    assert (v.rule, v.column, v.n_rows) == ("not_convertible", "ts", 2)
    assert [e["ts"] for e in v.examples] == ["now", "today"]


def _scheduled(year: int) -> dict[str, pd.DataFrame]:
    t = valid_tables()
    t["markets"]["resolution_date"] = t["markets"]["resolution_date"].astype("datetime64[us, UTC]")
    t["markets"].loc[0, "resolution_date"] = pd.Timestamp(f"{year}-01-01T00:00:00", tz="UTC").as_unit("us")
    return t


def test_scheduled_date_beyond_the_storable_range_is_refused_alike_from_csv_and_parquet(
        settings: Settings, tmp_path: Path) -> None:
    """2300 is past pandas' nanosecond range (2262): the gate could not hold it. Both formats refuse it by name."""
    for fmt in ("parquet", "csv"):
        result = _ingest(settings, write_batch(tmp_path / fmt, _scheduled(2300), fmt))
        assert _rules(result) == [("timestamp_in_future", "resolution_date")], result.to_text()
        assert "2262-04-11" in result.violations[0].detail


@pytest.mark.slow
def test_far_scheduled_date_passes_the_gate_from_csv_and_parquet(settings: Settings, tmp_path: Path) -> None:
    """2200 is far but storable: accepted through the real GX gate, the same batch from either format."""
    parquet = ingest_batch(write_batch(tmp_path / "p", _scheduled(2200), "parquet"), settings=settings, now=NOW)
    assert parquet.accepted, parquet.to_text()
    csv = ingest_batch(write_batch(tmp_path / "c", _scheduled(2200), "csv"), settings=settings, now=NOW)
    assert csv.accepted and csv.no_op and csv.batch_id == parquet.batch_id, csv.to_text()


def test_duplicate_csv_column_is_refused(settings: Settings, tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "b", valid_tables(), "csv")
    _write_csv(batch / "price_snapshots.csv", "market_id,ts,price,volume_24h,price",
               ["m0,2024-01-02T00:00:00Z,0.5,1,5.0"])
    result = _ingest(settings, batch)
    assert not result.accepted
    assert _rules(result) == [("duplicate_column", "price")]
    assert "price_snapshots.csv" in result.to_text() and "2 times" in result.to_text()


@pytest.mark.parametrize("rows", [
    ["m0,2024-01-02T00:00:00Z,0.5,1,", "m0,2024-01-03T00:00:00Z,0.5,1,"],  # trailing delimiter: columns shift
    ["m0,2024-01-02T00:00:00Z,0.5,1", "m0,2024-01-03T00:00:00Z,0.5"],       # a short (truncated) row
    ["m0,2024-01-02T00:00:00Z,0.5,1,x"],                                     # an extra value
], ids=["trailing-comma", "short-row", "extra-value"])
def test_rows_whose_field_count_differs_from_the_header_are_refused(settings: Settings, tmp_path: Path,
                                                                     rows: list[str]) -> None:
    batch = write_batch(tmp_path / "b", valid_tables(), "csv")
    _write_csv(batch / "price_snapshots.csv", "market_id,ts,price,volume_24h", rows)
    result = _ingest(settings, batch)
    assert not result.accepted
    assert _rules(result) == [("malformed_row", None)]
    assert "4 fields" in result.violations[0].detail and "price_snapshots.csv" in result.to_text()
    assert (result.quarantine_path / "price_snapshots.csv").is_file()


def test_uint64_beyond_int64_is_refused_not_a_crash(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    batch = write_batch(tmp_path / "b", t, "parquet")
    polls = pa.Table.from_pandas(t["polls"], preserve_index=False)
    n_polls = pa.array([2**63] + [1] * (len(t["polls"]) - 1), pa.uint64())
    pq.write_table(polls.set_column(polls.schema.get_field_index("n_polls"), "n_polls", n_polls),
                   batch / "polls.parquet")
    result = _ingest(settings, batch)
    assert not result.accepted
    [v] = result.violations
    assert (v.file, v.rule, v.column, v.n_rows) == ("polls.parquet", "not_convertible", "n_polls", 1)
    assert "64-bit" in v.detail
    assert result.quarantine_path is not None


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_large_integers_are_kept_exactly(tmp_path: Path, fmt: str) -> None:
    """2**53 + 1 does not survive a float64; it must arrive as itself (with a null beside it in Parquet)."""
    big = 2**53 + 1
    path = tmp_path / f"polls.{fmt}"
    if fmt == "csv":
        _write_csv(path, "market_id,ts,poll_average,poll_trend,n_polls",
                   [f"m1,2024-01-02T00:00:00Z,0.5,0,{big}", "m1,2024-01-03T00:00:00Z,0.5,0,99999999999999999999"])
    else:
        pq.write_table(pa.table({"market_id": ["m1", "m1"],
                                 "ts": pa.array([pd.Timestamp("2024-01-02", tz="UTC")] * 2, pa.timestamp("us", "UTC")),
                                 "poll_average": [0.5, 0.5], "poll_trend": [0.0, 0.0],
                                 "n_polls": pa.array([big, None], pa.int64())}), path)
    t, violations = read_table(path, "polls", assume_utc=False, now=NOW)
    assert t.typed["n_polls"].iloc[0] == big
    if fmt == "csv":
        [v] = violations
        assert (v.rule, v.column, v.n_rows) == ("not_convertible", "n_polls", 1) and "64-bit" in v.detail
    else:
        assert [(v.rule, v.column) for v in violations] == [("null_value", "n_polls")]


def test_different_deliveries_refused_under_one_label_are_all_kept(settings: Settings, tmp_path: Path) -> None:
    """'abc' and 'xyz' both fail conversion, so the typed batches (and their ids) are the same."""
    batch = tmp_path / "incoming" / "batch-001"
    first = _ingest(settings, bad_price_batch(batch, "abc"))
    again = _ingest(settings, batch)  # the same files refused again: one copy, newest reason
    assert again.quarantine_path == first.quarantine_path
    second = _ingest(settings, bad_price_batch(batch, "xyz"))
    assert first.batch_id == second.batch_id and not first.accepted and not second.accepted
    assert second.quarantine_path != first.quarantine_path
    kept = {p.name: (p / "price_snapshots.csv").read_text() for p in settings.quarantine_dir.iterdir()}
    assert len(kept) == 2
    assert sorted("abc" in text for text in kept.values()) == [False, True]
    assert sorted("xyz" in text for text in kept.values()) == [False, True]
    for path in settings.quarantine_dir.iterdir():
        assert json.loads((path / "_reason.json").read_text())["violations"]


def test_dangling_link_in_a_refused_batch_does_not_stop_the_quarantine(settings: Settings, tmp_path: Path) -> None:
    batch = bad_price_batch(tmp_path / "b", "abc")
    (batch / "notes.txt").symlink_to(tmp_path / "missing.txt")
    result = _ingest(settings, batch)
    assert not result.accepted and result.quarantine_path is not None
    assert (result.quarantine_path / "price_snapshots.csv").is_file()
    assert (result.quarantine_path / "_reason.json").is_file()
    assert [p.name for p in settings.quarantine_dir.iterdir() if p.name.startswith(".")] == []


def test_batch_given_as_the_current_directory_is_named_after_it(settings: Settings, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    batch = bad_price_batch(tmp_path / "batch-007", "abc")
    monkeypatch.chdir(batch)
    result = _ingest(settings, Path("."))
    assert result.quarantine_path is not None and result.quarantine_path.name.startswith("batch-007-")


def test_integer_text_is_not_rounded_on_its_way(tmp_path: Path) -> None:
    """Short integer text takes the float path, which is exact below 2**53."""
    path = _write_csv(tmp_path / "polls.csv", "market_id,ts,poll_average,poll_trend,n_polls",
                      ["m1,2024-01-02T00:00:00Z,0.5,0,12", "m1,2024-01-03T00:00:00Z,0.5,0,1.0",
                       "m1,2024-01-04T00:00:00Z,0.5,0,1.5"])
    t, violations = read_table(path, "polls", assume_utc=False, now=NOW)
    assert list(t.typed["n_polls"].iloc[:2]) == [12, 1]
    [v] = violations
    assert (v.rule, v.column, v.n_rows) == ("not_convertible", "n_polls", 1) and "fractional" in v.detail
    assert bool(t.typed["n_polls"].isna().iloc[2])


def test_lowercase_z_zone_is_utc(tmp_path: Path) -> None:
    """RFC 3339 allows a lowercase ``z``; it means UTC exactly as ``Z`` does (also past pandas' range)."""
    header = "market_id,question,event_type,platform,created_at,resolution_date,resolved_at,outcome,updated_at"
    path = _write_csv(tmp_path / "markets.csv", header,
                      ["m1,q,sports,kalshi,2024-02-09T11:33:54z,2200-01-01T00:00:00z,,,2024-02-09 11:33:54.5z"])
    t, violations = read_table(path, "markets", assume_utc=False, now=NOW)
    assert violations == []
    row = t.typed.iloc[0]
    assert row["created_at"] == pd.Timestamp("2024-02-09T11:33:54Z")
    assert row["resolution_date"] == pd.Timestamp("2200-01-01T00:00:00Z")
    assert row["updated_at"] == pd.Timestamp("2024-02-09T11:33:54.5Z")
    # After 2262 (parsed by Python): read, then refused by the scheduled-date limit, not as unreadable.
    far = _write_csv(tmp_path / "far" / "markets.csv", header,
                     ["m1,q,sports,kalshi,2024-02-09T11:33:54Z,3000-01-01T00:00:00z,,,2024-02-09T11:33:54Z"])
    _, violations = read_table(far, "markets", assume_utc=False, now=NOW)
    assert [(v.rule, v.column) for v in violations] == [("timestamp_in_future", "resolution_date")]

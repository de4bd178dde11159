"""Every refusal rule of the data contract, each with its own bad batch, in CSV and Parquet."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from config.settings import Settings
from ingestion.ingest import ingest_batch
from ingestion.store import committed_batches
from tests.ingestion.factories import FORMATS, T0, valid_tables, write_batch

NOW = pd.Timestamp("2024-06-01", tz="UTC")
Tables = dict[str, pd.DataFrame]


def _set(df: pd.DataFrame, column: str, row: int, value: object, as_object: bool = False) -> pd.DataFrame:
    df = df.copy()
    if as_object:
        df[column] = df[column].astype(object)
    df.loc[row, column] = value
    return df


def _strings(df: pd.DataFrame, column: str) -> pd.DataFrame:
    df = df.copy()
    df[column] = df[column].map(repr if df[column].dtype.kind == "f" else str)
    return df


def _open_market(t: Tables, i: int = 0) -> Tables:
    m = t["markets"].copy()
    m["resolved_at"] = m["resolved_at"].astype("datetime64[us, UTC]")
    m.loc[i, "resolved_at"] = pd.NaT
    m.loc[i, "outcome"] = pd.NA
    m.loc[i, "updated_at"] = m.loc[i, "created_at"]
    t["markets"] = m
    return t


@dataclass
class Case:
    name: str
    breaker: Callable[[Tables], Tables]
    table: str
    rule: str
    column: str | None
    n_rows: int


def _price(f: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Tables], Tables]:
    return lambda t: {**t, "price_snapshots": f(t["price_snapshots"])}


def _polls(f: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Tables], Tables]:
    return lambda t: {**t, "polls": f(t["polls"])}


def _markets(f: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Tables], Tables]:
    return lambda t: {**t, "markets": f(t["markets"])}


def _future(t: Tables) -> Tables:
    t = _open_market(t)
    t["price_snapshots"] = _set(t["price_snapshots"], "ts", 0, NOW + pd.Timedelta(days=2))
    return t


def _naive(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["ts"] = df["ts"].dt.tz_localize(None)
    return df


CASES = [
    Case("missing_column", _price(lambda d: d.drop(columns=["price"])), "price_snapshots", "missing_column",
         "price", 30),
    Case("abc_in_price", _price(lambda d: _set(_strings(d, "price"), "price", 4, "abc")),
         "price_snapshots", "not_convertible", "price", 1),
    Case("fraction_in_n_polls", _polls(lambda d: _set(d.astype({"n_polls": "float64"}), "n_polls", 2, 1.5)),
         "polls", "not_convertible", "n_polls", 1),
    Case("fraction_in_outcome", _markets(lambda d: _set(d.astype({"outcome": "float64"}), "outcome", 1, 0.5)),
         "markets", "not_convertible", "outcome", 1),
    Case("nan_text_in_price", _price(lambda d: _set(_strings(d, "price"), "price", 2, "NaN")),
         "price_snapshots", "not_convertible", "price", 1),
    Case("infinite_volume", _price(lambda d: _set(d, "volume_24h", 3, float("inf"))),
         "price_snapshots", "out_of_range", "volume_24h", 1),
    Case("unparseable_timestamp", _price(lambda d: _set(_strings(d, "ts"), "ts", 3, "yesterday")),
         "price_snapshots", "not_convertible", "ts", 1),
    Case("sub_microsecond_timestamp",
         _price(lambda d: _set(_strings(d, "ts"), "ts", 1, "2024-01-01T02:00:00.0000001Z")),
         "price_snapshots", "not_convertible", "ts", 1),
    Case("price_above_1", _price(lambda d: _set(_set(d, "price", 0, 1.2), "price", 5, 1.0001)),
         "price_snapshots", "out_of_range", "price", 2),
    Case("negative_volume", _price(lambda d: _set(d, "volume_24h", 7, -1.0)), "price_snapshots",
         "out_of_range", "volume_24h", 1),
    Case("poll_trend_out_of_range", _polls(lambda d: _set(d, "poll_trend", 0, -1.5)), "polls", "out_of_range",
         "poll_trend", 1),
    Case("negative_n_polls", _polls(lambda d: _set(d, "n_polls", 1, -3)), "polls", "out_of_range",
         "n_polls", 1),
    Case("outcome_2", _markets(lambda d: _set(d, "outcome", 0, 2)), "markets", "out_of_range", "outcome", 1),
    Case("duplicate_key",
         _price(lambda d: pd.concat([d, _set(d.iloc[[3]], "price", 3, 0.5)], ignore_index=True)),
         "price_snapshots", "duplicate_key", "market_id,ts", 2),
    Case("duplicate_version", _markets(lambda d: pd.concat([d, d.iloc[[0]]], ignore_index=True)),
         "markets", "duplicate_key", "market_id,updated_at", 2),
    Case("unknown_market", _price(lambda d: _set(d, "market_id", 0, "nope")), "price_snapshots",
         "unknown_market", "market_id", 1),
    Case("snapshot_before_created", _price(lambda d: _set(d, "ts", 0, T0 - pd.Timedelta(hours=1))),
         "price_snapshots", "outside_lifetime", "ts", 1),
    Case("poll_after_resolved", _polls(lambda d: _set(d, "ts", 0, T0 + pd.Timedelta(days=31))),
         "polls", "outside_lifetime", "ts", 1),
    Case("outcome_without_resolution",
         lambda t: {**t, "markets": _set(_open_market(t)["markets"], "outcome", 0, 1)},
         "markets", "outcome_inconsistent", "outcome", 1),
    Case("resolution_without_outcome", _markets(lambda d: _set(d, "outcome", 2, pd.NA)),
         "markets", "outcome_inconsistent", "outcome", 1),
    Case("resolution_date_before_created",
         _markets(lambda d: _set(d, "resolution_date", 1, T0 - pd.Timedelta(days=1))),
         "markets", "before_created_at", "resolution_date", 1),
    Case("naive_timestamp", _price(_naive), "price_snapshots", "naive_timestamp", "ts", 30),
    Case("future_timestamp", _future, "price_snapshots", "timestamp_in_future", "ts", 1),
    Case("before_2000", _price(lambda d: _set(d, "ts", 0, pd.Timestamp("1999-12-31T23:00:00Z"))),
         "price_snapshots", "timestamp_too_early", "ts", 1),
    Case("empty_market_id", _markets(lambda d: _set(d, "market_id", 0, "")), "markets", "empty_value",
         "market_id", 1),
    Case("long_market_id", _markets(lambda d: _set(d, "market_id", 0, "x" * 129)), "markets", "too_long",
         "market_id", 1),
    Case("uppercase_platform", _markets(lambda d: _set(d, "platform", 0, "Kalshi")), "markets",
         "not_lowercase", "platform", 1),
    Case("uppercase_event_type", _markets(lambda d: _set(d, "event_type", 2, "ELECTION")), "markets",
         "not_lowercase", "event_type", 1),
    Case("empty_platform", _markets(lambda d: _set(d, "platform", 1, "")), "markets", "empty_value",
         "platform", 1),
    Case("null_price", _price(lambda d: _set(d, "price", 2, None)), "price_snapshots", "null_value",
         "price", 1),
]


def _ingest(settings: Settings, batch: Path, **kw: object):
    # Contract logic only; the Great Expectations gate (~3 s a run) is covered in test_gate_wiring.py.
    return ingest_batch(batch, settings=settings, now=NOW, run_gate=False, **kw)


def _nothing_published(settings: Settings) -> bool:
    root = settings.offline_store_dir
    return not committed_batches(root) and not list(root.rglob("*.parquet"))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_rule_refuses_the_batch(settings: Settings, tmp_path: Path, fmt: str, case: Case) -> None:
    batch = write_batch(tmp_path / "batch-x", case.breaker(valid_tables()), fmt)
    result = _ingest(settings, batch)

    assert not result.accepted
    file = f"{case.table}.{fmt}"
    wanted = (file, case.table, case.rule, case.column)
    match = [v for v in result.violations if (v.file, v.table, v.rule, v.column) == wanted]
    assert match, f"expected {wanted}, got {[v.to_dict() for v in result.violations]}"
    assert match[0].n_rows == case.n_rows
    # The message names file, rule, column and row count.
    text = result.to_text()
    assert file in text and repr(case.rule) in text and repr(case.column) in text
    assert f"{case.n_rows} row(s)" in text
    # Quarantined whole, with a machine-readable reason; nothing published.
    assert result.quarantine_path is not None and result.quarantine_path.parent == settings.quarantine_dir
    assert (result.quarantine_path / file).is_file()
    reason = json.loads((result.quarantine_path / "_reason.json").read_text())
    entry = next(v for v in reason["violations"] if v["rule"] == case.rule and v["column"] == case.column)
    assert entry["file"] == file and entry["table"] == case.table and entry["n_rows"] == case.n_rows
    if case.rule != "missing_column":
        assert 1 <= len(entry["examples"]) <= 3 and "_row" in entry["examples"][0]
    assert _nothing_published(settings)


def test_reason_examples_show_the_offending_rows(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    t["price_snapshots"] = _set(t["price_snapshots"], "price", 6, 7.5)
    result = _ingest(settings, write_batch(tmp_path / "b", t, "csv"))
    reason = json.loads((result.quarantine_path / "_reason.json").read_text())
    [v] = reason["violations"]
    assert v["examples"][0]["_row"] == 6
    assert float(v["examples"][0]["price"]) == 7.5
    assert v["examples"][0]["market_id"] == t["price_snapshots"].loc[6, "market_id"]
    assert reason["batch_id"] and result.quarantine_path.name == f"b-{reason['batch_id']}"


def test_naive_timestamps_accepted_with_assume_utc(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    naive = {name: df.copy() for name, df in t.items()}
    for df in naive.values():
        for c in df.columns:
            if str(df[c].dtype).startswith("datetime64"):
                df[c] = df[c].dt.tz_localize(None)
    for fmt in FORMATS:
        result = _ingest(settings, write_batch(tmp_path / f"naive-{fmt}", naive, fmt), assume_utc=True)
        assert result.accepted, result.to_text()
    # Same instants as the explicit-UTC batch: same content, same batch id, so no change.
    aware = _ingest(settings, write_batch(tmp_path / "aware", t, "parquet"))
    assert aware.accepted and aware.no_op


def test_csv_offsets_are_converted_to_utc(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    reference = _ingest(settings, write_batch(tmp_path / "utc", t, "csv"))
    assert reference.accepted
    shifted = {name: df.copy() for name, df in t.items()}
    for df in shifted.values():
        for c in df.columns:
            if str(df[c].dtype).startswith("datetime64"):
                df[c] = df[c].dt.tz_convert("America/New_York")
    again = _ingest(settings, write_batch(tmp_path / "ny", shifted, "csv"))
    assert again.accepted and again.no_op and again.batch_id == reference.batch_id


def test_resolution_date_may_be_in_the_future(settings: Settings, tmp_path: Path) -> None:
    """The scheduled resolution_date of an open market is legitimately in the future."""
    t = _open_market(valid_tables())
    t["markets"] = _set(t["markets"], "resolution_date", 0, NOW + pd.Timedelta(days=90))
    assert _ingest(settings, write_batch(tmp_path / "b", t)).accepted


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_file(settings: Settings, tmp_path: Path, fmt: str) -> None:
    t = valid_tables()
    t["polls"] = t["polls"].iloc[0:0]
    result = _ingest(settings, write_batch(tmp_path / "b", t, fmt))
    assert not result.accepted
    [v] = result.violations
    assert (v.file, v.rule) == (f"polls.{fmt}", "empty_file")
    assert _nothing_published(settings)


def test_zero_byte_csv_is_an_empty_file(settings: Settings, tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "b", valid_tables(), "csv")
    (batch / "polls.csv").write_bytes(b"")
    result = _ingest(settings, batch)
    assert [(v.file, v.rule) for v in result.violations] == [("polls.csv", "empty_file")]


@pytest.mark.parametrize("fmt,content", [("parquet", b"PAR1 this is not parquet"),
                                         ("csv", b"market_id,ts,price,volume_24h\n\xff\xfe\xfa,1,2,3\n")])
def test_unreadable_file(settings: Settings, tmp_path: Path, fmt: str, content: bytes) -> None:
    batch = write_batch(tmp_path / "b", valid_tables(), fmt)
    (batch / f"price_snapshots.{fmt}").write_bytes(content)
    result = _ingest(settings, batch)
    assert not result.accepted
    [v] = result.violations
    assert (v.file, v.rule) == (f"price_snapshots.{fmt}", "unreadable_file")
    assert result.quarantine_path is not None and result.batch_id is None
    assert _nothing_published(settings)


def test_unreadable_markets_file_is_the_one_reason(settings: Settings, tmp_path: Path) -> None:
    """Observations are not additionally reported as 'unknown market' when markets cannot be read."""
    batch = write_batch(tmp_path / "b", valid_tables(), "csv")
    (batch / "markets.csv").write_bytes(b"\x00\xff\xfe garbage")
    result = _ingest(settings, batch)
    assert [(v.file, v.rule) for v in result.violations] == [("markets.csv", "unreadable_file")]


def test_csv_with_byte_order_mark_is_read(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    batch = write_batch(tmp_path / "b", t, "csv")
    for name in t:
        path = batch / f"{name}.csv"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert _ingest(settings, batch).accepted


def test_full_precision_floats_type_the_same_from_csv_and_parquet(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    rng = np.random.default_rng(5)
    t["price_snapshots"]["price"] = rng.random(len(t["price_snapshots"]))
    t["price_snapshots"]["volume_24h"] = rng.random(len(t["price_snapshots"])) * 1e7
    first = _ingest(settings, write_batch(tmp_path / "p", t, "parquet"))
    again = _ingest(settings, write_batch(tmp_path / "c", t, "csv"))
    assert first.accepted and again.no_op and again.batch_id == first.batch_id


def test_csv_and_parquet_of_the_same_table_is_refused(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    batch = write_batch(tmp_path / "b", t, "parquet")
    write_batch(batch, {"polls": t["polls"]}, "csv")
    result = _ingest(settings, batch)
    assert not result.accepted
    assert [v.rule for v in result.violations] == ["ambiguous_table"]
    assert "polls.csv" in result.violations[0].file and "polls.parquet" in result.violations[0].file


def test_directory_without_tables_is_refused(settings: Settings, tmp_path: Path) -> None:
    batch = tmp_path / "b"
    batch.mkdir()
    (batch / "README.txt").write_text("hi")
    result = _ingest(settings, batch)
    assert not result.accepted and [v.rule for v in result.violations] == ["no_tables"]


def test_one_bad_table_publishes_nothing(settings: Settings, tmp_path: Path) -> None:
    """Atomicity: markets and prices are fine, one poll row is bad -> no table is published."""
    t = valid_tables()
    t["polls"] = _set(t["polls"], "poll_average", 4, 1.5)
    result = _ingest(settings, write_batch(tmp_path / "b", t))
    assert not result.accepted
    assert [(v.table, v.rule) for v in result.violations] == [("polls", "out_of_range")]
    assert _nothing_published(settings)
    # The same data without the bad row is accepted afterwards.
    t["polls"] = t["polls"].drop(index=4)
    assert _ingest(settings, write_batch(tmp_path / "b2", t)).accepted


def test_all_violations_are_reported_together(settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    t["price_snapshots"] = _set(t["price_snapshots"], "price", 0, -0.1)
    t["polls"] = _set(t["polls"], "market_id", 1, "ghost")
    t["markets"] = _set(t["markets"], "platform", 0, "PolyMarket")
    result = _ingest(settings, write_batch(tmp_path / "b", t))
    assert {(v.table, v.rule) for v in result.violations} == {
        ("price_snapshots", "out_of_range"), ("polls", "unknown_market"), ("markets", "not_lowercase")}

"""Hostile deliveries: table entries that are not files, NUL bytes, extreme numbers, unusual timestamps.

Each batch goes through the real ``ingest_batch``: refused and quarantined whole with a reason
naming the file (and column, row where there is one), or accepted and published exactly.
"""

from __future__ import annotations

import os
import shutil
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config.settings import Settings
from ingestion.ingest import ingest_batch
from ingestion.reading import discover, read_table
from ingestion.store import committed_batches, latest_rows, read_published
from tests.ingestion.factories import markets_frame, prices_frame, valid_tables, write_batch

NOW = pd.Timestamp("2024-06-01", tz="UTC")
Tables = dict[str, pd.DataFrame]


def _ingest(settings: Settings, batch: Path, **kw: object):
    # Contract and reading rules only; the Great Expectations gate is covered in test_gate_wiring.py.
    return ingest_batch(batch, settings=settings, now=NOW, run_gate=False, **kw)


def _refused_whole(settings: Settings, result, batch: Path) -> None:
    """Refused, nothing published, and the delivery's table files kept byte for byte in quarantine."""
    assert not result.accepted, result.to_text()
    assert committed_batches(settings.offline_store_dir) == {}
    q = result.quarantine_path
    assert q is not None and (q / "_reason.json").is_file()
    for path in batch.iterdir():
        if path.is_file() and not path.is_symlink():
            assert (q / path.name).read_bytes() == path.read_bytes()


def _published_prices(settings: Settings) -> pd.DataFrame:
    pf = latest_rows(read_published(settings.offline_store_dir, "price_features"), ["market_id", "ts"])
    return pf.sort_values(["market_id", "ts"]).reset_index(drop=True)


# --- 1. table entries that are not regular files ---------------------------------------------------


def _polls_as_dataset_directory(batch: Path) -> None:
    """The Spark / pyarrow dataset layout: polls.parquet/part-0.parquet."""
    data = (batch / "polls.parquet").read_bytes()
    (batch / "polls.parquet").unlink()
    (batch / "polls.parquet").mkdir()
    (batch / "polls.parquet" / "part-0.parquet").write_bytes(data)


def _polls_as_dangling_link(batch: Path) -> None:
    (batch / "polls.parquet").unlink()
    (batch / "polls.parquet").symlink_to(batch.parent / "gone.parquet")


def _polls_as_link_to_dev_null(batch: Path) -> None:
    (batch / "polls.parquet").unlink()
    (batch / "polls.csv").symlink_to(os.devnull)


def _polls_as_link_loop(batch: Path) -> None:
    (batch / "polls.parquet").unlink()
    (batch / "polls.csv").symlink_to(batch / "polls.csv")


@pytest.mark.parametrize("make,entry,why", [
    (_polls_as_dataset_directory, "polls.parquet", "a directory"),
    (_polls_as_dangling_link, "polls.parquet", "missing"),
    (_polls_as_link_to_dev_null, "polls.csv", "a character device"),
    (_polls_as_link_loop, "polls.csv", "loop"),
])
def test_a_table_entry_that_is_not_a_regular_file_refuses_the_batch(
        settings: Settings, tmp_path: Path, make, entry: str, why: str) -> None:
    """It used to be skipped with a warning and the batch published without that table."""
    batch = write_batch(tmp_path / "b", valid_tables(), "parquet")
    make(batch)
    result = _ingest(settings, batch)
    _refused_whole(settings, result, batch)
    [v] = result.violations
    assert (v.file, v.table, v.rule) == (entry, "polls", "unreadable_file"), result.to_text()
    assert "not a regular file" in v.detail and why in v.detail, v.detail


def test_markets_given_as_a_directory_is_the_one_reason(settings: Settings, tmp_path: Path) -> None:
    """The observations are not also reported as belonging to unknown markets."""
    batch = write_batch(tmp_path / "b", valid_tables(), "parquet")
    data = (batch / "markets.parquet").read_bytes()
    (batch / "markets.parquet").unlink()
    (batch / "markets.parquet").mkdir()
    (batch / "markets.parquet" / "part-0.parquet").write_bytes(data)
    result = _ingest(settings, batch)
    _refused_whole(settings, result, batch)
    assert [(v.file, v.rule) for v in result.violations] == [("markets.parquet", "unreadable_file")]


@pytest.mark.timeout(60)
def test_a_table_named_fifo_is_refused_without_being_opened(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: it must be refused from its stat alone.

    Checked at the reading layer: copying a FIFO into quarantine is ``publish.quarantine``'s business.
    """
    batch = write_batch(tmp_path / "b", valid_tables(), "parquet")
    (batch / "polls.parquet").unlink()
    os.mkfifo(batch / "polls.csv")
    found = discover(batch)
    assert found.violations == [] and found.tables["polls"] == batch / "polls.csv"
    outcome: list = []
    reader = threading.Thread(
        target=lambda: outcome.append(read_table(batch / "polls.csv", "polls", False, NOW)), daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # blocked in open(): release it with a writer, then fail
        with open(batch / "polls.csv", "wb"):
            pass
        reader.join(timeout=20)
        pytest.fail("read_table opened the FIFO (it blocked waiting for a writer)")
    [(t, violations)] = outcome
    assert t is None
    [v] = violations
    assert (v.file, v.rule) == ("polls.csv", "unreadable_file") and "a named pipe" in v.detail, v.detail


def test_a_table_file_reached_through_a_symlink_is_still_read(settings: Settings, tmp_path: Path) -> None:
    tables = valid_tables()
    batch = write_batch(tmp_path / "b", tables, "parquet")
    (batch / "polls.parquet").rename(tmp_path / "polls-real.parquet")
    (batch / "polls.parquet").symlink_to(tmp_path / "polls-real.parquet")
    result = _ingest(settings, batch)
    assert result.accepted and result.input_rows["polls"] == len(tables["polls"]), result.to_text()


# --- 2. NUL bytes in CSV ---------------------------------------------------------------------------


def test_a_nul_byte_in_a_csv_cell_is_refused_with_its_line(settings: Settings, tmp_path: Path) -> None:
    """pandas' C parser ends the cell at the NUL: '7\\x00289.83' was published as volume 7.0."""
    batch = write_batch(tmp_path / "b", valid_tables(), "csv")
    path = batch / "price_snapshots.csv"
    lines = path.read_bytes().split(b"\n")
    # Data rows 4 and 9 (file lines 5 and 10): a number and a market id cut short at the NUL.
    lines[4] = lines[4].replace(b",", b",\x00", 1)
    assert lines[9].startswith(b"m0")
    lines[9] = b"m\x000" + lines[9][2:]
    path.write_bytes(b"\n".join(lines))
    result = _ingest(settings, batch)
    _refused_whole(settings, result, batch)
    [v] = result.violations
    # The first NUL is in the second field (ts) of line 5.
    assert (v.file, v.rule, v.column, v.n_rows) == ("price_snapshots.csv", "unreadable_file", "ts", 2)
    assert "NUL byte" in v.detail and "line 5" in v.detail and "2 data row(s)" in v.detail, v.detail
    assert [e["_row"] for e in v.examples] == [3, 8]


def test_a_nul_byte_in_a_quoted_multiline_question_names_its_physical_line(
        settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    t["markets"].loc[1, "question"] = "first line\nsecond \x00 line"
    batch = write_batch(tmp_path / "b", t, "csv")
    result = _ingest(settings, batch)
    _refused_whole(settings, result, batch)
    [v] = result.violations
    assert (v.file, v.rule, v.column, v.n_rows) == ("markets.csv", "unreadable_file", "question", 1)
    assert "line 4" in v.detail and [e["_row"] for e in v.examples] == [1], v.detail


# --- 3. extreme numbers ----------------------------------------------------------------------------


def _reference_volume_mean(prices: pd.DataFrame) -> list[float]:
    """mean(volume_24h) over (ts - 7 days, ts], with exact rational arithmetic (no overflow possible)."""
    out = []
    for _, g in prices.sort_values(["market_id", "ts"]).groupby("market_id", sort=True):
        ts, vol = g["ts"].tolist(), g["volume_24h"].tolist()
        for i, now in enumerate(ts):
            window = [Fraction(v) for t, v in zip(ts, vol) if now - pd.Timedelta(days=7) < t <= now]
            out.append(float(sum(window) / len(window)))
    return out


def test_huge_finite_volumes_give_finite_exact_rolling_means(settings: Settings, tmp_path: Path) -> None:
    """1.7e308 three times overflowed the running sum: inf, then NaN for every later snapshot of the market.

    m000: volumes near the largest double. m001, m002: 1.7e300 / 1e30 beside thousands: no overflow,
    but the running sum's residue made later means 0.0 / off by 1e-7. m003: ordinary, and published
    with the bits it has alone.
    """
    markets = markets_frame(4)
    # 12 h apart over 15 days: the huge values leave the 7-day window.
    prices = prices_frame(markets, n_per_market=30)
    prices.loc[[1, 2, 3], "volume_24h"] = 1.7e308
    prices.loc[5, "volume_24h"] = np.finfo("float64").max
    prices.loc[[31, 32, 33, 34], "volume_24h"] = [1.7e300, 1.7e300, 1.7e300, 1.8e300]
    prices.loc[[61, 62, 63], "volume_24h"] = [1.7e30, 2.3e30, 1.1e30]
    batch = write_batch(tmp_path / "b", {"markets": markets, "price_snapshots": prices}, "parquet")
    result = _ingest(settings, batch)
    assert result.accepted, result.to_text()
    published = _published_prices(settings)
    mean = published["volume_mean_7d"].to_numpy(dtype="float64")
    assert np.isfinite(mean).all(), published.loc[~np.isfinite(mean), ["market_id", "ts", "volume_mean_7d"]]
    np.testing.assert_allclose(mean, _reference_volume_mean(prices), rtol=1e-12)
    alone = Settings.from_env({"PM_DATA_DIR": str(tmp_path / "alone")})
    ordinary = {"markets": markets.iloc[[3]], "price_snapshots": prices[prices["market_id"] == "m003"]}
    assert _ingest(alone, write_batch(tmp_path / "b2", ordinary, "parquet")).accepted
    expected = _published_prices(alone)["volume_mean_7d"].to_numpy(dtype="float64")
    assert (mean[(published["market_id"] == "m003").to_numpy()] == expected).all()


def test_parquet_integer_volume_that_float_cannot_hold_is_refused(settings: Settings, tmp_path: Path) -> None:
    """int64 2**53 + 1 became 9007199254740992.0: a conversion with loss, which the contract refuses."""
    t = valid_tables()
    p = t["price_snapshots"]
    p["volume_24h"] = p["volume_24h"].round().astype("int64")
    p.loc[4, "volume_24h"] = 2**53 + 1
    p.loc[6, "volume_24h"] = 2**62 + 1
    p.loc[7, "volume_24h"] = 2**62  # a power of two: exactly a float
    batch = write_batch(tmp_path / "b", t, "parquet")
    result = _ingest(settings, batch)
    _refused_whole(settings, result, batch)
    lossy = [v for v in result.violations if v.rule == "not_convertible"]
    assert len(lossy) == 1, result.to_text()
    [v] = lossy
    assert (v.file, v.column, v.n_rows) == ("price_snapshots.parquet", "volume_24h", 2)
    assert [e["_row"] for e in v.examples] == [4, 6] and v.examples[0]["volume_24h"] == 2**53 + 1
    assert "without loss" in v.detail


def test_csv_integer_text_that_float_cannot_hold_is_refused_like_parquet(
        settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    p = t["price_snapshots"]
    p["volume_24h"] = p["volume_24h"].round().astype("int64")
    p.loc[4, "volume_24h"] = 2**53 + 1
    batch = write_batch(tmp_path / "b", t, "csv")
    assert "9007199254740993" in (batch / "price_snapshots.csv").read_text()
    result = _ingest(settings, batch)
    _refused_whole(settings, result, batch)
    [v] = result.violations
    assert (v.file, v.rule, v.column, v.n_rows) == ("price_snapshots.csv", "not_convertible", "volume_24h", 1)
    assert [e["_row"] for e in v.examples] == [4]


def test_integer_volumes_a_float_holds_exactly_are_published_exactly(
        settings: Settings, tmp_path: Path) -> None:
    t = valid_tables()
    p = t["price_snapshots"]
    p["volume_24h"] = p["volume_24h"].round().astype("int64")
    p.loc[4, "volume_24h"] = 2**53
    p.loc[5, "volume_24h"] = 2**62
    parquet = _ingest(settings, write_batch(tmp_path / "p", t, "parquet"))
    assert parquet.accepted, parquet.to_text()
    published = _published_prices(settings).set_index(["market_id", "ts"])["volume_24h"]
    sent = p.set_index(["market_id", "ts"])["volume_24h"]
    assert [int(published[k]) for k in sent.index] == sent.tolist()
    csv = _ingest(settings, write_batch(tmp_path / "c", t, "csv"))
    assert csv.accepted and csv.no_op and csv.batch_id == parquet.batch_id, csv.to_text()


# --- 4. timestamp forms ----------------------------------------------------------------------------


def _ts_text(t: Tables, fmt: str) -> Tables:
    """price_snapshots.ts as ISO text (Z); Parquet keeps it a string column."""
    t = {k: v.copy() for k, v in t.items()}
    t["price_snapshots"]["ts"] = t["price_snapshots"]["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return t


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_lowercase_t_separator_is_read_like_uppercase(settings: Settings, tmp_path: Path, fmt: str) -> None:
    """RFC 3339 (5.6): 'T' and 'Z' may be lowercase. Same values, so the same batch id."""
    upper = _ts_text(valid_tables(), fmt)
    lower = {k: v.copy() for k, v in upper.items()}
    lower_ts = lower["price_snapshots"]["ts"]
    lower["price_snapshots"]["ts"] = lower_ts.str.replace("T", "t").str.replace("Z", "z")
    reference = _ingest(settings, write_batch(tmp_path / "upper", upper, fmt))
    assert reference.accepted, reference.to_text()
    result = _ingest(settings, write_batch(tmp_path / "lower", lower, fmt))
    assert result.accepted and result.no_op and result.batch_id == reference.batch_id, result.to_text()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("assume_utc", [False, True])
def test_offset_with_seconds_is_refused_as_an_unsupported_offset(
        settings: Settings, tmp_path: Path, fmt: str, assume_utc: bool) -> None:
    """'+02:00:00' is no ISO 8601 offset: it was reported as a missing time zone (naive_timestamp)."""
    t = _ts_text(valid_tables(), fmt)
    p = t["price_snapshots"]
    p.loc[2, "ts"] = p.loc[2, "ts"].removesuffix("Z") + "+00:00:00"
    p.loc[5, "ts"] = p.loc[5, "ts"].removesuffix("Z") + "-01:30:00.5"
    batch = write_batch(tmp_path / "b", t, fmt)
    result = _ingest(settings, batch, assume_utc=assume_utc)
    _refused_whole(settings, result, batch)
    [v] = result.violations
    assert (v.rule, v.column, v.n_rows) == ("not_convertible", "ts", 2), result.to_text()
    assert "unsupported UTC offset form" in v.detail
    assert [e["_row"] for e in v.examples] == [2, 5]


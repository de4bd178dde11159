"""Reading windows of the prediction log: partition pruning, window bounds, schema errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from monitoring.prediction_log import (PredictionLogError, feature_columns, parse_window, partitions, read_window,
                                       write_log)
from tests.monitoring import synthetic as syn

UTC = timezone.utc


@pytest.fixture
def log_dir(tmp_path):
    rng = np.random.default_rng(0)
    feats = syn.features(1000, rng)
    df = syn.log_frame(feats, rng.random(1000), np.array([f"m{i % 50}" for i in range(1000)]),
                       syn.T0, timedelta(days=10), rng)
    write_log(df, tmp_path / "log")
    return tmp_path / "log", df


def test_window_rows_and_partitions(log_dir):
    path, df = log_dir
    start, end = syn.T0 + timedelta(days=2, hours=6), syn.T0 + timedelta(days=5)
    files = partitions(path, start, end)
    assert {f.parent.name for f in files} == {"date=2024-06-03", "date=2024-06-04", "date=2024-06-05",
                                              "date=2024-06-06"}
    got = read_window(path, start, end)
    expected = df[(df["logged_at"] >= start) & (df["logged_at"] < end)]
    assert len(got) == len(expected) > 0
    assert set(got["request_id"]) == set(expected["request_id"])
    feats = feature_columns(got)
    assert set(feats) == {*syn.numeric_names(7), *syn.CATEGORICAL}
    assert str(got["logged_at"].dt.tz) == "UTC"


def test_column_selection_keeps_required_columns(log_dir):
    path, _ = log_dir
    got = read_window(path, syn.T0, syn.T0 + timedelta(days=1), columns=["feature__price", "feature__nope"])
    assert "feature__price" in got.columns and "feature__volume_24h" not in got.columns
    assert {"logged_at", "market_id", "probability", "model_version"} <= set(got.columns)


def test_empty_window_and_missing_dir(log_dir, tmp_path):
    path, _ = log_dir
    assert len(read_window(path, syn.T0 - timedelta(days=30), syn.T0 - timedelta(days=20))) == 0
    with pytest.raises(PredictionLogError, match="not found"):
        read_window(tmp_path / "absent", syn.T0, syn.T0 + timedelta(days=1))


def _write_one(tmp_path, df: pd.DataFrame):
    d = tmp_path / "bad" / "date=2024-06-01"
    d.mkdir(parents=True)
    df.to_parquet(d / "part-x.parquet", index=False)
    return tmp_path / "bad"


@pytest.mark.parametrize("mutate, message", [
    (lambda df: df.drop(columns="model_version"), r"missing required column\(s\) \['model_version'\]"),
    (lambda df: df.assign(logged_at=df["logged_at"].dt.tz_localize(None)), "timezone-aware"),
    (lambda df: df.assign(probability="0.5"), "probability must be numeric"),
    (lambda df: df.assign(probability=np.r_[1.5, df["probability"].to_numpy()[1:]]), "outside"),
])
def test_schema_violations_name_the_file_and_column(tmp_path, mutate, message):
    rng = np.random.default_rng(1)
    df = syn.log_frame(syn.features(20, rng), rng.random(20), np.array(["m"] * 20), syn.T0, timedelta(hours=1), rng)
    path = _write_one(tmp_path, mutate(df))
    with pytest.raises(PredictionLogError, match=message):
        read_window(path, syn.T0, syn.T0 + timedelta(days=1))


@pytest.mark.parametrize("text, expected", [("7d", timedelta(days=7)), ("24h", timedelta(hours=24)),
                                            ("30m", timedelta(minutes=30)), ("2w", timedelta(weeks=2))])
def test_parse_window(text, expected):
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["7", "d7", "0d", "-1d", "7y", ""])
def test_parse_window_refuses_nonsense(text):
    with pytest.raises(ValueError, match="window"):
        parse_window(text)


def test_naive_bounds_are_refused(log_dir):
    path, _ = log_dir
    with pytest.raises(ValueError, match="timezone-aware"):
        read_window(path, datetime(2024, 6, 1), datetime(2024, 6, 2))


def test_reads_what_the_serving_writer_writes(tmp_path):
    """The real serving writer (serving/prediction_log.py) and this reader agree on the contract."""
    from serving.prediction_log import PredictionLogWriter

    writer = PredictionLogWriter(tmp_path / "log", flush_interval_s=0.05)
    writer.start()
    now = datetime.now(UTC)
    for i in range(30):
        writer.submit({"logged_at": now - timedelta(minutes=i), "request_id": f"r{i}", "market_id": f"m{i % 4}",
                       "model_version": "2", "model_role": "champion" if i % 3 else "challenger_shadow",
                       "source": "model", "probability": i / 30, "latency_ms": 1.5, "ab_group": None,
                       "feature__price": None if i == 0 else 0.5, "feature__event_type": "sports",
                       "feature__n_polls": 3})
    writer.close()
    assert writer.written == 30 and writer.write_errors == 0
    got = read_window(tmp_path / "log", now - timedelta(hours=1), now + timedelta(seconds=1),
                      columns=["feature__price", "feature__event_type", "feature__n_polls"])
    assert len(got) == 30 and got["probability"].between(0, 1).all()
    feats = feature_columns(got)
    assert feats["price"].isna().sum() == 1 and set(feats["event_type"].astype(str)) == {"sports"}
    assert (got["model_role"] == "challenger_shadow").sum() == 10

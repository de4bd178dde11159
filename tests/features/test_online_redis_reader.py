"""The direct Redis read (features.retrieve._read_stored_redis) against the Feast SDK read, on a real Redis.

Serving reads Feast's Redis layout itself (one HMGET per market for all views) because
`get_online_features` dominated /predict/batch. These tests hold it to the SDK: same values, same
statuses, same event times, for every shape of data a market can have in the online store.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

import features.retrieve as retrieve
from features.materialize import materialize
from features.store import get_store

pytestmark = pytest.mark.slow

SERVICE = "market_forecaster_v1"
JAN = datetime(2024, 1, 1, tzinfo=timezone.utc)
WANTED = {
    "price_features": ["price", "price_change_1d", "price_change_7d", "price_volatility_30d",
                       "price_volatility_7d", "volume_24h", "volume_mean_7d"],
    "poll_features": ["n_polls", "poll_average", "poll_trend"],
    "market_info": ["created_at", "event_type", "platform", "resolution_date"],
}


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_same_read(fast: retrieve.StoredRead, sdk: retrieve.StoredRead) -> None:
    assert fast.values.keys() == sdk.values.keys() and fast.status == sdk.status
    for column in sdk.values:
        mismatched = [(i, a, b) for i, (a, b) in enumerate(zip(fast.values[column], sdk.values[column]))
                      if not same(a, b)]
        assert len(fast.values[column]) == len(sdk.values[column]) and not mismatched, (column, mismatched[:3])
    assert fast.event_seconds.keys() == sdk.event_seconds.keys()
    for view, seconds in sdk.event_seconds.items():
        assert [s is None for s in fast.event_seconds[view]] == [s is None for s in seconds], view
        # The SDK passes event times through datetime (microseconds); ours come straight from the proto.
        assert all(a is None or abs(a - b) < 1e-6 for a, b in zip(fast.event_seconds[view], seconds)), view


@pytest.fixture
def redis_store(fork, redis_clean):
    store = get_store(fork("redis", redis=redis_clean))
    materialize(JAN, JAN + timedelta(days=40), store=store)
    # Shapes materialization does not produce: a row with null features (pushed), a row whose
    # event time has a fractional second, a market with only one view stored.
    store.write_to_online_store("price_features", pd.DataFrame({
        "market_id": ["nulls_m", "frac_m"],
        "ts": pd.to_datetime(["2024-02-01T10:00:00", "2024-02-01T10:00:00.123456"], utc=True, format="ISO8601"),
        "price": [None, 0.25], "volume_24h": [float("nan"), 10.0], "price_change_1d": [None, 0.01],
        "price_change_7d": [None, -0.02], "price_volatility_7d": [None, 0.1], "price_volatility_30d": [None, 0.2],
        "volume_mean_7d": [None, 5.0], "ingested_at": pd.Timestamp("2024-02-02", tz="UTC")}).astype({"price": "object", "price_change_1d": "object"}))
    store.write_to_online_store("poll_features", pd.DataFrame({
        "market_id": ["polls_only_m"], "ts": pd.to_datetime(["2024-02-01T09:00:00"], utc=True),
        "poll_average": [0.4], "poll_trend": [None], "n_polls": [7],
        "ingested_at": pd.Timestamp("2024-02-02", tz="UTC")}))
    return store


def test_redis_reader_is_used_for_redis_and_not_for_sqlite(fork, redis_clean):
    assert retrieve.redis_fast_path(get_store(fork("redis", redis=redis_clean)), WANTED)
    assert not retrieve.redis_fast_path(get_store(fork("sqlite")), WANTED)


def test_view_keyed_by_something_else_takes_the_sdk_path(fork, redis_clean, tmp_path):
    """The direct reader builds market_id entity keys only: any other key must not read as NOT_FOUND."""
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float64

    store = get_store(fork("redis", redis=redis_clean))
    pd.DataFrame({"platform": ["kalshi"], "ts": pd.to_datetime(["2024-01-01"], utc=True), "price": [0.5]}).to_parquet(
        tmp_path / "p.parquet")
    platform = Entity(name="platform_e", join_keys=["platform"])
    by_platform = FeatureView(name="platform_prices", entities=[platform], schema=[Field(name="price", dtype=Float64)],
                              source=FileSource(name="platform_prices_source", path=str(tmp_path / "p.parquet"),
                                                timestamp_field="ts"), ttl=timedelta(days=3))
    store.apply([platform, by_platform])  # into this test's private registry copy
    assert retrieve.redis_fast_path(store, ["price_features"])
    assert not retrieve.redis_fast_path(store, ["price_features", "platform_prices"])


def test_redis_reader_equals_the_sdk_read(redis_store):
    ids = ["on000000", "on000001", "on000002", "nulls_m", "frac_m", "polls_only_m", "never_seen_m",
           "on000000"]  # a duplicate: answered twice, in request order
    fast = retrieve._read_stored_redis(redis_store, WANTED, ids)
    sdk = retrieve._read_stored_sdk(redis_store, WANTED, ids)
    assert_same_read(fast, sdk)
    # The shapes really are there (so the comparison covers them).
    row = {m: i for i, m in enumerate(ids[:-1])}
    assert fast.values["price_features__price"][row["frac_m"]] == 0.25
    assert fast.values["price_features__price"][row["nulls_m"]] is None
    assert fast.event_seconds["poll_features"][row["polls_only_m"]] is not None
    assert fast.event_seconds["price_features"][row["polls_only_m"]] is None
    assert all(fast.event_seconds[v][row["never_seen_m"]] is None for v in WANTED)
    assert isinstance(fast.values["market_info__created_at"][row["on000000"]], datetime)
    assert isinstance(fast.values["poll_features__n_polls"][row["polls_only_m"]], int)
    assert fast.values["price_features__price"][0] == fast.values["price_features__price"][-1]


def test_online_columns_same_through_either_read(redis_store, monkeypatch):
    ids = ["on000000", "on000003", "nulls_m", "frac_m", "polls_only_m", "never_seen_m"]
    when = datetime(2024, 2, 1, 12, tzinfo=timezone.utc)
    fast = retrieve.online_columns(ids, SERVICE, when, store=redis_store)
    monkeypatch.setattr(retrieve, "redis_fast_path", lambda store, views=(): False)
    sdk = retrieve.online_columns(ids, SERVICE, when, store=redis_store)
    assert fast.status == sdk.status
    for column, values in sdk.values.items():
        assert all(same(a, b) for a, b in zip(fast.values[column], values)), column
    for view, ages in sdk.age_seconds.items():
        assert all((math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-6
                   for a, b in zip(fast.age_seconds[view], ages)), view
    assert fast.status["price"][ids.index("never_seen_m")] == "NOT_FOUND"
    assert fast.status["poll_average"][ids.index("polls_only_m")] == "PRESENT"
    # A stored row with null (None) and NaN values: NULL_VALUE, not the SDK's PRESENT.
    assert fast.status["poll_trend"][ids.index("polls_only_m")] == "NULL_VALUE"
    assert fast.status["price"][ids.index("nulls_m")] == "NULL_VALUE"
    assert fast.status["volume_24h"][ids.index("nulls_m")] == "NULL_VALUE"
    assert fast.status["price"][ids.index("frac_m")] == "PRESENT"


def test_redis_down_fails_both_reads_the_same_way(redis_store, redis_clean):
    import redis

    redis_clean.stop()
    try:
        for read in (retrieve._read_stored_redis, retrieve._read_stored_sdk):
            with pytest.raises(redis.exceptions.ConnectionError):
                read(redis_store, WANTED, ["on000000"])
    finally:
        redis_clean.start()
    assert retrieve._read_stored_redis(redis_store, WANTED, ["on000000"]).status["price_features__price"] == ["PRESENT"]

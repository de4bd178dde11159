"""Materialization, online reads (SQLite and real Redis), push and TTL, each on a private fork of the store."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow.dataset as ds
import pytest

from features.materialize import materialize, materialize_incremental, split_window
from features.push import push_price_ticks
from features.retrieve import historical_features, online_features
from features.store import get_store
from tests.features import scenario
from tests.features.conftest import entity_rows
from tests.features.offline_data import publish

pytestmark = pytest.mark.slow

SERVICE = "market_forecaster_v1"
JAN = datetime(2024, 1, 1, tzinfo=timezone.utc)
PRICE_COLUMNS = ["price", "volume_24h", "price_change_1d", "price_change_7d", "price_volatility_7d",
                 "price_volatility_30d", "volume_mean_7d"]


def latest_offline(offline_dir, table: str, prefix: str) -> pd.DataFrame:
    """The newest row per market straight from the Parquet files (what the online store must hold)."""
    frame = ds.dataset(offline_dir / table, format="parquet", partitioning="hive").to_table().to_pandas()
    frame = frame[frame["market_id"].str.startswith(prefix)]
    return frame.sort_values(["ts", "ingested_at"]).groupby("market_id").tail(1).set_index("market_id").sort_index()


def check_online_equals_latest_offline(settings) -> None:
    store = get_store(settings)
    materialize(JAN, JAN + timedelta(days=40), chunk=timedelta(days=10), store=store)
    expected_prices = latest_offline(settings.offline_store_dir, "price_features", "on")
    expected_polls = latest_offline(settings.offline_store_dir, "poll_features", "on")
    ids = list(expected_prices.index)
    request_ts = expected_prices["ts"].max().to_pydatetime() + timedelta(hours=1)
    result = online_features(ids, SERVICE, request_ts=request_ts, store=store)
    values = result.values.set_index("market_id").loc[ids]
    pd.testing.assert_frame_equal(values[PRICE_COLUMNS], expected_prices[PRICE_COLUMNS], check_names=False)
    polled = expected_polls.index
    assert values.loc[polled, "poll_average"].tolist() == expected_polls["poll_average"].tolist()
    status = result.status.set_index("market_id")
    assert (status.loc[ids, PRICE_COLUMNS] == "PRESENT").all().all()
    assert (status.loc[[i for i in ids if i not in polled], "poll_average"] == "NOT_FOUND").all()
    ages = result.age_seconds.set_index("market_id")
    assert ages.loc[ids, "price_features"].tolist() == [3600.0] * len(ids)
    # The same example through historical retrieval: training and serving agree, on-demand features included.
    hist = historical_features(pd.DataFrame({"market_id": ids, "ts": pd.Timestamp(request_ts)}), SERVICE, store=store)
    pd.testing.assert_frame_equal(hist.drop(columns=["ts"]).reset_index(drop=True),
                                  result.values.astype(hist.drop(columns=["ts"]).dtypes.to_dict()), check_exact=False)


def test_online_equals_latest_offline_sqlite(fork):
    check_online_equals_latest_offline(fork("sqlite"))


def test_online_equals_latest_offline_redis(fork, redis_clean):
    settings = fork("redis", redis=redis_clean)
    check_online_equals_latest_offline(settings)
    assert redis_clean.client().dbsize() > 0  # really written to this Redis, not elsewhere


def test_online_ttl_nulls_stale_values_like_training(fork):
    store = get_store(fork("sqlite"))
    materialize(JAN, JAN + timedelta(days=3), store=store)
    # ttl_m's only price/poll are at 2024-01-01 12:00: 3 days + 1 s later the price is stale, the poll not.
    when = datetime(2024, 1, 4, 12, 0, 1, tzinfo=timezone.utc)
    result = online_features(["ttl_m"], SERVICE, request_ts=when, store=store)
    status = result.status.iloc[0]
    assert status["price"] == "OUTSIDE_MAX_AGE" and pd.isna(result.values.loc[0, "price"])
    assert status["poll_average"] == "PRESENT" and result.values.loc[0, "poll_average"] == 0.6
    assert status["poll_market_spread"] == "NULL_VALUE"  # derived from the stale price: null, as in training
    assert result.age_seconds.loc[0, "price_features"] == 3 * 86400 + 1
    hist = historical_features(entity_rows(("ttl_m", when.isoformat())), SERVICE, store=store)
    assert pd.isna(hist.loc[0, "price"]) and pd.isna(hist.loc[0, "poll_market_spread"])


def test_incremental_materialization_picks_up_only_new_data(fork, applied_repo):
    settings = fork("sqlite")
    store = get_store(settings)
    first_end = datetime(2024, 1, 11, tzinfo=timezone.utc)
    report = materialize_incremental(first_end, views=["price_features"], store=store)
    # Never materialized: starts at end - TTL (3 days), like `feast materialize-incremental`.
    assert report.windows["price_features"][0][0] == first_end - timedelta(days=3)
    before = online_features(["inc000000"], SERVICE, request_ts=first_end, store=store).values.loc[0, "price"]

    second = scenario.batch_incremental(first=False)
    publish(settings.offline_store_dir, second, "2024-01-16")
    second_end = datetime(2024, 1, 16, tzinfo=timezone.utc)
    report = materialize_incremental(second_end, views=["price_features"], store=store)
    assert report.windows["price_features"] == [(first_end, second_end)]  # only the new time range
    newest = second["price_features"].sort_values("ts").groupby("market_id").tail(1).set_index("market_id")
    after = online_features(list(newest.index), SERVICE, request_ts=second_end, store=store).values
    assert after["price"].tolist() == newest["price"].tolist()
    assert after.loc[0, "price"] != before
    assert online_features(["inc000000"], SERVICE, request_ts=second_end, store=store).status.loc[0, "poll_average"] \
        == "NOT_FOUND"  # poll_features was not asked for


def test_push_reaches_online_reads_and_the_offline_store(fork):
    settings = fork("sqlite")
    store = get_store(settings)
    materialize(JAN, JAN + timedelta(days=11), views=["price_features"], store=store)
    tick_ts = pd.Timestamp("2024-01-12T09:30:00", tz="UTC")
    tick = scenario.prices("push_m", [tick_ts], 0.65)
    assert push_price_ticks(tick, settings=settings, store=store) == 1
    result = online_features(["push_m"], SERVICE, request_ts=tick_ts.to_pydatetime() + timedelta(minutes=1),
                             store=store)
    assert result.values.loc[0, "price"] == 0.65 and result.age_seconds.loc[0, "price_features"] == 60.0
    hist = historical_features(entity_rows(("push_m", "2024-01-12T10:00:00"), ("push_m", "2024-01-12T09:00:00")),
                               SERVICE, store=store)
    assert hist["price"].tolist() == [0.65, 0.2]
    # Pushing the same ticks again publishes nothing new.
    files = sorted((settings.offline_store_dir / "price_features").rglob("*.parquet"))
    push_price_ticks(tick, settings=settings, store=store)
    assert sorted((settings.offline_store_dir / "price_features").rglob("*.parquet")) == files


def test_push_refuses_incomplete_ticks(fork):
    settings = fork("sqlite")
    with pytest.raises(ValueError, match="missing column"):
        push_price_ticks(pd.DataFrame({"market_id": ["push_m"], "ts": [pd.Timestamp("2024-01-12", tz="UTC")],
                                       "price": [0.5]}), settings=settings)
    bad = scenario.prices("push_m", ["2024-01-12"], 1.5)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        push_price_ticks(bad, settings=settings)
    # push_m has a published snapshot at 2024-01-05 (price 0.2): a different value for it is refused.
    changed = scenario.prices("push_m", ["2024-01-05"], 0.9)
    with pytest.raises(ValueError, match="repeat a published"):
        push_price_ticks(changed, settings=settings)


def test_split_window_covers_the_range_in_bounded_pieces():
    start, end = JAN, JAN + timedelta(days=10, hours=5)
    windows = split_window(start, end, timedelta(days=3))
    assert windows[0][0] == start and windows[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    assert all(e - s <= timedelta(days=3) for s, e in windows) and len(windows) == 4
    with pytest.raises(ValueError):
        split_window(start, end, timedelta(0))


def test_materialize_refuses_naive_times_and_unknown_views(fork):
    store = get_store(fork("sqlite"))
    with pytest.raises(ValueError, match="timezone-aware"):
        materialize(datetime(2024, 1, 1), datetime(2024, 1, 2), store=store)
    with pytest.raises(ValueError, match="unknown or offline-only"):
        materialize(JAN, JAN + timedelta(days=1), views=["nope"], store=store)


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_resolved_markets_stop_being_served(fork, request, online):
    redis = request.getfixturevalue("redis_clean") if online == "redis" else None
    store = get_store(fork(online, redis=redis))
    # pit_late resolves 2024-02-15: a window ending before keeps serving it ...
    report = materialize(JAN, datetime(2024, 2, 14, 23, tzinfo=timezone.utc), chunk=timedelta(days=60), store=store)
    assert "pit_late" not in report.evicted_resolved
    when = datetime(2024, 2, 15, tzinfo=timezone.utc)
    assert online_features(["pit_late"], SERVICE, request_ts=when, store=store).status.loc[0, "price"] == "PRESENT"
    # ... a window ending at/after its resolution removes it, and only it.
    report = materialize(datetime(2024, 2, 14, 23, tzinfo=timezone.utc), scenario.LATE_RESOLVED.to_pydatetime(),
                         store=store)
    assert report.evicted_resolved == ["pit_late"]
    result = online_features(["pit_late", "pit_corr"], SERVICE, request_ts=when, store=store)
    status = result.status.set_index("market_id")
    assert (status.loc["pit_late", ["price", "event_type", "platform"]] == "NOT_FOUND").all()
    assert status.loc["pit_corr", "price"] == "PRESENT"


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_a_stored_null_is_reported_null_not_present(fork, request, online):
    """Feast says PRESENT for every field of a stored row, null or not; a null value is NULL_VALUE,
    so `is_complete` and the API's per-feature status do not call a missing value present."""
    redis = request.getfixturevalue("redis_clean") if online == "redis" else None
    store = get_store(fork(online, redis=redis))
    store.write_to_online_store("poll_features", pd.DataFrame({
        "market_id": ["null_poll_m"], "ts": pd.to_datetime(["2024-02-01T09:00:00"], utc=True),
        "poll_average": [0.4], "poll_trend": [None], "n_polls": [7],
        "ingested_at": pd.Timestamp("2024-02-02", tz="UTC")}))
    when = datetime(2024, 2, 1, 12, tzinfo=timezone.utc)
    result = online_features(["null_poll_m"], SERVICE, request_ts=when, store=store)
    status = result.status.iloc[0]
    assert status["poll_average"] == "PRESENT" and result.values.loc[0, "poll_average"] == 0.4
    assert status["poll_trend"] == "NULL_VALUE" and pd.isna(result.values.loc[0, "poll_trend"])
    assert not result.is_complete().iloc[0]


@pytest.mark.parametrize("column,value,message", [
    ("volume_24h", float("inf"), "infinite value"),
    ("price_change_1d", float("-inf"), "infinite value"),
    ("volume_24h", -5.0, "negative value"),
    ("price_volatility_7d", -0.1, "negative value"),
])
def test_push_refuses_values_ingestion_would_refuse(fork, column, value, message):
    """An infinite feature would reach the online store and every prediction for that market."""
    settings = fork("sqlite")
    bad = scenario.prices("push_m", ["2024-01-12"], 0.5, **{column: value})
    with pytest.raises(ValueError, match=f"{message}.*`{column}`"):
        push_price_ticks(bad, settings=settings)


def test_poll_market_ratio_is_null_rather_than_infinite(applied_repo):
    """A price near 0 (valid: in [0, 1]) must not overflow poll / price to inf."""
    udf = get_store(applied_repo.settings).get_on_demand_feature_view("market_derived").feature_transformation.udf
    request_ts = pd.Timestamp("2024-01-12", tz="UTC").to_pydatetime()
    out = udf({"price": [5e-324, 0.5, float("inf")], "poll_average": [0.5, 0.4, 0.5],
               "resolution_date": [request_ts] * 3, "request_ts": [request_ts] * 3})
    assert out["poll_market_ratio"] == [None, 0.8, None]
    assert out["poll_market_spread"][:2] == [0.5 - 5e-324, 0.4 - 0.5] and out["poll_market_spread"][2] is None


@pytest.mark.slow
def test_new_batches_reach_the_online_store_although_their_events_are_older(tmp_path):
    """What the materialize DAG runs. A batch lands after its events happened: incremental alone starts
    where the last run ended and never reads it. Its own feast apply: it publishes into the offline store."""
    from features.materialize import MATERIALIZED_BATCHES_FILE, materialize_new_batches
    from features.store import apply
    from tests.feast_project import copy_feature_repo
    from tests.features.conftest import settings_for
    from tests.features.offline_data import market_info_rows, publish

    settings = settings_for(tmp_path / "data", copy_feature_repo(tmp_path))
    settings.ensure_dirs()
    scenario.publish_all(settings.offline_store_dir)
    apply(settings)
    store = get_store(settings)
    first_end = datetime(2024, 3, 10, tzinfo=timezone.utc)
    first = materialize_new_batches(first_end, settings=settings, store=store)
    # A first run starts at each view's earliest published event, whatever the TTL: older than the price
    # view's 3 days (a batch is read whatever its age), later than market_info's 10 years (no empty decade).
    prices = pd.read_parquet(settings.offline_store_dir / "price_features", columns=["ts"])
    assert first.windows["price_features"][0][0] == prices["ts"].min()
    assert first.windows["market_info"][0][0] == scenario.T0

    # Published later, about February: before where every view's last materialization ended.
    markets = scenario._markets([scenario.market("nb_m", scenario.utc("2024-01-20"), scenario.utc("2024-12-01"))])
    late_prices = scenario.prices("nb_m", scenario.days("2024-02-01", "2024-02-05"), [0.31, 0.32, 0.33, 0.34, 0.35])
    batch = publish(settings.offline_store_dir, {"markets": markets, "market_info": market_info_rows(markets),
                                                 "price_features": late_prices}, "2024-03-10T12:00:00")
    second_end = first_end + timedelta(hours=1)
    report = materialize_new_batches(second_end, settings=settings, store=store)
    assert report.windows["price_features"][0][0] == scenario.utc("2024-02-01")
    # Stored, though stale by now (3-day TTL) ...
    assert online_features(["nb_m"], SERVICE, request_ts=second_end, store=store).status.loc[0, "price"] \
        == "OUTSIDE_MAX_AGE"
    # ... and the newest value, as of a day after it.
    read = online_features(["nb_m"], SERVICE, request_ts=datetime(2024, 2, 6, tzinfo=timezone.utc), store=store)
    assert read.values.loc[0, "price"] == 0.35 and read.status.loc[0, "event_type"] == "PRESENT"
    done = json.loads((settings.offline_store_dir / MATERIALIZED_BATCHES_FILE).read_text())["views"]
    assert all(batch in done[view] for view in ("price_features", "poll_features", "market_info"))

    # Nothing new published: back to plain incremental, from where the last run ended.
    again = materialize_new_batches(second_end + timedelta(hours=1), settings=settings, store=store)
    assert again.windows["price_features"] == [(second_end, second_end + timedelta(hours=1))]

    # A call for one view leaves the others' new batches to a later call.
    later = publish(settings.offline_store_dir, {"price_features": scenario.prices("nb_m", ["2024-02-07"], 0.4),
                                                 "market_info": market_info_rows(markets).assign(question="nb_m v2?")},
                    "2024-03-10T13:00:00")
    third_end = second_end + timedelta(hours=2)
    only_prices = materialize_new_batches(third_end, ["price_features"], settings=settings, store=store)
    assert only_prices.windows["price_features"][0][0] == scenario.utc("2024-02-07")
    rest = materialize_new_batches(third_end + timedelta(hours=1), settings=settings, store=store)
    assert rest.windows["market_info"][0][0] < scenario.utc("2024-02-07")  # market_info still reads the batch
    assert rest.windows["price_features"][0][0] == third_end  # price_features does not again
    done = json.loads((settings.offline_store_dir / MATERIALIZED_BATCHES_FILE).read_text())["views"]
    assert later in done["price_features"] and later in done["market_info"]


@pytest.mark.parametrize("market_id, ts, message", [
    ("push_m", "2099-01-01", "more than one day in the future"),
    ("no_such_market", "2024-01-12", "unknown market"),
    ("res_done", "2024-02-25", "outside their market's lifetime"),  # resolved 2024-02-20
    ("push_m", "2023-12-01", "outside their market's lifetime"),    # created 2024-01-01
])
def test_push_refuses_ticks_ingestion_would_refuse_by_time(fork, market_id, ts, message):
    """A future tick would shadow every later write in Redis; a tick after resolution would put a resolved
    market back online and into the offline store the contract keeps it out of."""
    settings = fork("sqlite")
    files = sorted(settings.offline_store_dir.rglob("*.parquet"))
    with pytest.raises(ValueError, match=message):
        push_price_ticks(scenario.prices(market_id, [ts], 0.5), settings=settings)
    assert sorted(settings.offline_store_dir.rglob("*.parquet")) == files  # nothing published


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_push_never_brings_a_resolved_market_back_nor_replaces_a_newer_price(fork, request, online):
    """A tick inside a resolved market's lifetime is valid (offline), but online the market keeps only its
    marker (serving answers 410). A late tick is valid too, but Feast's SQLite store overwrites whatever
    the event time: online it must not replace the newer price. (Online-only pushes: the forks share
    the offline store, and this test must not change it for the others.)"""
    redis = request.getfixturevalue("redis_clean") if online == "redis" else None
    settings = fork(online, redis=redis)
    store = get_store(settings)
    files = sorted(settings.offline_store_dir.rglob("*.parquet"))
    end = datetime(2024, 2, 21, tzinfo=timezone.utc)
    report = materialize(JAN, end, chunk=timedelta(days=60), store=store)
    assert "res_done" in report.evicted_resolved  # resolved 2024-02-20
    newest = pd.Timestamp("2024-01-13T08:00:00", tz="UTC")  # later than any other test's push_m tick
    assert push_price_ticks(scenario.prices("push_m", [newest], 0.65), "online", settings=settings, store=store) == 1

    assert push_price_ticks(scenario.prices("res_done", ["2024-02-19T12:00:00"], 0.9), "online",
                            settings=settings, store=store) == 0
    assert push_price_ticks(scenario.prices("push_m", ["2024-01-11T00:00:00"], 0.3), "online",
                            settings=settings, store=store) == 0
    assert online_features(["res_done"], SERVICE, request_ts=end, store=store).status.loc[0, "price"] == "NOT_FOUND"
    later = newest.to_pydatetime() + timedelta(minutes=1)  # within the price view's TTL
    assert online_features(["push_m"], SERVICE, request_ts=later, store=store).values.loc[0, "price"] == 0.65
    assert sorted(settings.offline_store_dir.rglob("*.parquet")) == files


@pytest.mark.slow
def test_a_correction_at_the_same_event_time_replaces_the_online_value_in_redis_and_sqlite(tmp_path, redis_clean):
    """A late snapshot changes the derived features of the ones after it: ingestion re-publishes those
    rows at their own ts with a newer ingested_at. Training reads the corrected row; so must serving,
    in Redis too, where Feast's write skips a row that is not strictly newer than the stored one."""
    from features.store import apply
    from tests.feast_project import copy_feature_repo
    from tests.features.conftest import settings_for
    from tests.features.offline_data import market_info_rows

    repo = copy_feature_repo(tmp_path)
    settings = settings_for(tmp_path / "data", repo)
    settings.ensure_dirs()
    markets = scenario._markets([scenario.market("corr_m", scenario.utc("2024-01-20"), scenario.utc("2024-12-01"))])
    publish(settings.offline_store_dir, {"markets": markets, "market_info": market_info_rows(markets),
                                         "price_features": scenario.prices("corr_m", scenario.days("2024-02-01", "2024-02-05"),
                                                                           0.35, price_volatility_7d=0.1),
                                         "poll_features": scenario.polls("corr_m", ["2024-02-01"], 0.5)},
            "2024-02-06")
    apply(settings)
    stores = {"sqlite": get_store(settings),
              "redis": get_store(settings_for(tmp_path / "data", repo, PM_ONLINE_STORE_TYPE="redis",
                                              PM_REDIS_HOST=redis_clean.host, PM_REDIS_PORT=str(redis_clean.port),
                                              PM_REDIS_PASSWORD=redis_clean.password))}
    when = datetime(2024, 2, 6, tzinfo=timezone.utc)

    def online_volatility(store) -> float:
        return online_features(["corr_m"], SERVICE, request_ts=when, store=store).values.loc[0, "price_volatility_7d"]

    for store in stores.values():
        materialize(datetime(2024, 1, 20, tzinfo=timezone.utc), when, views=["price_features"], store=store)
        assert online_volatility(store) == 0.1
    # The correction: the newest snapshot (2024-02-05) again, same ts, a new derived value.
    publish(settings.offline_store_dir, {"price_features": scenario.prices("corr_m", ["2024-02-05"], 0.35,
                                                                           price_volatility_7d=0.9)},
            "2024-02-07")
    assert historical_features(entity_rows(("corr_m", "2024-02-05T12:00:00")), SERVICE, store=stores["sqlite"]
                               ).loc[0, "price_volatility_7d"] == 0.9  # what training reads
    for online, store in stores.items():
        materialize(datetime(2024, 2, 4, tzinfo=timezone.utc), when + timedelta(days=1), views=["price_features"],
                    store=store)
        assert online_volatility(store) == 0.9, online
        # An older window never overwrites the newer stored row (Feast's rule is kept for older rows).
        materialize(datetime(2024, 2, 1, tzinfo=timezone.utc), datetime(2024, 2, 3, tzinfo=timezone.utc),
                    views=["price_features"], store=store)
        read = online_features(["corr_m"], SERVICE, request_ts=when, store=store)
        assert read.values.loc[0, "price_volatility_7d"] == 0.9, online
        assert read.age_seconds.loc[0, "price_features"] == pytest.approx(86400, abs=1e-3), online

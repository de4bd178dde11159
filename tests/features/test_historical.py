"""Point-in-time correctness of historical retrieval, on adversarial data (tests/features/scenario.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.retrieve import historical_features
from features.store import get_store
from tests.features import scenario
from tests.features.conftest import entity_rows

pytestmark = pytest.mark.slow  # shares one real `feast apply` (~15-25 s) with the other feature tests

SERVICE = "market_forecaster_v1"


@pytest.fixture(scope="module")
def store(applied_repo):
    return get_store(applied_repo.settings)


def test_rows_after_ts_never_reach_the_example(store):
    # The 2024-01-21 price (0.99) and 2024-01-25 poll (0.95) reveal the outcome; the example is before both.
    out = historical_features(entity_rows(("pit_leak", "2024-01-20T12:00:00")), SERVICE, store=store)
    assert out.loc[0, "price"] == 0.5
    assert out.loc[0, "poll_average"] == 0.4
    assert out.loc[0, "poll_market_spread"] == pytest.approx(0.4 - 0.5)
    # At exactly the revealing snapshot's ts it is (legitimately) visible: `<=`, not `<`.
    later = historical_features(entity_rows(("pit_leak", "2024-01-21")), SERVICE, store=store)
    assert later.loc[0, "price"] == 0.99


def test_later_correction_does_not_change_an_earlier_example(store):
    out = historical_features(entity_rows(("pit_corr", "2024-01-15"), ("pit_corr", "2024-02-10")), SERVICE,
                              store=store)
    # Before the correction's updated_at (2024-02-01): the original resolution_date R1 (2024-03-01).
    assert out.loc[0, "days_to_resolution"] == pytest.approx((scenario.R1 - pd.Timestamp("2024-01-15", tz="UTC")).days)
    # After it: the corrected R2 (2024-04-01).
    assert out.loc[1, "days_to_resolution"] == pytest.approx((scenario.R2 - pd.Timestamp("2024-02-10", tz="UTC")).days)


def test_creation_attributes_of_a_market_sent_after_resolution_are_visible_from_created_at(store):
    ts = pd.Timestamp("2024-01-20", tz="UTC")
    out = historical_features(entity_rows(("pit_late", "2024-01-20"), ("pit_late", "2024-01-09")), SERVICE,
                              store=store)
    assert out.loc[0, "event_type"] == "sports" and out.loc[0, "platform"] == "polymarket"
    assert out.loc[0, "days_to_resolution"] == pytest.approx((scenario.LATE_RESOLUTION_DATE - ts).days)
    assert out.loc[0, "resolution_urgency"] == pytest.approx(1 / (1 + (scenario.LATE_RESOLUTION_DATE - ts).days))
    assert out.loc[0, "log_days_to_resolution"] == pytest.approx(math.log1p((scenario.LATE_RESOLUTION_DATE - ts).days))
    # Before created_at the market does not exist yet.
    assert pd.isna(out.loc[1, "event_type"]) and pd.isna(out.loc[1, "days_to_resolution"])


def test_price_ttl_nulls_stale_prices_poll_ttl_is_longer(store):
    # ttl_m has one price and one poll at 2024-01-01 12:00; PRICE_TTL = 3 days, POLL_TTL = 7 days.
    out = historical_features(entity_rows(("ttl_m", "2024-01-04T12:00:00"), ("ttl_m", "2024-01-04T12:00:01"),
                                          ("ttl_m", "2024-01-08T12:00:00"), ("ttl_m", "2024-01-08T12:00:01")),
                              SERVICE, store=store)
    assert out.loc[0, "price"] == 0.3 and pd.isna(out.loc[1, "price"])  # TTL boundary: exactly 3 days is kept
    assert out.loc[1, "poll_average"] == 0.6 and pd.isna(out.loc[1, "poll_market_spread"])
    assert out.loc[2, "poll_average"] == 0.6 and pd.isna(out.loc[3, "poll_average"])
    assert out["event_type"].eq("election").all()  # market_info's long TTL keeps attributes


def test_all_rows_kept_in_order_with_duplicates_and_unknown_markets(store):
    rows = entity_rows(("pit_leak", "2024-01-10"), ("nope", "2024-01-10"), ("pit_leak", "2024-01-10"),
                       ("pit_corr", "2024-01-15"), ("pit_leak", "2024-01-03"), ("pit_leak", "2024-01-10"))
    rows.index = [60, 50, 40, 30, 20, 10]
    rows["label"] = [1, 0, 1, 0, 1, 1]
    out = historical_features(rows, SERVICE, store=store)
    assert len(out) == len(rows) and list(out.index) == list(rows.index)
    pd.testing.assert_frame_equal(out[["market_id", "ts", "label"]], rows)
    assert out["price"].isna().tolist() == [False, True, False, False, False, False]
    assert out.loc[20, "price"] == 0.5 and out.loc[30, "price"] == 0.4
    # A duplicated index label (e.g. from a concat upstream) is kept as is, rows still aligned by position.
    rows.index = [7, 7, 7, 8, 8, 9]
    again = historical_features(rows, SERVICE, store=store)
    assert list(again.index) == [7, 7, 7, 8, 8, 9]
    assert again["price"].tolist()[3:5] == [0.4, 0.5] and pd.isna(again["price"].iloc[1])


def test_output_columns_are_exactly_the_service_features(store):
    out = historical_features(entity_rows(("pit_leak", "2024-01-10")), SERVICE, store=store)
    service = store.get_feature_service(SERVICE)
    expected = [f.name for p in service.feature_view_projections for f in p.features]
    assert list(out.columns) == ["market_id", "ts", *expected]
    assert "resolution_date" not in out.columns  # an on-demand input, not a model input


@pytest.mark.parametrize("bad, message", [
    (pd.DataFrame({"market_id": ["a"]}), "missing column"),
    (pd.DataFrame({"market_id": ["a"], "ts": pd.to_datetime(["2024-01-01"])}), "timezone-aware"),
    (pd.DataFrame({"market_id": [None], "ts": pd.to_datetime(["2024-01-01"], utc=True)}), "missing market_id"),
    (pd.DataFrame({"market_id": ["a"], "ts": pd.to_datetime([None], utc=True)}), "missing ts"),
])
def test_bad_entity_rows_are_refused_with_the_reason(store, bad, message):
    with pytest.raises(ValueError, match=message):
        historical_features(bad, SERVICE, store=store)


def test_cli_historical_writes_every_row(applied_repo, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from config.settings import get_settings
    from features.cli import app
    from features.store import settings_env

    for name, value in settings_env(applied_repo.settings).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    rows = entity_rows(("pit_leak", "2024-01-20T12:00:00"), ("nope", "2024-01-20T00:00:00"),
                       ("pit_leak", "2024-01-03T00:00:00"))
    rows.to_parquet(tmp_path / "entities.parquet")
    try:
        result = CliRunner().invoke(app, ["historical", "--entities", str(tmp_path / "entities.parquet"),
                                          "--out", str(tmp_path / "out.parquet")])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["market_id"].tolist() == ["pit_leak", "nope", "pit_leak"]
    assert out.loc[0, "price"] == 0.5 and pd.isna(out.loc[1, "price"])


def test_concurrent_calls_in_one_process(store):
    # Feast's DuckDB store shares one process-wide DuckDB connection that refuses concurrent calls;
    # features.retrieve serializes offline work, so threads (e.g. a thread-pooled trainer) are safe.
    from concurrent.futures import ThreadPoolExecutor

    rows = entity_rows(("pit_leak", "2024-01-20T12:00:00"), ("pit_corr", "2024-01-15T00:00:00"))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: historical_features(rows, SERVICE, store=store), range(4)))
    assert all(r["price"].tolist() == [0.5, 0.4] for r in results)


@pytest.mark.parametrize("args, message", [
    (["materialize", "--start", "2024-01-02T00:00:00Z", "--end", "2024-01-01T00:00:00Z"], "must be before end"),
    (["materialize", "--start", "2024-01-01T00:00:00", "--end", "2024-01-02T00:00:00Z"], "naive"),
    (["materialize-incremental", "--end", "2024-01-02Z"], "needs a time and an offset"),
    (["materialize", "--start", "2024-01-01T00:00:00Z", "--end", "2024-01-02T00:00:00Z", "--view", "nope"], "nope"),
    (["online", "m1", "--service", "no_such_service", "--at", "2024-01-02T00:00:00Z"], "no_such_service"),
])
def test_cli_bad_input_is_one_error_line(applied_repo, monkeypatch, args, message):
    from typer.testing import CliRunner

    from config.settings import get_settings
    from features.cli import app
    from features.store import settings_env

    for name, value in settings_env(applied_repo.settings).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output and "Traceback" not in result.output

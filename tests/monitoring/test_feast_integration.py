"""Against a real Feast store (one applied repo, SQLite online store): freshness, skew, replay + monitoring run."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from features.materialize import materialize
from features.store import get_store
from monitoring.feature_checks import freshness, training_serving_skew
from tests.features.conftest import applied_repo, fork  # noqa: F401  (fixtures: one real `feast apply`)

pytestmark = pytest.mark.slow

SERVICE = "market_forecaster_v1"
JAN = datetime(2024, 1, 1, tzinfo=timezone.utc)


def online_markets(settings) -> tuple[list[str], datetime]:
    import pyarrow.dataset as ds

    prices = ds.dataset(settings.offline_store_dir / "price_features", format="parquet",
                        partitioning="hive").to_table(columns=["market_id", "ts"]).to_pandas()
    prices = prices[prices["market_id"].str.startswith("on")]
    return sorted(prices["market_id"].unique()), prices["ts"].max().to_pydatetime()


def test_fresh_store_has_no_skew_and_stale_store_is_flagged(fork):  # noqa: F811
    settings = fork("sqlite")
    store = get_store(settings)
    materialize(JAN, JAN + timedelta(days=40), chunk=timedelta(days=10), store=store)
    ids, last_ts = online_markets(settings)
    now = last_ts + timedelta(hours=1)

    fresh = freshness(settings, ids, SERVICE, now, store=store)
    assert fresh["views"]["price_features"]["newest_age_seconds"] == 3600.0
    assert fresh["views"]["price_features"]["severity"] == "none" and fresh["findings"] == []
    skew = training_serving_skew(settings, ids, SERVICE, now, sample_size=10, store=store)
    assert skew["sampled_markets"] == 10 and skew["mismatch_fraction"] == 0.0, skew["findings"]
    assert set(skew["features"]) >= {"price", "poll_average", "event_type"}

    # Ten days later nothing new arrived: the price view's newest value is past its 3-day TTL.
    stale = freshness(settings, ids, SERVICE, now + timedelta(days=10), store=store)
    assert stale["views"]["price_features"]["severity"] == "high"
    assert stale["views"]["price_features"]["expired_fraction"] == 1.0
    assert "price_features" in {f["subject"] for f in stale["findings"] if f["severity"] == "high"}
    for view, v in stale["views"].items():  # every view judged by its own TTL
        assert (v["severity"] == "high") == (v["newest_age_seconds"] >= v["ttl_seconds"]), view


def test_online_value_differing_from_offline_is_reported_as_skew(fork):  # noqa: F811
    settings = fork("sqlite")
    store = get_store(settings)
    materialize(JAN, JAN + timedelta(days=40), chunk=timedelta(days=10), store=store)
    ids, last_ts = online_markets(settings)
    target = ids[0]
    online = store.get_online_features(features=[f"price_features:{c}" for c in (
        "price", "volume_24h", "price_change_1d", "price_change_7d", "price_volatility_7d", "price_volatility_30d",
        "volume_mean_7d")], entity_rows=[{"market_id": target}]).to_df()
    # The serving path writes a different price for the same event time: real skew.
    online["price"] = 1 - online["price"]
    online["ts"] = pd.Timestamp(last_ts)
    online["ingested_at"] = pd.Timestamp(last_ts)
    store.write_to_online_store("price_features", online)
    skew = training_serving_skew(settings, ids, SERVICE, last_ts + timedelta(hours=1), sample_size=len(ids),
                                 store=store)
    assert skew["features"]["price"]["mismatches"] == 1
    assert skew["features"]["price"]["examples"][0]["market_id"] == target
    assert skew["features"]["volume_24h"]["mismatches"] == 0
    assert any(f["subject"] == "price" for f in skew["findings"])


def test_replayed_champion_log_is_monitored_end_to_end(fork, tmp_path):  # noqa: F811
    """Real model (trained, registered, promoted in MLflow) + real Feast features -> log -> monitoring run."""
    from threadpoolctl import threadpool_limits

    from monitoring.replay import replay_predictions
    from monitoring.run import execute_run
    from tests.training.synthetic import FEATURES, make_frame
    from training.data import training_set_from_frame
    from training.registry import GateLimits
    from training.train import TrainConfig, train

    settings = fork("sqlite")
    settings.ensure_dirs()
    lenient = GateLimits(max_brier=0.5, max_ece=1.0, min_roc_auc=0.0, min_brier_skill=-1.0, max_train_valid_gap=1.0,
                         champion_tolerance=1.0)
    ts = training_set_from_frame(make_frame(n_markets=150, snapshots=3, seed=1), FEATURES, "2025-01-01", run_gx=False)
    with threadpool_limits(limits=1):
        trained = train(settings, training_set=ts, config=TrainConfig(importance_repeats=1), limits=lenient,
                        promote_if_passed=True)
    assert trained.passed, trained.to_text()

    ids, last_ts = online_markets(settings)
    log_dir = tmp_path / "replayed_log"
    summary = replay_predictions(settings, JAN, last_ts + timedelta(hours=1), log_dir, markets=ids)
    assert summary.model_version == trained.version and summary.markets == len(ids) and summary.rows > len(ids)

    out = execute_run(settings, window="60d", end=last_ts + timedelta(hours=1), log_dir=log_dir, log_to_mlflow=False)
    r = out.result
    assert r["status"] == "ok" and r["n_predictions"] == summary.rows and r["model_version"] == trained.version
    statuses = {f["feature"]: f["status"] for f in r["drift"]["features"]}
    assert statuses and set(statuses.values()) == {"ok"}, statuses  # every profiled feature was in the log
    assert out.json_path.exists() and out.html_path.exists()

"""A monitoring run the way the daily DAG runs it: a window ending now, over a real Feast store whose
features are current (own `feast apply` of offline data up to today, SQLite online store, real
materialization), so the online freshness and training-serving skew checks run instead of being
skipped; and `python -m monitoring replay` on the same store with a real registered model."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from config.settings import Settings, get_settings
from monitoring.cli import app
from monitoring.prediction_log import read_window, write_log
from monitoring.run import run_monitoring
from tests.feast_project import copy_feature_repo
from tests.features.conftest import settings_for
from tests.features.offline_data import market_info_rows, publish, synthetic
from tests.monitoring import synthetic as syn
from tests.monitoring.test_run import make_profile, parse_prom

pytestmark = pytest.mark.slow  # one real `feast apply` per module, materialization, HTML reports

SERVICE = "market_forecaster_v1"
N_MARKETS = 40  # per group
POLLS_STOP = timedelta(days=9)  # the "stalled" group's last poll: older than poll_features' 7-day TTL


@dataclass
class LiveWorld:
    settings: Settings  # the applied project (offline store, registry, materialized online store)
    today: pd.Timestamp  # midnight UTC of the build day: every market's newest price and (fresh) poll
    fresh: list[str]  # every view current
    stalled: list[str]  # prices current, polls stopped POLLS_STOP ago
    resolved: list[str]  # like fresh, but resolved a minute before the build: evicted from the online store
    prices: pd.DataFrame  # the published price_features rows


@pytest.fixture(scope="module")
def live_world(tmp_path_factory: pytest.TempPathFactory) -> LiveWorld:
    from features.materialize import materialize
    from features.store import apply, get_store

    root = tmp_path_factory.mktemp("live_feast")
    settings = settings_for(root / "data", copy_feature_repo(root))
    settings.ensure_dirs()
    now = pd.Timestamp.now(tz="UTC")
    today = now.floor("D")
    start = (today - pd.Timedelta(days=30)).isoformat()
    fresh = synthetic(N_MARKETS, start=start, days=30, seed=5, prefix="fresh")
    stalled = synthetic(N_MARKETS, start=start, days=30, seed=6, prefix="stalled")
    polls = stalled["poll_features"]
    stalled["poll_features"] = polls[polls["ts"] <= today - POLLS_STOP]
    resolved = synthetic(N_MARKETS, start=start, days=30, seed=7, prefix="resolved")
    at = now - pd.Timedelta(minutes=1)
    closed = resolved["markets"].assign(updated_at=at, resolved_at=at, outcome=pd.array([1] * N_MARKETS, dtype="Int8"))
    resolved["markets"] = pd.concat([resolved["markets"], closed], ignore_index=True)
    resolved["market_info"] = market_info_rows(resolved["markets"])
    tables = {t: pd.concat([fresh[t], stalled[t], resolved[t]], ignore_index=True) for t in fresh}
    publish(settings.offline_store_dir, tables, now)
    apply(settings)
    report = materialize(today - pd.Timedelta(days=31), now.to_pydatetime(), chunk=timedelta(days=16),
                         store=get_store(settings))
    ids = {name: sorted(group["markets"]["market_id"].unique()) for name, group in
           (("fresh", fresh), ("stalled", stalled), ("resolved", resolved))}
    assert sorted(report.evicted_resolved) == ids["resolved"]
    return LiveWorld(settings, today, ids["fresh"], ids["stalled"], ids["resolved"], tables["price_features"])


@pytest.fixture
def live(live_world: LiveWorld, tmp_path: Path) -> Settings:
    """Settings of a private copy of the world's registry and online store (writes stay in this test),
    with this test's own data dir (reports, retrain requests, MLflow)."""
    base = live_world.settings
    registry, online = tmp_path / "feast_registry.db", tmp_path / "online.db"
    shutil.copy(base.feast_registry_uri.removeprefix("sqlite:///"), registry)
    shutil.copy(base.online_sqlite_path, online)
    env = {"PM_OFFLINE_STORE_DIR": str(base.offline_store_dir), "PM_FEAST_REGISTRY_URI": f"sqlite:///{registry}",
           "PM_ONLINE_STORE_TYPE": "sqlite", "PM_ONLINE_SQLITE_PATH": str(online)}
    settings = settings_for(tmp_path / "data", base.feature_repo_dir, **env)
    settings.ensure_dirs()
    return settings


def log_predictions_now(settings: Settings, market_ids: list[str], rng: np.random.Generator,
                        log_dir: Path | None = None) -> pd.DataFrame:
    """Five champion predictions per market over the last 20 hours, features like the reference's (no drift)."""
    m = syn.calibrated_markets(len(market_ids), 5, rng)
    ids = np.repeat(market_ids, 5)
    now = datetime.now(timezone.utc)
    df = syn.log_frame(syn.features(len(m), rng), m["q"].to_numpy(), ids, now - timedelta(hours=20),
                       timedelta(hours=19), rng)
    write_log(df, log_dir or settings.prediction_log_dir)
    return df


def test_window_ending_now_runs_freshness_and_skew_on_a_current_store(live, live_world):
    settings = live
    rng = np.random.default_rng(41)
    log_predictions_now(settings, live_world.fresh, rng)
    before = datetime.now(timezone.utc)
    out = run_monitoring(settings, make_profile(rng), timedelta(days=1), log_to_mlflow=False,
                         feature_service=SERVICE)
    r = out.result
    assert r["status"] == "ok" and r["n_predictions"] == 5 * N_MARKETS

    fresh, skew = r["freshness"], r["skew"]
    assert fresh["status"] == "ok" and skew["status"] == "ok", (fresh, skew)
    request_ts = datetime.fromisoformat(fresh["request_ts"])
    assert before <= request_ts <= datetime.now(timezone.utc)  # checked at the run's time, not at a past end
    views = fresh["views"]
    assert {"price_features", "poll_features", "market_info"} <= set(views)
    # The newest price of every market is today's midnight snapshot, materialized: its age is the time since.
    assert views["price_features"]["newest_age_seconds"] == pytest.approx(
        (request_ts - live_world.today).total_seconds(), abs=1e-3)
    assert all(v["severity"] == "none" and v["markets"] == N_MARKETS for v in views.values()), views
    assert fresh["findings"] == []
    assert skew["sampled_markets"] == N_MARKETS and skew["mismatch_fraction"] == 0.0, skew["findings"]
    assert {"price", "poll_average", "event_type"} <= set(skew["features"])

    assert r["severity"] == "none" and out.findings == [], out.to_text()
    assert "not checked" not in out.to_text()
    saved = json.loads(out.json_path.read_text())
    assert saved["freshness"]["status"] == "ok" and saved["skew"]["mismatch_fraction"] == 0.0
    gauges = parse_prom(out.prom_path.read_text())  # what a dashboard scrapes
    assert gauges['pm_feature_checks_ran{model_version="1"}'] == 1
    for view, found in views.items():
        labels = f'{{model_version="1",feature_view="{view}"}}'
        assert gauges[f"pm_feature_view_newest_age_seconds{labels}"] == pytest.approx(found["newest_age_seconds"])
        assert gauges[f"pm_feature_view_freshness_severity{labels}"] == 0
        assert gauges[f"pm_feature_view_expired_fraction{labels}"] == found["expired_fraction"]
    assert gauges['pm_skew_mismatch_fraction{model_version="1"}'] == 0
    assert gauges['pm_skew_severity{model_version="1"}'] == 0
    assert gauges['pm_skew_feature_mismatch_fraction{model_version="1",feature="price"}'] == 0


def test_stale_view_and_skew_reach_the_report_and_alerts_but_request_no_retraining(live, live_world):
    """The stalled markets' polls stopped 9 days ago (TTL 7 days) and serving wrote a different price
    than the offline store holds for the same event time: both are pipeline faults. They must raise
    the run's severity and be alerted, and, by the retraining rule, file no retraining request."""
    from features.store import get_store

    settings = live
    store = get_store(settings)
    latest = live_world.prices[live_world.prices["market_id"].isin(live_world.stalled)
                               & (live_world.prices["ts"] == live_world.today)]
    assert len(latest) == N_MARKETS
    skewed = latest.assign(price=1 - latest["price"], ingested_at=pd.Timestamp.now(tz="UTC"))
    store.write_to_online_store("price_features", skewed.reset_index(drop=True))

    rng = np.random.default_rng(42)
    log_predictions_now(settings, live_world.stalled, rng)
    out = run_monitoring(settings, make_profile(rng), timedelta(days=1), log_to_mlflow=False,
                         feature_service=SERVICE)
    r = out.result
    assert r["freshness"]["status"] == "ok" and r["skew"]["status"] == "ok"
    views = r["freshness"]["views"]
    assert views["poll_features"]["severity"] == "high", views["poll_features"]
    assert views["poll_features"]["newest_age_seconds"] >= POLLS_STOP.total_seconds()
    assert views["price_features"]["severity"] == "none"
    price = r["skew"]["features"]["price"]
    assert price["mismatches"] == N_MARKETS and price["severity"] == "high", price
    assert r["skew"]["features"]["volume_24h"]["mismatches"] == 0

    # Drift alone says nothing: the run's high severity comes from the Feast checks.
    drift_severities = {f["severity"] for f in [*r["drift"]["features"], r["drift"]["prediction"]]}
    assert drift_severities == {"none"} and r["concept"]["severity"] == "none"
    assert r["severity"] == "high"
    kinds = {(f["kind"], f["subject"]): f["severity"] for f in out.findings}
    assert kinds[("freshness", "poll_features")] == "high" and kinds[("skew", "price")] == "high", kinds
    assert {k for k, _ in kinds} == {"freshness", "skew"}, kinds

    assert out.retrain_request_path is None and "retrain_request" not in r
    assert not (settings.data_dir / "retrain_requests").exists()
    gauges = parse_prom(out.prom_path.read_text())
    assert gauges['pm_monitoring_retrain_requested{model_version="1"}'] == 0
    # The faults are on the dashboard too, not only in the report.
    assert gauges['pm_feature_view_freshness_severity{model_version="1",feature_view="poll_features"}'] == 2
    assert gauges['pm_feature_view_newest_age_seconds{model_version="1",feature_view="poll_features"}'] >= \
        POLLS_STOP.total_seconds()
    assert gauges['pm_feature_view_freshness_severity{model_version="1",feature_view="price_features"}'] == 0
    assert gauges['pm_skew_feature_mismatch_fraction{model_version="1",feature="price"}'] == 1.0
    assert gauges['pm_skew_severity{model_version="1"}'] == 2
    assert r["skew"]["mismatch_fraction"] > 0
    assert gauges['pm_skew_mismatch_fraction{model_version="1"}'] == pytest.approx(r["skew"]["mismatch_fraction"])
    alerts = [json.loads(line) for line in out.alerts_path.read_text().splitlines()]
    assert {(a["kind"], a["subject"]) for a in alerts} == set(kinds)
    saved = json.loads(out.json_path.read_text())
    assert saved["severity"] == "high"
    assert [f["subject"] for f in saved["freshness"]["findings"]] == ["poll_features"]
    page = out.html_path.read_text()
    assert "<h2>Freshness</h2>" in page and "<h2>Skew</h2>" in page
    text = out.to_text()
    assert "[high] freshness poll_features" in text and "[high] skew price" in text


def test_markets_resolved_since_their_predictions_are_not_called_skew(live, live_world):
    """Materialization evicts a resolved market from the online store, while the offline store still
    answers for it: in a 7-day window (the DAG's) many predicted markets have resolved since. Serving
    no longer answers for them, so they are neither stale nor skewed, and are left out of both checks."""
    settings = live
    rng = np.random.default_rng(43)
    log_predictions_now(settings, live_world.fresh + live_world.resolved, rng)
    out = run_monitoring(settings, make_profile(rng), timedelta(days=1), log_to_mlflow=False,
                         feature_service=SERVICE)
    r = out.result
    assert r["n_predictions"] == 5 * 2 * N_MARKETS
    for kind in ("freshness", "skew"):
        assert r[kind]["status"] == "ok" and r[kind]["findings"] == [], r[kind]["findings"]
    assert r["skew"]["mismatch_fraction"] == 0.0 and r["skew"]["sampled_markets"] == N_MARKETS
    assert r["freshness"]["views"]["market_info"]["not_found_fraction"] == 0.0
    assert r["freshness"]["resolved_markets_excluded"] == r["skew"]["resolved_markets_excluded"] == N_MARKETS
    # (All resolved with outcome YES whatever was predicted: the concept-drift finding is the test's, not Feast's.)
    assert {f["kind"] for f in out.findings} <= {"concept_drift"}, out.to_text()

    # A window of resolved markets only: nothing left to check, and the report says why.
    only_resolved = settings.data_dir / "only_resolved_log"
    log_predictions_now(settings, live_world.resolved, rng, log_dir=only_resolved)
    out = run_monitoring(settings, make_profile(rng), timedelta(days=1), log_dir=only_resolved,
                         log_to_mlflow=False, feature_service=SERVICE)
    for kind in ("freshness", "skew"):
        assert out.result[kind]["status"] == "skipped", out.result[kind]
        assert f"all {N_MARKETS} markets of the window have resolved" in out.result[kind]["reason"]
    assert "freshness and skew not checked: all" in out.to_text()
    gauges = parse_prom(out.prom_path.read_text())
    assert gauges['pm_feature_checks_ran{model_version="1"}'] == 0  # "not checked", not "fresh"
    assert not [g for g in gauges if g.startswith(("pm_feature_view_", "pm_skew_"))], gauges


@pytest.fixture
def cli_env(live: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The environment that makes get_settings() (what the CLI reads) return `live`'s settings."""
    env = {"PM_DATA_DIR": str(live.data_dir), "PM_FEATURE_REPO_DIR": str(live.feature_repo_dir),
           "PM_OFFLINE_STORE_DIR": str(live.offline_store_dir), "PM_FEAST_REGISTRY_URI": live.feast_registry_uri,
           "PM_ONLINE_STORE_TYPE": "sqlite", "PM_ONLINE_SQLITE_PATH": str(live.online_sqlite_path)}
    for var in ("PM_RAW_DIR", "PM_QUARANTINE_DIR", "MLFLOW_TRACKING_URI", "PM_MLFLOW_ARTIFACT_ROOT",
                "PM_REPORTS_DIR", "PM_PREDICTION_LOG_DIR"):
        monkeypatch.delenv(var, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    assert get_settings().online_sqlite_path == live.online_sqlite_path
    yield get_settings()
    get_settings.cache_clear()


def test_cli_replay_scores_the_champion_on_point_in_time_features(cli_env, live_world, tmp_path):
    from threadpoolctl import threadpool_limits

    from features.retrieve import feature_names
    from features.store import get_store
    from tests.serving import world

    settings = cli_env
    with threadpool_limits(limits=1):
        version = world.register_model(settings, feature_names(get_store(settings), SERVICE), seed=1)
    world.set_champion(settings, version)

    start, end = live_world.today - pd.Timedelta(days=3), pd.Timestamp.now(tz="UTC")
    log_dir = tmp_path / "replayed"
    res = CliRunner().invoke(app, ["replay", "--start", start.isoformat(), "--end", end.isoformat(),
                                   "--log-dir", str(log_dir)])
    assert res.exit_code == 0, res.output
    markets = live_world.fresh + live_world.stalled + live_world.resolved
    # One snapshot a day per market: the 3 days before today and today's midnight (before any resolution).
    assert f"replayed {4 * len(markets)} predictions of model v{version} ({SERVICE}) for {len(markets)} markets" \
        in res.output

    log = read_window(log_dir, start.to_pydatetime(), end.to_pydatetime())
    assert len(log) == 4 * len(markets) and sorted(log["market_id"].unique()) == sorted(markets)
    assert (log["model_version"].astype(str) == version).all() and (log["model_role"] == "champion").all()
    assert log["probability"].between(0, 1, inclusive="neither").all()
    # Point-in-time features: the logged price is the published snapshot's at logged_at.
    published = live_world.prices.set_index(["market_id", "ts"])["price"]
    logged = log.set_index(["market_id", "logged_at"])["feature__price"]
    assert np.allclose(logged.to_numpy(), published.loc[logged.index].to_numpy())

"""Outages and reloads: registry unreachable, resolution markers unreadable, fallback after a reload
(rollback, load_fallback=False), market_status without a resolution date."""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import pandas as pd
import pytest

from serving.models import MLFLOW_HTTP_BOUNDS, bound_mlflow_requests
from serving.options import ServingOptions
from tests.serving import world
from tests.serving.conftest import ADMIN_TOKEN
from tests.servers import free_port

pytestmark = pytest.mark.slow  # the session serving world: a real feast apply and MLflow registry

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
UNREACHABLE = "model registry unreachable"


def _closed_registry(settings):
    """`settings` with the tracking/registry URI on a loopback port nothing listens on."""
    return dataclasses.replace(settings, mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")


def test_mlflow_http_bounds_are_defaults_a_user_setting_wins():
    environ = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5"}
    bound_mlflow_requests(environ)
    assert environ == {**MLFLOW_HTTP_BOUNDS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5"}


@pytest.mark.timeout(60, func_only=True)
def test_registry_unreachable_at_start_up_is_503_naming_it_within_seconds(make_client, online, serving_settings,
                                                                          monkeypatch):
    for name in MLFLOW_HTTP_BOUNDS:  # serving's own bounds, not whatever the environment has
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    client = make_client(settings=_closed_registry(serving_settings))
    ready = client.get("/ready")
    predict = client.post("/predict", json={"market_id": online.ids[0]})
    reload = client.post("/admin/reload", headers=AUTH)
    elapsed = time.monotonic() - started
    assert ready.status_code == 503 and ready.json()["model_loaded"] is False
    assert UNREACHABLE in ready.json()["detail"][0] and "alias" not in ready.json()["detail"][0]
    assert predict.status_code == 503 and UNREACHABLE in predict.json()["detail"]
    assert reload.status_code == 503 and UNREACHABLE in reload.json()["detail"]
    assert elapsed < 20, f"registry calls not bounded: {elapsed:.1f} s"


@pytest.mark.timeout(60, func_only=True)
def test_registry_unreachable_after_start_up_reload_is_503_and_model_answers_without_metrics(
        client, online, model_store, monkeypatch):
    svc = client.app.state.service
    down = _closed_registry(svc.settings)
    monkeypatch.setattr(svc, "settings", down)
    monkeypatch.setattr(svc.models, "settings", down)
    svc.run_metrics.clear()
    started = time.monotonic()
    reload = client.post("/admin/reload", headers=AUTH)
    assert reload.status_code == 503, reload.text
    assert UNREACHABLE in reload.json()["detail"] and f"v{model_store.versions['champion']}" in reload.json()["detail"]
    info = client.get("/model")
    assert info.status_code == 200, info.text
    champion = info.json()["champion"]
    assert champion["version"] == model_store.versions["champion"] and champion["training_metrics"] == {}
    assert any("training metrics" in w and "not readable" in w for w in champion["warnings"])
    assert time.monotonic() - started < 20
    body = client.post("/predict", json={"market_id": online.ids[0]}).json()  # current models kept
    assert body["model_version"] == model_store.versions["champion"]


def test_resolution_markers_unreadable_is_503_not_404(client, online, serving_settings, redis_clean, monkeypatch):
    from features.resolved import MARKER_COLUMNS, evict_from_online, write_markers
    from features.store import get_store
    from serving.features_source import FeastFeatureSource

    store = get_store(serving_settings)
    market, at = online.ids[7], pd.Timestamp("2026-03-01 12:00", tz="UTC")
    evict_from_online(store, [market])
    write_markers(store, pd.DataFrame([{"market_id": market, "updated_at": at, "resolved_at": at, "outcome": 1,
                                        "ingested_at": at}])[MARKER_COLUMNS])
    assert client.post("/predict", json={"market_id": market}).status_code == 410
    feature_read = FeastFeatureSource.read

    def read_then_redis_stalls(self, *args, **kwargs):
        out = feature_read(self, *args, **kwargs)
        os.kill(redis_clean.proc.pid, signal.SIGSTOP)  # Redis stops answering before the marker read
        return out

    monkeypatch.setattr(FeastFeatureSource, "read", read_then_redis_stalls)
    try:
        single = client.post("/predict", json={"market_id": market})
        os.kill(redis_clean.proc.pid, signal.SIGCONT)
        batch = client.post("/predict/batch", json={"items": [{"market_id": online.ids[0]}, {"market_id": market}]})
    finally:
        os.kill(redis_clean.proc.pid, signal.SIGCONT)
    assert single.status_code == 503 and "resolution-marker read failed" in single.json()["detail"], single.text
    assert batch.status_code == 503, batch.text
    monkeypatch.undo()
    assert client.post("/predict", json={"market_id": market}).status_code == 410


def test_reload_after_rollback_picks_the_fallback_a_restart_picks(make_client, online, serving_settings,
                                                                  model_store):
    from training import registry

    v = model_store.versions
    client = make_client()
    world.set_champion(serving_settings, v["next"])
    assert client.post("/admin/reload", headers=AUTH).json()["fallback_version"] == v["champion"]
    # what training.registry.rollback does: alias back, rollback.* tags naming the rejected version
    registry.client(serving_settings).set_registered_model_alias(serving_settings.model_name, "champion",
                                                                 v["champion"])
    registry.set_version_tags(serving_settings, serving_settings.model_name, v["champion"],
                              {"rollback.from_version": v["next"], "rollback.reason": "bad"})
    reloaded = client.post("/admin/reload", headers=AUTH).json()
    restarted = make_client().get("/model").json()
    assert reloaded["champion_version"] == restarted["champion"]["version"] == v["champion"]
    assert reloaded["fallback_version"] == restarted["fallback"]["version"] == v["old"]


def test_rollback_to_the_first_champion_never_serves_the_rejected_version_as_fallback(make_client, online,
                                                                                     serving_settings, model_store):
    """The first champion was promoted with no predecessor (previous_champion empty): rolled back to, it
    has no fallback, never the version just rejected."""
    from training import registry

    v = model_store.versions
    client = make_client()
    registry.client(serving_settings).set_registered_model_alias(serving_settings.model_name, "champion", v["old"])
    registry.set_version_tags(serving_settings, serving_settings.model_name, v["old"],
                              {"previous_champion": "", "rollback.from_version": v["champion"],
                               "rollback.reason": "bad"})
    reloaded = client.post("/admin/reload", headers=AUTH).json()
    restarted = make_client().get("/model").json()
    assert reloaded["champion_version"] == restarted["champion"]["version"] == v["old"]
    assert reloaded["fallback_version"] is None and restarted["fallback"] is None


def test_load_fallback_false_holds_on_reload(make_client, online, serving_settings, model_store):
    client = make_client(ServingOptions(poll_interval_s=0, load_fallback=False))
    assert client.get("/model").json()["fallback"] is None
    world.set_champion(serving_settings, model_store.versions["next"])
    reloaded = client.post("/admin/reload", headers=AUTH).json()
    assert reloaded["champion_version"] == model_store.versions["next"] and reloaded["fallback_version"] is None
    assert client.get("/model").json()["fallback"] is None


def test_market_without_resolution_date_has_status_unknown(client, online, serving_settings):
    from features.store import get_store

    now = pd.Timestamp.now(tz="UTC")
    prices = pd.DataFrame({"market_id": ["mkt-noinfo"], "ts": [now - pd.Timedelta(hours=1)], "price": [0.4],
                           "volume_24h": [100.0], "price_change_1d": [0.0], "price_change_7d": [0.0],
                           "price_volatility_7d": [0.01], "price_volatility_30d": [0.01],
                           "volume_mean_7d": [100.0], "ingested_at": [now]})
    get_store(serving_settings).write_to_online_store("price_features", prices)  # no market_info row
    body = client.post("/predict", json={"market_id": "mkt-noinfo"}).json()
    assert body["features"]["days_to_resolution"]["value"] is None
    assert body["market_status"] == "unknown"
    assert any("days_to_resolution" in w and "unknown" in w for w in body["warnings"])

"""Degradation, never silence: fallback model, market price, 503 with the reason; Redis outage and recovery.

A model failure is injected by making the really loaded model's predict raise (there is no other way
to make a verified, registered model fail on demand); Redis is really stopped and restarted.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def _break(model, monkeypatch) -> None:
    def broken(columns):
        raise RuntimeError("simulated model failure")

    monkeypatch.setattr(model, "predict", broken)


def test_champion_failure_falls_back_to_the_previous_champion(client, online, model_store, monkeypatch):
    _break(client.app.state.service.models.state.champion, monkeypatch)
    body = client.post("/predict", json={"market_id": online.ids[0]}).json()
    assert body["source"] == "fallback_model" and body["model_role"] == "fallback"
    assert body["model_version"] == model_store.versions["old"]
    assert any("simulated model failure" in w for w in body["warnings"])
    assert 'pm_serving_fallbacks_total{reason="champion_failed",source="fallback_model"} 1.0' in client.get("/metrics").text


def test_both_models_failing_passes_the_market_price_through(client, online, monkeypatch):
    state = client.app.state.service.models.state
    _break(state.champion, monkeypatch)
    _break(state.fallback, monkeypatch)
    stored = client.post("/predict", json={"market_id": online.ids[2]}).json()
    assert stored["source"] == "market_price" and stored["model_version"] is None
    assert stored["probability"] == stored["features"]["price"]["value"]
    fresh = client.post("/predict", json={"market_id": online.ids[2], "market_price": 0.37}).json()
    assert fresh["source"] == "market_price" and fresh["probability"] == 0.37


def test_no_model_and_no_price_is_503_with_the_reason_never_a_made_up_probability(client, online, monkeypatch):
    state = client.app.state.service.models.state
    _break(state.champion, monkeypatch)
    _break(state.fallback, monkeypatch)
    r = client.post("/predict", json={"market_id": online.no_price})
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert f"v{state.champion.version} failed" in detail and f"v{state.fallback.version} failed" in detail
    assert "no market price" in detail
    batch = client.post("/predict/batch", json={"items": [{"market_id": online.no_price},
                                                          {"market_id": online.ids[0]}]}).json()
    assert [e["status_code"] for e in batch["errors"]] == [503]
    assert [p["source"] for p in batch["predictions"]] == ["market_price"]


def test_redis_outage_gives_fast_503_and_not_ready_then_recovers_by_itself(client, online, redis_clean,
                                                                           serving_settings):
    from features.store import get_store
    from tests.serving import world

    assert client.post("/predict", json={"market_id": online.ids[0]}).status_code == 200
    redis_clean.stop()
    try:
        started = time.monotonic()
        r = client.post("/predict", json={"market_id": online.ids[0]})
        elapsed = time.monotonic() - started
        assert r.status_code == 503 and "online feature read failed" in r.json()["detail"]
        assert elapsed < 2.0, f"a dead Redis must fail fast, took {elapsed:.2f} s"
        batch = client.post("/predict/batch", json={"items": [{"market_id": online.ids[0]}]})
        assert batch.status_code == 503
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["online_store_reachable"] is False
        assert ready.json()["model_loaded"] is True
        assert "pm_serving_online_store_errors_total 2.0" in client.get("/metrics").text
    finally:
        redis_clean.start()
    # The restarted Redis is empty (no persistence): the features come back with the next materialization.
    world.write_online(get_store(serving_settings), 5, pd.Timestamp.now(tz="UTC"))
    assert client.get("/ready").json()["ready"] is True
    r = client.post("/predict", json={"market_id": online.ids[0]})
    assert r.status_code == 200 and r.json()["source"] == "model"

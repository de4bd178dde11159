"""Every endpoint against a real Redis online store (Feast) and a real MLflow registry."""

from __future__ import annotations

import pytest

from config.settings import get_settings
from serving.options import ServingOptions
from tests.serving.conftest import ADMIN_TOKEN, FAST

pytestmark = pytest.mark.slow  # session set-up: `feast apply` + three MLflow registrations


def test_predict_serves_the_champion_with_its_feature_service(client, online, model_store):
    r = client.post("/predict", json={"market_id": online.ids[0]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "model" and body["model_role"] == "champion"
    assert body["model_version"] == model_store.versions["champion"]
    assert body["feature_service"] == "market_forecaster_v1"
    assert 0.0 <= body["probability"] <= 1.0
    assert list(body["features"]) == model_store.feature_names
    price = body["features"]["price"]
    assert price["status"] == "PRESENT" and price["ttl_seconds"] == 3 * 86400
    assert 0 < price["age_seconds"] < 21 * 3600  # written 0.1-20 h before now
    assert body["market_status"] == "open" and body["warnings"] == []
    assert body["latency_ms"] > 0


def test_probability_is_the_registered_model_output_on_the_served_features(client, online, serving_settings):
    import pandas as pd

    from training.registry import load_verified_model

    body = client.post("/predict", json={"market_id": online.ids[3]}).json()
    model = load_verified_model(None, "champion", serving_settings)
    frame = pd.DataFrame([{name: info["value"] for name, info in body["features"].items()}])
    frame = frame.astype({c: float for c in frame.columns if c not in ("event_type", "platform")})
    assert body["probability"] == pytest.approx(float(model.predict(frame)[0]), abs=1e-9)


def test_request_price_replaces_price_and_recomputes_price_derived_features(client, online):
    market = online.ids[0]  # index 0 is an election market: it has a poll average
    base = client.post("/predict", json={"market_id": market}).json()
    fresh = client.post("/predict", json={"market_id": market, "market_price": 0.9}).json()
    poll = base["features"]["poll_average"]["value"]
    assert poll is not None
    assert fresh["features"]["price"] == {**fresh["features"]["price"], "value": 0.9, "status": "REQUEST"}
    assert fresh["features"]["poll_market_spread"]["value"] == pytest.approx(poll - 0.9)
    assert fresh["features"]["poll_market_spread"]["status"] == "REQUEST"
    assert fresh["features"]["poll_market_ratio"]["value"] == pytest.approx(poll / 0.9)
    # Not price-dependent: kept as read.
    assert fresh["features"]["days_to_resolution"]["status"] == "PRESENT"
    assert fresh["features"]["volume_24h"]["value"] == base["features"]["volume_24h"]["value"]
    assert fresh["probability"] != base["probability"]


def test_unknown_market_is_404_naming_it(client):
    r = client.post("/predict", json={"market_id": "no-such-market"})
    assert r.status_code == 404
    assert "no-such-market" in r.json()["detail"] and "unknown" in r.json()["detail"]


def test_feature_older_than_ttl_is_withheld_and_warned(client, online):
    body = client.post("/predict", json={"market_id": online.stale}).json()
    price = body["features"]["price"]
    assert price["status"] == "OUTSIDE_MAX_AGE" and price["value"] is None
    assert any("'price' is older than its TTL" in w for w in body["warnings"])
    assert body["source"] == "model"


def test_market_past_its_resolution_date_says_so(client, online):
    body = client.post("/predict", json={"market_id": online.past_resolution}).json()
    assert body["market_status"] == "past_resolution_date"
    assert any("past its scheduled resolution date" in w for w in body["warnings"])


@pytest.mark.parametrize("payload, where", [
    ({}, "market_id"),
    ({"market_id": 12}, "market_id"),
    ({"market_id": ""}, "market_id"),
    ({"market_id": "m", "market_price": 1.5}, "market_price"),
    ({"market_id": "m", "market_price": "cheap"}, "market_price"),
    ({"market_id": "m", "price": 0.5}, "price"),
])
def test_invalid_bodies_are_422_naming_the_field(client, payload, where):
    r = client.post("/predict", json=payload)
    assert r.status_code == 422
    assert any(where in [str(p) for p in err["loc"]] for err in r.json()["detail"]), r.json()


def test_malformed_json_is_422(client):
    r = client.post("/predict", content=b'{"market_id": "x",', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"


def test_batch_scores_in_request_order_with_one_read_and_one_model_call(client, online, monkeypatch):
    service = client.app.state.service
    calls = {"read": 0, "predict": 0}
    real_read, champion = service.features.read, service.models.state.champion
    real_predict = champion.predict

    def counting_read(*args, **kwargs):
        calls["read"] += 1
        return real_read(*args, **kwargs)

    def counting_predict(frame):
        calls["predict"] += 1
        return real_predict(frame)

    monkeypatch.setattr(service.features, "read", counting_read)
    monkeypatch.setattr(champion, "predict", counting_predict)
    items = [{"market_id": m} for m in online.ids[:30]] + [{"market_id": "ghost"}, {"market_id": online.ids[0]}]
    r = client.post("/predict/batch", json={"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert calls == {"read": 1, "predict": 1}
    assert [p["market_id"] for p in body["predictions"]] == online.ids[:30] + [online.ids[0]]
    assert body["errors"] == [{"index": 30, "market_id": "ghost", "status_code": 404,
                               "detail": body["errors"][0]["detail"]}]
    single = client.post("/predict", json={"market_id": online.ids[5]}).json()
    assert body["predictions"][5]["probability"] == pytest.approx(single["probability"])


def test_oversized_and_empty_batches_are_refused(client, online):
    too_many = [{"market_id": online.ids[0]}] * (FAST.max_batch_size + 1)
    r = client.post("/predict/batch", json={"items": too_many})
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "items"] and f"maximum is {FAST.max_batch_size}" in err["msg"]
    assert client.post("/predict/batch", json={"items": []}).status_code == 422


def test_health_ready_model(client, model_store):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    info = client.get("/model").json()
    assert info["champion"]["version"] == model_store.versions["champion"]
    assert info["champion"]["feature_service"] == "market_forecaster_v1"
    assert info["champion"]["lineage"]["training_set_hash"] == "synthetic-seed-2"
    assert len(info["champion"]["artifact_sha256"]) == 64
    assert set(info["champion"]["training_metrics"]) == {"valid_brier", "valid_brier_skill"}
    assert info["fallback"]["version"] == model_store.versions["old"]  # the previous_champion tag
    assert info["max_batch_size"] == FAST.max_batch_size
    # Both model kinds compile; the check ran on the probe rows (serving/compiled_model.py).
    assert info["champion"]["scorer"] == info["fallback"]["scorer"] == "compiled"
    assert "max |difference| to the sklearn pipeline 0 on 256 checked rows" in info["champion"]["scorer_detail"]


def test_metrics_exposition(client, online, model_store):
    client.post("/predict", json={"market_id": online.ids[1]})
    client.post("/predict", json={"market_id": "ghost"})
    text = client.get("/metrics").text
    assert 'pm_serving_requests_total{endpoint="/predict",status="200"} 1.0' in text
    assert 'pm_serving_requests_total{endpoint="/predict",status="404"} 1.0' in text
    assert 'pm_serving_request_latency_seconds_bucket{endpoint="/predict",le="0.5"}' in text
    assert 'pm_serving_predictions_total{source="model"} 1.0' in text
    assert 'pm_serving_feature_age_seconds_count{view="price_features"} 1.0' in text
    champion = model_store.versions["champion"]
    assert f'pm_serving_model_info{{feature_service="market_forecaster_v1",role="champion",version="{champion}"}} 1.0' in text
    assert "pm_serving_prediction_log_dropped_rows 0.0" in text


def test_admin_reload_needs_the_token(client):
    assert client.post("/admin/reload").status_code == 401
    wrong = client.post("/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong admin token"
    ok = client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert ok.status_code == 200 and ok.json()["changed"] is False


def test_admin_is_refused_to_everyone_when_no_token_is_configured(make_client, online, monkeypatch):
    monkeypatch.setenv("PM_ADMIN_TOKEN", "")
    get_settings.cache_clear()
    client = make_client(ServingOptions(poll_interval_s=0), settings=get_settings())
    r = client.post("/admin/reload", headers={"Authorization": "Bearer "})
    assert r.status_code == 403 and "PM_ADMIN_TOKEN is empty" in r.json()["detail"]
    assert client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 403


def test_openapi_documents_examples_and_errors(client):
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert {"200", "404", "422", "503"} <= set(predict["responses"])
    assert spec["components"]["schemas"]["PredictRequest"]["examples"][0] == {"market_id": "mkt-000042"}
    assert {"/predict", "/predict/batch", "/health", "/ready", "/metrics", "/model", "/admin/reload"} <= set(spec["paths"])


def test_a_resolved_market_says_so_with_410(client, online, serving_settings):
    import pandas as pd

    from features.resolved import MARKER_COLUMNS, evict_from_online, write_markers
    from features.store import get_store

    store = get_store(serving_settings)
    resolved_at = pd.Timestamp("2026-03-01 12:00", tz="UTC")
    market = online.ids[7]
    evict_from_online(store, [market])  # what materialization does to a resolved market ...
    write_markers(store, pd.DataFrame([{"market_id": market, "updated_at": resolved_at, "resolved_at": resolved_at,
                                        "outcome": 1, "ingested_at": resolved_at}])[MARKER_COLUMNS])  # ... and this
    r = client.post("/predict", json={"market_id": market})
    assert r.status_code == 410, r.text
    assert r.json()["detail"] == (f"market '{market}' resolved at 2026-03-01T12:00:00+00:00 with outcome YES (1): "
                                  "resolved markets get no forecast")
    batch = client.post("/predict/batch", json={"items": [{"market_id": market}, {"market_id": "ghost"},
                                                          {"market_id": online.ids[0]}]}).json()
    assert [(e["market_id"], e["status_code"]) for e in batch["errors"]] == [(market, 410), ("ghost", 404)]
    assert [p["market_id"] for p in batch["predictions"]] == [online.ids[0]]

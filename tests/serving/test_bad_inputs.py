"""Bad inputs get a 4xx that says why, never a 500: non-finite JSON literals, non-finite values in the
online store, market ids the data contract allows, strict prices, the request content type.

Real Redis online store (rows written through Feast's own write path), real MLflow registry.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from serving.options import ServingOptions

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}


def _write_market(store, market_id: str, *, poll: float | None = 0.6, **price_overrides) -> None:
    """One fresh open market (price, poll, attributes) in the online store, with `price_overrides`."""
    now = pd.Timestamp.now(tz="UTC")
    prices = {"price": 0.4, "volume_24h": 1000.0, "price_change_1d": 0.01, "price_change_7d": 0.02,
              "price_volatility_7d": 0.01, "price_volatility_30d": 0.02, "volume_mean_7d": 900.0, **price_overrides}
    store.write_to_online_store("price_features", pd.DataFrame([{
        "market_id": market_id, "ts": now - pd.Timedelta(hours=1), **prices, "ingested_at": now}]))
    store.write_to_online_store("market_info", pd.DataFrame([{
        "market_id": market_id, "event_ts": now - pd.Timedelta(days=30), "event_type": "election",
        "platform": "polymarket", "created_at": now - pd.Timedelta(days=30),
        "resolution_date": now + pd.Timedelta(days=20), "ingested_at": now}]))
    if poll is not None:
        store.write_to_online_store("poll_features", pd.DataFrame([{
            "market_id": market_id, "ts": now - pd.Timedelta(days=1), "poll_average": poll, "poll_trend": 0.01,
            "n_polls": 5, "ingested_at": now}]))


# ---------------------------------------------------------------- 1. NaN / Infinity literals in the body

@pytest.mark.parametrize("path, body, where", [
    ("/predict", '{"market_id": "mkt-00000", "market_price": NaN}', "market_price"),
    ("/predict", '{"market_id": "mkt-00000", "market_price": Infinity}', "market_price"),
    ("/predict", '{"market_id": "mkt-00000", "market_price": -Infinity}', "market_price"),
    ("/predict", '{"market_id": "mkt-00000", "market_price": 1e400}', "market_price"),  # parses to inf
    ("/predict", '{"market_id": NaN}', "market_id"),
    ("/predict", '{"market_id": "mkt-00000", "foo": Infinity}', "foo"),
    ("/predict/batch", '{"items": [NaN]}', "0"),
    ("/predict/batch", '{"items": [{"market_id": "mkt-00000", "market_price": NaN}]}', "market_price"),
    ("/predict", '{"market_id": "\\ud800"}', "market_id"),  # a lone surrogate: not encodable as UTF-8
])
def test_non_finite_or_unencodable_input_is_422_naming_the_field(client, online, path, body, where):
    r = client.post(path, content=body.encode(), headers=JSON)
    assert r.status_code == 422, r.text
    detail = json.loads(r.text)["detail"]  # strict JSON: no NaN / Infinity literals in the answer
    hit = [err for err in detail if where in [str(p) for p in err["loc"]]]
    assert hit, detail
    assert all(isinstance(err["msg"], str) and err["msg"] for err in detail)


@pytest.mark.parametrize("path, body, where", [
    ("/predict", "[" * 500 + "]" * 500, "body"),
    ("/predict", '{"market_id": ' + "[" * 500 + "]" * 500 + "}", "market_id"),
    ("/predict/batch", '{"items": ' + "[" * 500 + "]" * 500 + "}", "items"),
    ("/predict", "[" * 100_000 + "]" * 100_000, "body"),  # deeper than json.loads itself can go
])
def test_deeply_nested_body_is_a_4xx_not_a_500(client, online, path, body, where):
    r = client.post(path, content=body.encode(), headers=JSON)
    assert 400 <= r.status_code < 500, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) or any(where in [str(p) for p in err["loc"]] for err in detail), detail


def test_non_finite_market_price_is_refused_with_a_clear_message(client, online):
    r = client.post("/predict", content=b'{"market_id": "mkt-00000", "market_price": NaN}', headers=JSON)
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "market_price"] and err["input"] == "NaN"
    assert "finite" in err["msg"] and "NaN" in err["msg"]


# ---------------------------------------------------------------- 2. non-finite values in the online store

def test_stored_infinite_feature_is_withheld_and_warned_not_500(make_client, online, serving_settings):
    from features.store import get_store
    from monitoring.prediction_log import read_window

    store = get_store(serving_settings)
    _write_market(store, "inf-volume", volume_24h=float("inf"))
    _write_market(store, "inf-change", price_change_1d=float("-inf"))
    client = make_client(ServingOptions(poll_interval_s=0, log_flush_interval_s=3600, log_flush_rows=10**6))

    r = client.post("/predict", json={"market_id": "inf-volume"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["features"]["volume_24h"]["value"] is None
    assert body["features"]["volume_24h"]["status"] == "NON_FINITE"
    assert body["features"]["price"] == {**body["features"]["price"], "value": 0.4, "status": "PRESENT"}
    assert any("'volume_24h'" in w and "inf" in w and "withheld" in w for w in body["warnings"]), body["warnings"]
    assert body["source"] == "model"

    healthy = [{"market_id": m} for m in online.ids[:3]]
    items = healthy[:1] + [{"market_id": "inf-volume"}] + healthy[1:] + [{"market_id": "inf-change"}]
    batch = client.post("/predict/batch", json={"items": items})
    assert batch.status_code == 200, batch.text
    answered = batch.json()
    assert [p["market_id"] for p in answered["predictions"]] == [i["market_id"] for i in items]
    assert answered["errors"] == []
    change = answered["predictions"][-1]["features"]["price_change_1d"]
    assert change["value"] is None and change["status"] == "NON_FINITE"
    single = client.post("/predict", json={"market_id": online.ids[1]}).json()
    assert answered["predictions"][2]["probability"] == pytest.approx(single["probability"])
    assert 'pm_serving_non_finite_features_total{feature="volume_24h"} 2.0' in client.get("/metrics").text

    make_client.stop(client)  # drains the prediction log
    now = datetime.now(timezone.utc)
    log = read_window(serving_settings.prediction_log_dir, now - timedelta(hours=1), now + timedelta(minutes=1))
    ours = log[log["market_id"] == "inf-volume"]
    assert len(ours) == 2 and ours["feature__volume_24h"].isna().all()


def test_infinite_stored_input_of_an_on_demand_feature_does_not_leak_into_it(client, online, serving_settings):
    from features.store import get_store

    store = get_store(serving_settings)
    _write_market(store, "inf-poll", poll=float("inf"))
    body = client.post("/predict", json={"market_id": "inf-poll"}).json()
    assert body["features"]["poll_average"]["status"] == "NON_FINITE"
    # poll - price and poll / price of an infinite poll are not features: missing, like the poll.
    for name in ("poll_market_spread", "poll_market_ratio"):
        assert body["features"][name]["value"] is None, (name, body["features"][name])
    assert body["features"]["days_to_resolution"]["value"] == pytest.approx(20, abs=0.01)  # kept as read


@pytest.mark.parametrize("request_price", [None, 5e-324])
def test_on_demand_feature_overflowing_to_infinity_is_withheld(client, online, serving_settings, request_price):
    """poll / price overflows for a denormal price, stored or given in the request. The on-demand UDF
    (feature_repo/on_demand.py) may null it itself (status NULL_VALUE, or REQUEST when recomputed
    from the request price); if it does not, serving
    withholds it (NON_FINITE, with a warning). Either way: an answer, never inf, never a 500."""
    from features.store import get_store

    _write_market(get_store(serving_settings), "tiny-price", price=5e-324 if request_price is None else 0.4)
    payload = {"market_id": "tiny-price", **({"market_price": request_price} if request_price else {})}
    r = client.post("/predict", json=payload)
    assert r.status_code == 200, r.text
    ratio = r.json()["features"]["poll_market_ratio"]
    nulled_by_the_udf = "NULL_VALUE" if request_price is None else "REQUEST"  # recomputed from the request
    assert ratio["value"] is None and ratio["status"] in (nulled_by_the_udf, "NON_FINITE")
    if ratio["status"] == "NON_FINITE":
        assert any("'poll_market_ratio'" in w for w in r.json()["warnings"])
    batch = client.post("/predict/batch", json={"items": [payload, {"market_id": online.ids[0]}]})
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 2


def test_serving_withholds_any_non_finite_on_demand_output():
    """serving's own guard, independent of how a UDF treats overflow: an infinite output (here as
    a UDF without a finiteness check returns it, from a request price) is withheld as NON_FINITE,
    not REQUEST; NaN is plain missing."""
    from datetime import datetime, timezone

    from serving.features_source import NON_FINITE, OnlineFeatures, ServicePlan, _withhold_non_finite

    plan = ServicePlan("svc", ["price", "poll_market_ratio", "poll_market_spread"],
                       {"price": "prices", "poll_market_ratio": "derived", "poll_market_spread": "derived"},
                       ["prices"], {"derived": ["prices"]}, {"prices": 3600.0})
    feats = OnlineFeatures(plan, ["a", "b"], [5e-324, None],
                           {"market_id": ["a", "b"], "price": [5e-324, 0.5], "poll_market_ratio": [float("inf"), 1.2],
                            "poll_market_spread": [0.6, float("nan")]},
                           {"price": ["PRESENT"] * 2, "poll_market_ratio": ["PRESENT"] * 2,
                            "poll_market_spread": ["PRESENT"] * 2},
                           {"prices": [1.0, 1.0]}, [True, True], datetime.now(timezone.utc),
                           overridden=[{"price", "poll_market_ratio", "poll_market_spread"}, set()],
                           non_finite=[{}, {}])
    withheld = _withhold_non_finite(feats, ["poll_market_ratio", "poll_market_spread"])
    assert withheld == {0: {"poll_market_ratio": float("inf")}}
    assert feats.values["poll_market_ratio"] == [None, 1.2] and feats.values["poll_market_spread"] == [0.6, None]
    assert feats.status["poll_market_ratio"] == [NON_FINITE, "PRESENT"]
    assert feats.status["poll_market_spread"] == ["PRESENT", "NULL_VALUE"]
    assert feats.overridden[0] == {"price", "poll_market_spread"} and feats.non_finite[0] == {"poll_market_ratio": "inf"}


def test_a_prediction_whose_response_fails_is_not_logged(make_client, online, serving_settings, monkeypatch):
    """The log holds what clients were answered: a response that cannot be sent leaves no log row."""
    import serving.app
    from monitoring.prediction_log import read_window

    client = make_client(ServingOptions(poll_interval_s=0, log_flush_interval_s=3600, log_flush_rows=10**6))
    answered = client.post("/predict", json={"market_id": online.ids[0]}).json()["request_id"]

    def unsendable(body):
        raise ValueError("simulated response failure")

    monkeypatch.setattr(serving.app, "_json", unsendable)
    with pytest.raises(ValueError, match="simulated response failure"):
        client.post("/predict", json={"market_id": online.ids[1]})
    with pytest.raises(ValueError, match="simulated response failure"):
        client.post("/predict/batch", json={"items": [{"market_id": online.ids[2]}]})
    make_client.stop(client)
    now = datetime.now(timezone.utc)
    log = read_window(serving_settings.prediction_log_dir, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert list(log["request_id"]) == [answered]


# ---------------------------------------------------------------- 3. market ids of the data contract

CONTRACT_IDS = ["élection-2027", "will x win?", "polymarket/0xabc", "a b", "m" * 128]


def test_market_ids_the_contract_allows_are_served(client, online, serving_settings):
    from features.store import get_store

    store = get_store(serving_settings)
    for market in CONTRACT_IDS:
        _write_market(store, market)
    for market in CONTRACT_IDS:
        r = client.post("/predict", json={"market_id": market})
        assert r.status_code == 200, (market, r.text)
        assert r.json()["market_id"] == market
    batch = client.post("/predict/batch", json={"items": [{"market_id": m} for m in CONTRACT_IDS]}).json()
    assert [p["market_id"] for p in batch["predictions"]] == CONTRACT_IDS
    unknown = client.post("/predict", json={"market_id": "élection-2099?"})
    assert unknown.status_code == 404 and "élection-2099?" in unknown.json()["detail"]


@pytest.mark.parametrize("market_id, says", [
    ("m" * 129, "at most 128"),
    ("abc\n", "control character"),
    ("a\x00b", "control character"),
    ("a\x85b", "control character"),
])
def test_market_ids_the_contract_refuses_are_422(client, online, market_id, says):
    r = client.post("/predict", json={"market_id": market_id})
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "market_id"] and says in err["msg"]


# ---------------------------------------------------------------- 4. strict market_price

@pytest.mark.parametrize("price", [True, False, "0.5", "1"])
def test_market_price_must_be_a_json_number(client, online, price):
    r = client.post("/predict", json={"market_id": online.ids[0], "market_price": price})
    assert r.status_code == 422, r.text
    assert [err["loc"] for err in r.json()["detail"]] == [["body", "market_price"]]


def test_integer_market_prices_are_numbers(client, online):
    for price in (0, 1):
        r = client.post("/predict", json={"market_id": online.ids[0], "market_price": price})
        assert r.status_code == 200, r.text
        assert r.json()["features"]["price"]["value"] == float(price)


# ---------------------------------------------------------------- 6. content type

def test_json_body_without_json_content_type_says_so(client, online):
    r = client.post("/predict", content=json.dumps({"market_id": online.ids[0]}).encode(),
                    headers={"content-type": "text/plain"})
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert "Content-Type: application/json" in err["msg"] and "text/plain" in err["msg"]
    none = client.post("/predict", content=json.dumps({"market_id": online.ids[0]}).encode())
    assert none.status_code == 422 and "Content-Type: application/json" in none.json()["detail"][0]["msg"]
    form = client.post("/predict/batch", data={"items": "x"})
    assert form.status_code == 422 and "Content-Type: application/json" in form.json()["detail"][0]["msg"]


def test_a_body_that_is_not_utf8_is_422(client, online):
    r = client.post("/predict", content=b'\xff\xfe{"market_id": "x"}', headers={"content-type": "text/plain"})
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body"] and "Content-Type: application/json" in err["msg"]
    assert err["input"].startswith("\\xff\\xfe")

"""The prediction log: complete after a graceful stop, in monitoring's schema; a full queue drops and counts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from monitoring.prediction_log import read_window
from serving.options import ServingOptions
from serving.prediction_log import PredictionLogWriter

pytestmark = pytest.mark.slow


def test_every_prediction_is_logged_after_shutdown(make_client, online, serving_settings, model_store):
    # Nothing is flushed by time during the test: only the shutdown drain can write these rows.
    client = make_client(ServingOptions(poll_interval_s=0, log_flush_interval_s=3600, log_flush_rows=10**6))
    ids = []
    for m in online.ids[:7]:
        ids.append(client.post("/predict", json={"market_id": m}).json()["request_id"])
    batch = client.post("/predict/batch", json={"items": [{"market_id": m} for m in online.ids[:20]]}).json()
    ids += [p["request_id"] for p in batch["predictions"]]
    client.post("/predict", json={"market_id": "ghost"})  # a 404 is not a prediction
    assert not list(serving_settings.prediction_log_dir.glob("date=*/part-*.parquet"))
    make_client.stop(client)  # graceful shutdown: the lifespan drains the log queue

    now = datetime.now(timezone.utc)
    log = read_window(serving_settings.prediction_log_dir, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert sorted(log["request_id"]) == sorted(ids) and len(ids) == 27
    assert set(log["model_role"]) == {"champion"} and set(log["source"]) == {"model"}
    assert set(log["model_version"]) == {model_store.versions["champion"]}
    assert {f"feature__{f}" for f in model_store.feature_names} <= set(log.columns)
    assert log["ab_group"].isna().all()
    first = log.set_index("request_id").loc[ids[0]]
    assert first["market_id"] == online.ids[0] and 0 <= first["probability"] <= 1
    assert str(log["logged_at"].dtype) == "datetime64[us, UTC]"


def test_full_queue_drops_rows_and_counts_them(tmp_path):
    writer = PredictionLogWriter(tmp_path, queue_size=2, flush_interval_s=3600)
    row = {"logged_at": datetime.now(timezone.utc), "request_id": "r", "market_id": "m", "model_version": "1",
           "model_role": "champion", "source": "model", "probability": 0.5, "latency_ms": 1.0, "ab_group": None,
           "feature__price": 0.5}
    results = [writer.submit({**row, "request_id": f"r{i}"}) for i in range(5)]  # writer not started: no draining
    assert results == [True, True, False, False, False] and writer.dropped == 3
    writer.start()
    writer.close()
    assert writer.written == 2
    assert len(list(tmp_path.glob("date=*/part-*.parquet"))) == 1


def test_dropped_rows_show_in_metrics(make_client, online):
    client = make_client(ServingOptions(poll_interval_s=0, log_queue_size=1, log_flush_interval_s=3600))
    writer = client.app.state.service.log_writer
    writer.close()  # a closed writer refuses rows: every further prediction is a counted drop
    client.post("/predict/batch", json={"items": [{"market_id": m} for m in online.ids[:4]]})
    assert writer.dropped == 4
    assert "pm_serving_prediction_log_dropped_rows 4.0" in client.get("/metrics").text


def test_challenger_in_shadow_is_logged_beside_and_never_returned(make_client, online, serving_settings,
                                                                  model_store):
    from training import registry

    challenger = model_store.versions["next"]
    registry.client(serving_settings).set_registered_model_alias(serving_settings.model_name, "challenger",
                                                                 challenger)
    client = make_client(ServingOptions(poll_interval_s=0, shadow_share=1.0, log_flush_interval_s=3600))
    assert client.get("/model").json()["challenger"]["version"] == challenger
    bodies = [client.post("/predict", json={"market_id": m}).json() for m in online.ids[:5]]
    assert {b["model_version"] for b in bodies} == {model_store.versions["champion"]}
    make_client.stop(client)

    now = datetime.now(timezone.utc)
    log = read_window(serving_settings.prediction_log_dir, now - timedelta(hours=1), now + timedelta(minutes=1))
    shadow = log[log["model_role"] == "challenger_shadow"]
    served = log[log["model_role"] == "champion"]
    assert len(served) == 5 and len(shadow) == 5
    assert set(shadow["model_version"]) == {challenger}
    assert sorted(shadow["market_id"]) == sorted(online.ids[:5])
    # Same feature rows as the champion saw, a different model: different probabilities.
    merged = served.merge(shadow, on="market_id", suffixes=("_c", "_s"))
    assert (merged["feature__price_c"] == merged["feature__price_s"]).all()
    assert (merged["probability_c"] != merged["probability_s"]).any()

"""Model updates without downtime: alias moved under a stream of requests, by /admin/reload and by the poller."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.options import ServingOptions
from tests.serving import world
from tests.serving.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.slow


def _stream(client, market_ids, stop: threading.Event, seen: list) -> None:
    """POST /predict until `stop`. Run in an executor: an exception (a server error re-raised by the
    TestClient, or a body that is not JSON) ends the stream and is re-raised by Future.result(), where
    a plain thread would only print it and let the test pass on the other threads' answers."""
    i = 0
    try:
        while not stop.is_set():
            r = client.post("/predict", json={"market_id": market_ids[i % len(market_ids)]})
            seen.append((r.status_code, r.json().get("model_version") if r.status_code == 200 else r.text))
            i += 1
    finally:
        stop.set()  # one failed stream ends the test now, not after the wait below times out


def test_champion_moved_during_a_stream_of_requests_no_request_fails(client, online, model_store,
                                                                     serving_settings):
    stop, seen = threading.Event(), []
    with ThreadPoolExecutor(max_workers=3) as pool:
        streams = [pool.submit(_stream, client, online.ids, stop, seen) for _ in range(3)]
        try:
            time.sleep(0.5)
            world.set_champion(serving_settings, model_store.versions["next"])
            r = client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert r.status_code == 200, r.text
            assert r.json() == {**r.json(), "changed": True, "champion_version": model_store.versions["next"],
                                "fallback_version": model_store.versions["champion"]}
            n_at_swap = len(seen)
            deadline = time.monotonic() + 30
            while len(seen) < n_at_swap + 10 and time.monotonic() < deadline and not stop.is_set():
                time.sleep(0.05)
        finally:
            stop.set()
            errors = [f.exception() for f in streams]  # waits for every stream
    failed = [e for e in errors if e is not None]
    if failed:
        raise failed[0]
    assert len(seen) >= n_at_swap + 10, f"only {len(seen) - n_at_swap} answers after the swap"
    assert [s for s in seen if s[0] != 200] == []
    versions = [v for _, v in seen]
    assert set(versions) == {model_store.versions["champion"], model_store.versions["next"]}
    assert versions[-1] == model_store.versions["next"]
    info = client.get("/model").json()
    assert info["champion"]["version"] == model_store.versions["next"]
    assert info["fallback"]["version"] == model_store.versions["champion"]


def test_poller_picks_up_a_new_champion(make_client, online, model_store, serving_settings):
    client = make_client(ServingOptions(poll_interval_s=0.3, log_flush_interval_s=0.2))
    assert client.get("/model").json()["champion"]["version"] == model_store.versions["champion"]
    world.set_champion(serving_settings, model_store.versions["next"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if client.get("/model").json()["champion"]["version"] == model_store.versions["next"]:
            break
        time.sleep(0.2)
    body = client.post("/predict", json={"market_id": online.ids[0]}).json()
    assert body["model_version"] == model_store.versions["next"]


def test_a_candidate_that_fails_its_check_is_refused_and_the_champion_keeps_serving(client, online, model_store,
                                                                                    serving_settings):
    from training import registry

    # The next version claims a FeatureService Feast does not know: serving must refuse it.
    registry.set_version_tags(serving_settings, serving_settings.model_name, model_store.versions["next"],
                              {"feature_service": "market_forecaster_v9"})
    world.set_champion(serving_settings, model_store.versions["next"])
    r = client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert r["changed"] is False and r["champion_version"] == model_store.versions["champion"]
    assert "market_forecaster_v9" in r["detail"] and "not in the Feast registry" in r["detail"]
    body = client.post("/predict", json={"market_id": online.ids[0]}).json()
    assert body["model_version"] == model_store.versions["champion"]
    assert "market_forecaster_v9" in client.get("/model").json()["last_error"]
    _assert_refusal_is_reported(client, model_store.versions["next"], "market_forecaster_v9")


def _assert_refusal_is_reported(client, refused: str, reason: str) -> None:
    """Still ready (a verified model serves), but /ready and /metrics say the registry's champion is refused."""
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
    (line,) = ready.json()["detail"]
    assert f"champion v{refused} refused" in line and reason in line
    assert f'pm_serving_champion_refused{{version="{refused}"}} 1.0' in client.get("/metrics").text


def test_a_tampered_champion_artifact_is_refused_reported_and_cleared_when_the_alias_moves_back(
        client, online, model_store, serving_settings):
    from training import registry

    v = model_store.versions
    assert client.get("/ready").json()["detail"] == []
    assert "pm_serving_champion_refused{" not in client.get("/metrics").text
    # The registered sha256 no longer matches the stored artifact: what a modified artifact looks like.
    registry.set_version_tags(serving_settings, serving_settings.model_name, v["next"], {"artifact_sha256": "0" * 64})
    world.set_champion(serving_settings, v["next"])
    r = client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert r["changed"] is False and r["champion_version"] == v["champion"]
    assert "does not match the registered artifact_sha256" in r["detail"]
    assert client.post("/predict", json={"market_id": online.ids[0]}).json()["model_version"] == v["champion"]
    _assert_refusal_is_reported(client, v["next"], "artifact_sha256")
    # The alias back on the served version: nothing is refused any more.
    registry.client(serving_settings).set_registered_model_alias(serving_settings.model_name, "champion",
                                                                 v["champion"])
    client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert client.get("/ready").json()["detail"] == []
    assert "pm_serving_champion_refused{" not in client.get("/metrics").text


def test_no_champion_at_start_up_is_not_ready_and_503(make_client, online, serving_settings):
    from training import registry

    registry.client(serving_settings).delete_registered_model_alias(serving_settings.model_name, "champion")
    client = make_client()
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["model_loaded"] is False
    assert "no 'champion' alias" in ready.json()["detail"][0]
    r = client.post("/predict", json={"market_id": online.ids[0]})
    assert r.status_code == 503 and "no champion model is loaded" in r.json()["detail"]

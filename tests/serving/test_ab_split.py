"""A/B split: a sticky share of markets is answered by the `challenger`; group and role in response and log."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from monitoring.prediction_log import read_window
from serving.options import ServingOptions
from serving.predictor import ab_group

pytestmark = pytest.mark.slow

AB = ServingOptions(poll_interval_s=0, ab_share=0.5, log_flush_interval_s=3600, max_batch_size=50)


@pytest.fixture
def challenger(serving_settings, model_store) -> str:
    from training import registry

    version = model_store.versions["next"]
    registry.client(serving_settings).set_registered_model_alias(serving_settings.model_name, "challenger", version)
    return version


def test_group_b_markets_are_answered_by_the_challenger_stickily(make_client, online, serving_settings, model_store,
                                                                 challenger):
    client = make_client(AB)
    first = {m: client.post("/predict", json={"market_id": m}).json() for m in online.ids}
    groups = {m: body["ab_group"] for m, body in first.items()}
    assert set(groups.values()) == {"A", "B"}, groups  # 40 markets at 50 %: both groups occur
    for m, body in first.items():
        if groups[m] == "B":
            assert (body["model_role"], body["model_version"], body["source"]) == ("challenger", challenger, "model")
        else:
            assert (body["model_role"], body["model_version"]) == ("champion", model_store.versions["champion"])
    # Sticky: the batch endpoint, a second request and a restarted service put every market in the same group.
    batch = client.post("/predict/batch", json={"items": [{"market_id": m} for m in online.ids]}).json()
    assert {p["market_id"]: p["ab_group"] for p in batch["predictions"]} == groups
    assert {p["market_id"]: p["model_role"] for p in batch["predictions"]} == {m: b["model_role"] for m, b in first.items()}
    metrics = client.get("/metrics").text
    n_b = sum(g == "B" for g in groups.values())
    assert f'pm_serving_ab_predictions_total{{group="B",source="model"}} {2 * n_b}.0' in metrics
    make_client.stop(client)
    restarted = make_client(AB)
    again = {m: restarted.post("/predict", json={"market_id": m}).json()["ab_group"] for m in online.ids[:10]}
    assert again == {m: groups[m] for m in online.ids[:10]}
    make_client.stop(restarted)

    now = datetime.now(timezone.utc)
    log = read_window(serving_settings.prediction_log_dir, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert len(log) == 2 * len(online.ids) + 10  # single + batch, then 10 after the restart
    logged_b = log[log["ab_group"] == "B"]
    assert set(logged_b["model_role"]) == {"challenger"} and set(logged_b["model_version"]) == {challenger}
    assert set(log.loc[log["ab_group"] == "A", "model_role"]) == {"champion"}


def test_a_different_salt_reassigns_and_the_share_is_respected():
    markets = [f"mkt-{i:05d}" for i in range(4000)]
    first = [ab_group(m, 0.2, "ab-1") for m in markets]
    assert 0.17 < first.count("B") / len(markets) < 0.23
    assert first != [ab_group(m, 0.2, "ab-2") for m in markets]
    assert {ab_group(m, 0.0, "ab-1") for m in markets} == {"A"} and {ab_group(m, 1.0, "ab-1") for m in markets} == {"B"}


def test_failing_challenger_falls_back_to_the_champion_and_says_why(make_client, online, model_store, challenger,
                                                                   monkeypatch):
    client = make_client(AB)

    def broken(columns):
        raise RuntimeError("simulated challenger failure")

    monkeypatch.setattr(client.app.state.service.models.state.challenger, "predict", broken)
    market = next(m for m in online.ids if ab_group(m, AB.ab_share, AB.ab_salt) == "B")
    body = client.post("/predict", json={"market_id": market}).json()
    assert body["ab_group"] == "B" and body["model_role"] == "champion"
    assert body["model_version"] == model_store.versions["champion"]
    assert any("simulated challenger failure" in w for w in body["warnings"])


def test_without_a_challenger_there_is_no_split(make_client, online):
    client = make_client(AB)  # no `challenger` alias in the registry
    body = client.post("/predict", json={"market_id": online.ids[0]}).json()
    assert body["ab_group"] is None and body["model_role"] == "champion"


def test_ab_share_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="ab_share must be within"):
        ServingOptions(ab_share=1.5)

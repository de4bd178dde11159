"""Code tests: the lineage tags naming what started a retraining (``training.train.retrain_trigger``).

The request files are written by monitoring's own writer, so a change to the request format on
either side breaks these tests. The whole chain (monitoring DAG -> asset event -> train DAG ->
model version tags) runs in tests/dags."""

from __future__ import annotations

import hashlib
import json

from monitoring.report import retrain_request
from monitoring.run import retrain_request_path
from training.train import MAX_REQUESTS_TAG_CHARS, retrain_trigger


def _file_request(settings, end: str, version: str = "3") -> tuple[dict, dict, bytes]:
    """A request as monitoring files it, and the asset event's ``extra`` for it (monitor_model DAG)."""
    result = {"run_id": f"mon-{end}", "created_at": "2026-01-02T00:00:00+00:00", "model_name": settings.model_name,
              "model_version": version, "window": {"start": "2026-01-01T00:00:00+00:00", "end": end}}
    path = retrain_request_path(settings, result)
    request = retrain_request(result, ["concept_drift:brier:high", "feature_drift:price:high"],
                              settings.reports_dir / "monitoring" / result["run_id"] / "report.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(request, indent=2).encode()
    path.write_bytes(raw)
    extra = {"retrain_request": str(path), "window": result["window"], "model_version": version, "severity": "high"}
    return request, extra, raw


def test_a_scheduled_or_manual_run_records_its_run_type_and_no_requests(settings):
    assert retrain_trigger(settings, "scheduled") == {"triggered_by": "scheduled"}
    assert retrain_trigger(settings, "manual", []) == {"triggered_by": "manual"}


def test_each_consumed_request_is_described_with_its_id_hash_reasons_and_report(settings):
    first, extra1, raw1 = _file_request(settings, "2026-01-08T00:00:00+00:00")
    second, extra2, raw2 = _file_request(settings, "2026-01-09T00:00:00+00:00")
    tags = retrain_trigger(settings, "asset_triggered", [extra1, extra2])
    assert tags["triggered_by"] == "asset_triggered"
    recorded = json.loads(tags["retrain_requests"])
    assert recorded["n"] == 2
    by_id = {d["request_id"]: d for d in recorded["described"]}
    assert set(by_id) == {first["request_id"], second["request_id"]}
    one = by_id[first["request_id"]]
    assert one["sha256"] == hashlib.sha256(raw1).hexdigest()
    assert one["retrain_request"] == extra1["retrain_request"] and one["model_version"] == "3"
    assert one["reasons"] == first["reasons"] and one["report"] == first["report"]
    assert by_id[second["request_id"]]["sha256"] == hashlib.sha256(raw2).hexdigest()
    assert "unread" not in one


def test_a_path_outside_the_request_inbox_is_not_read(settings, tmp_path):
    """An asset event's extra can be posted through Airflow's API: training reads no file on its say."""
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps({"request_id": "not-ours", "reasons": ["leak"]}))
    _, extra, _ = _file_request(settings, "2026-01-08T00:00:00+00:00")
    inbox = extra["retrain_request"].rsplit("/", 1)[0]
    escapes = [{"retrain_request": str(secret)}, {"retrain_request": f"{inbox}/../../../elsewhere.json"},
               {"retrain_request": None}, {}]
    recorded = json.loads(retrain_trigger(settings, "asset_triggered", escapes)["retrain_requests"])
    assert recorded["n"] == 4 and len(recorded["described"]) == 4
    for entry in recorded["described"]:
        assert entry["unread"].startswith("not a file under ") and "request_id" not in entry and "sha256" not in entry


def test_an_unreadable_request_is_recorded_as_such_and_does_not_stop_training(settings):
    _, gone, _ = _file_request(settings, "2026-01-08T00:00:00+00:00")
    _, broken, _ = _file_request(settings, "2026-01-09T00:00:00+00:00")
    _, no_id, _ = _file_request(settings, "2026-01-10T00:00:00+00:00")
    from pathlib import Path

    Path(gone["retrain_request"]).unlink()
    Path(broken["retrain_request"]).write_text("{not json")
    Path(no_id["retrain_request"]).write_text(json.dumps({"reasons": []}))
    described = json.loads(retrain_trigger(settings, "asset_triggered", [gone, broken, no_id])["retrain_requests"])
    reasons = [d["unread"] for d in described["described"]]
    assert reasons[0].startswith("FileNotFoundError") and reasons[1].startswith("JSONDecodeError")
    assert reasons[2].startswith("KeyError") and "request_id" in reasons[2]


def test_many_requests_are_counted_but_the_tag_stays_within_mlflows_limit(settings):
    extras = [_file_request(settings, f"2026-01-{day:02d}T00:00:00+00:00")[1] for day in range(1, 29)]
    recorded = retrain_trigger(settings, "asset_triggered", extras)["retrain_requests"]
    assert len(recorded) <= MAX_REQUESTS_TAG_CHARS
    parsed = json.loads(recorded)
    assert parsed["n"] == 28 and 0 < len(parsed["described"]) < 28

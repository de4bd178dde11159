"""DAG files parse cheaply, and real `dag.test()` runs do what the packages promise."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.dags.dag_runner import migrate, parse_dags, run_dag_test


@pytest.fixture
def airflow_settings(settings):
    migrate(settings)
    return settings


def _generate(out: Path, markets: int = 60, batches: int = 1) -> Path:
    subprocess.run([sys.executable, "-m", "ingestion", "generate", "--markets", str(markets), "--seed", "3",
                    "--start", "2024-01-01", "--end", "2024-03-31", "--batches", str(batches),
                    "--out", str(out), "--no-progress"], check=True, capture_output=True)
    return out


PARAM_PROBES = [  # (dag_id, conf, accepted?)
    ("ingest_batch", {"batch_dir": "/data/raw/batch-001"}, True),
    ("ingest_batch", {"batch_dir": ""}, False),  # the worker's working directory
    ("ingest_batch", {"batch_dir": "raw/batch-001"}, False),  # relative to what, on a worker?
    ("ingest_batch", {"batch_dir": "/"}, False),
    ("monitor_model", {"window": "7d"}, True),
    ("monitor_model", {"window": "24h"}, True),
    ("monitor_model", {"window": "abc"}, False),
    ("monitor_model", {"window": "0d"}, False),
    ("train_model", {"as_of": "2024-03-01T00:00:00+00:00"}, True),
    ("train_model", {"as_of": "2024-03-01"}, True),
    ("train_model", {"as_of": None}, True),
    ("train_model", {"as_of": "garbage"}, False),
    ("train_model", {"seed": -5}, False),
]


def test_dags_parse_without_heavy_imports(settings):
    parsed = parse_dags(settings)
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == {"ingest_batch", "materialize_features", "train_model", "monitor_model"}
    assert parsed["heavy"] == [], "heavy libraries must be imported inside tasks, not at DAG parse time"


def test_schedules_are_utc_and_trigger_forms_refuse_bad_params(settings, monkeypatch):
    """Schedules do not move with the deployment's default timezone; a bad param is refused by the
    trigger form, before a run starts, not deep inside a task after side effects and retries."""
    monkeypatch.setenv("AIRFLOW__CORE__DEFAULT_TIMEZONE", "America/New_York")
    parsed = parse_dags(settings, [(dag_id, conf) for dag_id, conf, _ in PARAM_PROBES])
    scheduled = {k: v for k, v in parsed["timezones"].items() if k != "ingest_batch"}  # ingest: no schedule
    assert scheduled == {"materialize_features": "UTC", "train_model": "UTC", "monitor_model": "UTC"}, parsed
    assert all(parsed["start_dates_aware"].values()), parsed["start_dates_aware"]
    for dag_id, conf, accepted in PARAM_PROBES:
        refusal = parsed["params"][f"{dag_id} {json.dumps(conf, sort_keys=True)}"]
        assert (refusal is None) == accepted, (dag_id, conf, refusal)


@pytest.mark.slow
def test_ingest_dag_publishes_a_good_batch_and_fails_on_a_bad_one(airflow_settings):
    s = airflow_settings
    raw = _generate(s.raw_dir / "sim")
    good = run_dag_test(s, "ingest_batch.py", {"batch_dir": str(raw / "batch-001"), "assume_utc": False})
    assert good["state"] == "success", good
    commits = list((s.offline_store_dir / "_batches").glob("*.json"))
    assert len(commits) == 1
    published = pd.read_parquet(s.offline_store_dir / "price_features")
    assert len(published) == len(pd.read_parquet(raw / "batch-001" / "price_snapshots.parquet"))
    # The same batch again publishes nothing: the task is skipped, so no offline_store event triggers materialization.
    again = run_dag_test(s, "ingest_batch.py", {"batch_dir": str(raw / "batch-001"), "assume_utc": False})
    assert again["tasks"] == {"ingest": "skipped"}, again

    # A batch whose prices leave [0, 1] is refused: the run fails and the batch is quarantined whole.
    bad = s.raw_dir / "bad"
    bad.mkdir()
    for table in ("markets", "price_snapshots", "polls"):
        frame = pd.read_parquet(raw / "batch-001" / f"{table}.parquet")
        if table == "price_snapshots":
            frame.loc[frame.index[:3], "price"] = 1.7
        frame.to_parquet(bad / f"{table}.parquet", index=False)
    refused = run_dag_test(s, "ingest_batch.py", {"batch_dir": str(bad), "assume_utc": False})
    assert refused["state"] == "failed", refused
    reasons = list(s.quarantine_dir.glob("*/_reason.json"))
    assert len(reasons) == 1
    assert "price" in json.dumps(json.loads(reasons[0].read_text()))
    assert len(list((s.offline_store_dir / "_batches").glob("*.json"))) == 1, "nothing of the bad batch published"


@pytest.mark.slow
def test_materialize_dag_puts_a_freshly_ingested_batch_online(airflow_settings):
    """The batch's events happened before it landed (here: all more than 3 days ago, longer than the price
    view's TTL, so `now - ttl`, where an incremental run starts, holds none of them): the run it triggers
    must still read them."""
    from datetime import date, timedelta

    from features.retrieve import online_features
    from features.store import apply, get_store

    s = airflow_settings
    today = date.today()
    out = s.raw_dir / "recent"
    subprocess.run([sys.executable, "-m", "ingestion", "generate", "--markets", "40", "--seed", "5",
                    "--start", str(today - timedelta(days=16)), "--end", str(today - timedelta(days=5)),
                    "--batches", "1", "--out", str(out), "--no-progress"], check=True, capture_output=True)
    ingested = run_dag_test(s, "ingest_batch.py", {"batch_dir": str(out / "batch-001"), "assume_utc": False})
    assert ingested["state"] == "success", ingested
    apply(s)
    materialized = run_dag_test(s, "materialize_features.py", {})
    assert materialized["state"] == "success", materialized

    prices = pd.read_parquet(s.offline_store_dir / "price_features")
    newest = prices.sort_values("ts").groupby("market_id").tail(1).set_index("market_id")
    markets = pd.read_parquet(s.offline_store_dir / "markets").sort_values("updated_at").groupby("market_id").tail(1)
    still_open = set(markets.loc[markets["resolved_at"].isna(), "market_id"])  # resolved ones keep only a marker
    ids = [m for m in newest.index if m in still_open][:10]
    assert ids
    read = online_features(ids, "market_forecaster_v1", request_ts=newest["ts"].max().to_pydatetime(),
                           store=get_store(s))
    assert (read.status["price"] != "NOT_FOUND").all(), read.status
    stored = read.values.set_index("market_id")["price"].dropna()
    assert len(stored) > 0 and (stored == newest.loc[stored.index, "price"]).all()


@pytest.mark.slow
def test_monitor_and_train_dags_work_as_of_their_data_interval(airflow_settings):
    """Both DAGs take their time from the run, not the wall clock: a run for a past day monitors that
    day's window and trains on the data as of then (re-runs and backfills give the same answer).
    A drifted window files a retraining request; the training run that request's asset event
    triggers records it on the new model version (from the model back to the report that asked)."""
    from datetime import datetime, timezone

    from features.materialize import materialize
    from features.store import apply
    from ingestion.ingest import ingest_batch
    from ingestion.simulate import SimulationConfig, generate
    from monitoring.replay import replay_predictions
    from training.registry import GateLimits, champion_version, client
    from training.train import train

    s = airflow_settings
    raw = s.raw_dir / "sim"
    generate(SimulationConfig(n_markets=400, start=datetime(2023, 12, 1).date(), end=datetime(2024, 4, 1).date(),
                              seed=11, n_batches=3, fmt="parquet", drift_start=datetime(2024, 3, 1).date()),
             raw, progress=False)
    *before_drift, drifted = sorted(raw.glob("batch-*"))  # up to about February 19th; from then on
    for batch in before_drift:
        assert ingest_batch(batch).accepted
    apply(s)
    # A champion to monitor, trained before the drift, so the monitored March window drifts from its
    # reference (limits relaxed: model quality is the training tests' job).
    first = train(s, promote_if_passed=True,
                  limits=GateLimits(max_ece=0.5, min_roc_auc=0.5, min_brier_skill=-1.0, max_train_valid_gap=1.0))
    assert ingest_batch(drifted).accepted
    materialize(datetime(2023, 12, 1, tzinfo=timezone.utc), datetime(2024, 4, 1, tzinfo=timezone.utc), settings=s)
    assert champion_version(s) == first.version
    # What serving would have logged in March 2024 (the test's own prediction log).
    replay_predictions(s, datetime(2024, 3, 1, tzinfo=timezone.utc), datetime(2024, 4, 1, tzinfo=timezone.utc),
                       log_dir=s.prediction_log_dir)
    logged = pd.read_parquet(s.prediction_log_dir)

    monitored = run_dag_test(s, "monitor_model.py", {"window": "7d"}, logical_date="2024-03-20T12:00:00+00:00")
    assert monitored["state"] == "success", monitored
    summary = monitored["returned"]["monitor"]  # in XCom: the UI shows how the run went, requested or not
    assert monitored["tasks"]["monitor"] == "success" and summary["severity"] in ("none", "low", "moderate", "high")
    assert summary["retrain_request"] is not None and summary["retrain_request_new"], summary
    assert monitored["tasks"]["request_retraining"] == "success", monitored
    (requested,) = monitored["asset_events"]  # stored by Airflow, carrying the request for the run it schedules
    assert requested["asset"] == "retrain_request"
    assert requested["extra"]["retrain_request"] == summary["retrain_request"]
    assert requested["extra"]["model_version"] == first.version
    request_file = Path(summary["retrain_request"])
    request = json.loads(request_file.read_text())
    end = pd.Timestamp(monitored["data_interval_end"])
    assert end.year == 2024, monitored  # dag.test's interval for that logical date, whatever its exact bounds
    (report,) = (s.reports_dir / "monitoring").glob("*/report.json")
    result = json.loads(report.read_text())
    assert result["window"] == {"start": (end - pd.Timedelta(days=7)).isoformat(), "end": end.isoformat()}
    at = pd.to_datetime(logged["logged_at"], utc=True)
    assert result["n_predictions"] == int(((at >= end - pd.Timedelta(days=7)) & (at < end)).sum()) > 0

    # Training as of a past instant sees only what was published by then; everything here was published
    # during this test, so the run's instant is a moment ago (not the wall clock when the task runs).
    # As a retraining request triggers it: no data interval (Airflow 3), so the time it was queued for.
    as_of = pd.Timestamp.now(tz="UTC").floor("s")
    trained = run_dag_test(s, "train_model.py", {}, run_after=as_of.isoformat(), consume_asset="retrain_request")
    assert trained["state"] == "success", trained
    assert trained["run_type"] == "asset_triggered"
    assert trained["data_interval_end"] is None and trained["returned"]["train"]["as_of"] == as_of.isoformat()
    assert trained["returned"]["train"]["retrain_requests"] == [summary["retrain_request"]]
    (latest,) = client(s).search_model_versions(f"name='{s.model_name}'", order_by=["version_number DESC"],
                                                max_results=1)
    assert latest.version != first.version
    assert latest.tags["as_of"] == as_of.isoformat()
    assert latest.tags["parent_version"] == first.version
    assert latest.tags["triggered_by"] == "asset_triggered"
    (recorded,) = json.loads(latest.tags["retrain_requests"])["described"]
    assert recorded["request_id"] == request["request_id"] and recorded["report"] == request["report"]
    assert recorded["sha256"] == hashlib.sha256(request_file.read_bytes()).hexdigest()
    assert recorded["reasons"] == request["reasons"] and Path(request["report"]).is_file()

"""Train, evaluate, register and gate a new forecaster; promote it only if every gate passes.

Runs weekly and whenever monitoring files a retraining request (``retrain_request`` asset).
The run is tracked in MLflow (params, metrics, artifacts, lineage); the new version gets the
``challenger`` alias, and ``champion`` only through the promotion gates in ``training.registry``.
A model that fails a gate leaves the task green (the platform worked) with the verdicts in the
return value and on the model version; a training error fails the task.

The training set is built as of the run's data interval end (the weekly cron tick), unless the
``as_of`` param says otherwise: re-running or backfilling a scheduled run rebuilds the same training
set. A run triggered by a retraining request has no data interval in Airflow 3; it trains as of the
time the run was queued for (``run_after``), so clearing and re-running it rebuilds the same
training set too. The champion at that moment is recorded as ``parent_version``, and the model
version's ``triggered_by`` and ``retrain_requests`` tags name what started the run: the run type and
the retraining requests it consumed (path, id, SHA-256, reasons, report), so an auditor can go from a
model to the monitoring report that asked for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from pipeline_assets import RETRAIN_REQUEST
from run_params import ISO_TIME, run_instant


@dag(
    dag_id="train_model",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=RETRAIN_REQUEST),
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params={
        "as_of": Param(None, type=["null", "string"], pattern=ISO_TIME,
                       description="Build the training set as of this UTC time, ISO 8601 "
                                   "(default: the run's data interval end, else the time the run was queued for)."),
        "seed": Param(0, type="integer", minimum=0),
        "promote": Param(True, type="boolean", description="Promote to champion if every gate passes."),
    },
    default_args={"retries": 0, "execution_timeout": timedelta(hours=4)},
    tags=["training"],
    doc_md=__doc__,
)
def train_model():
    @task
    def train(params: dict | None = None, data_interval_end=None, dag_run=None,
              triggering_asset_events=None) -> dict:
        from config.settings import get_settings
        from training.train import retrain, retrain_trigger

        settings = get_settings()
        as_of = params["as_of"] or run_instant(data_interval_end, dag_run).isoformat()
        # The requests that scheduled this run (one run may consume several), recorded on the model version.
        requests = [dict(event.extra or {}) for event in (triggering_asset_events or {}).get(RETRAIN_REQUEST, [])]
        trigger = retrain_trigger(settings, getattr(dag_run.run_type, "value", dag_run.run_type), requests)
        result = retrain(settings, as_of, seed=params["seed"], promote_if_passed=bool(params["promote"]),
                         trigger=trigger)
        return {"passed": result.passed, "as_of": as_of, "triggered_by": trigger["triggered_by"],
                "retrain_requests": [r.get("retrain_request") for r in requests], "summary": result.to_text()}

    train()


train_model()

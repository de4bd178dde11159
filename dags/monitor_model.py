"""Daily drift monitoring of the champion over the prediction log.

Feature, prediction and concept drift against the model's reference profile; writes a JSON
result and an HTML report, logs both to MLflow, and on high severity or concept drift files a
retraining request (the ``retrain_request`` asset schedules ``train_model``).

The window ends at the run's data interval end (midnight UTC for the daily schedule), or for a
manual run at the time it was queued for (``run_after``), never at the wall clock when the task
starts: a re-run or a backfill of a past day monitors that day's window. ``monitor`` keeps its
summary (severity, findings, window) in XCom; ``retraining_requested`` skips the last task when
nothing asked for retraining, so only ``request_retraining`` emits the asset event.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import CronTriggerTimetable, Param, dag, task

from pipeline_assets import RETRAIN_REQUEST
from run_params import WINDOW, run_instant


@dag(
    dag_id="monitor_model",
    schedule=CronTriggerTimetable("0 0 * * *", timezone="UTC"),  # UTC whatever the deployment's default zone
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params={
        "window": Param("7d", type="string", pattern=WINDOW,
                        description="Window of the prediction log to monitor: a positive number and m, h, d or w."),
        "feature_service": Param("market_forecaster_v1", type=["null", "string"],
                                 description="Also check feature freshness and training-serving skew for it."),
    },
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5), "execution_timeout": timedelta(hours=1)},
    tags=["monitoring"],
    doc_md=__doc__,
)
def monitor_model():
    @task
    def monitor(params: dict | None = None, data_interval_end=None, dag_run=None) -> dict:
        from config.settings import get_settings
        from monitoring.run import execute_run

        outputs = execute_run(get_settings(), params["window"], end=run_instant(data_interval_end, dag_run),
                              feature_service=params["feature_service"])
        print(outputs.to_text())  # the task log
        result = outputs.result
        # Kept in XCom, so the UI tells "ran and was fine" from "ran and alerted".
        return {"severity": result["severity"], "status": result["status"], "window": result["window"],
                "model_version": result.get("model_version"), "n_findings": len(outputs.findings),
                "retrain_request": str(outputs.retrain_request_path) if outputs.retrain_request_path else None,
                "retrain_request_new": outputs.retrain_request_new,
                "summary": outputs.to_text()}

    @task.short_circuit
    def retraining_requested(summary: dict) -> bool:
        # A re-run of a window that already asked replaces its request but does not ask again.
        return summary["retrain_request"] is not None and summary["retrain_request_new"]

    @task(outlets=[RETRAIN_REQUEST])
    def request_retraining(summary: dict, outlet_events=None) -> str:
        # The event carries the request, so the training run it schedules can name what asked for it.
        outlet_events[RETRAIN_REQUEST].extra = {k: summary[k] for k in ("retrain_request", "window", "model_version",
                                                                          "severity")}
        return summary["retrain_request"]

    summary = monitor()
    retraining_requested(summary) >> request_retraining(summary)

monitor_model()

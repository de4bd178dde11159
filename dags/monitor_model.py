"""Daily drift monitoring of the champion over the prediction log.

Feature, prediction and concept drift against the model's reference profile; writes a JSON
result and an HTML report, logs both to MLflow, and on high severity or concept drift files a
retraining request (the ``retrain_request`` asset schedules ``train_model``).

The window ends at the run's data interval end (midnight UTC for the daily schedule), not at the
wall clock: a re-run or a backfill of a past day monitors that day's window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from pipeline_assets import RETRAIN_REQUEST


@dag(
    dag_id="monitor_model",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "window": Param("7d", type="string", description="Window of the prediction log to monitor."),
        "feature_service": Param("market_forecaster_v1", type=["null", "string"],
                                 description="Also check feature freshness and training-serving skew for it."),
    },
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["monitoring"],
    doc_md=__doc__,
)
def monitor_model():
    @task(outlets=[RETRAIN_REQUEST])
    def monitor(params: dict | None = None, data_interval_end=None) -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        from config.settings import get_settings
        from monitoring.run import execute_run

        # No data interval (a manual run without a logical date): the window ends now.
        outputs = execute_run(get_settings(), params["window"], end=data_interval_end,
                              feature_service=params["feature_service"])
        if outputs.retrain_request_path is None:
            # No retraining asked for: skip so the asset event (and a training run) is not emitted.
            raise AirflowSkipException(outputs.to_text())
        return outputs.to_text()

    monitor()


monitor_model()

"""Materialize Feast features incrementally into the online store.

Runs when a batch lands in the offline store (``offline_store`` asset) and hourly as a safety
net. Incremental: each feature view continues from where its last materialization ended.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from pipeline_assets import OFFLINE_STORE, ONLINE_STORE


@dag(
    dag_id="materialize_features",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 * * * *", timezone="UTC"), assets=OFFLINE_STORE),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["features"],
    doc_md=__doc__,
)
def materialize_features():
    @task(outlets=[ONLINE_STORE])
    def materialize_incremental() -> str:
        from datetime import datetime, timezone

        from features.materialize import materialize_incremental as run

        return str(run(datetime.now(timezone.utc)))

    materialize_incremental()


materialize_features()

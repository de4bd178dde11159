"""Materialize Feast features into the online store: what is new since the last run.

Runs when a batch lands in the offline store (``offline_store`` asset) and hourly as a safety
net. Each feature view continues from where its last materialization ended, and reaches back to
the earliest event of any batch published since the last run (a batch lands after its events
happened: ``features.materialize.materialize_new_batches``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from pipeline_assets import OFFLINE_STORE, ONLINE_STORE


@dag(
    dag_id="materialize_features",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 * * * *", timezone="UTC"), assets=OFFLINE_STORE),
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(hours=2)},
    tags=["features"],
    doc_md=__doc__,
)
def materialize_features():
    @task(outlets=[ONLINE_STORE])
    def materialize_new_batches() -> str:
        from datetime import datetime, timezone

        from airflow.sdk.exceptions import AirflowFailException

        from features.materialize import FeatureRepoNotApplied
        from features.materialize import materialize_new_batches as run

        try:
            return run(datetime.now(timezone.utc)).summary()
        except FeatureRepoNotApplied as exc:  # retrying cannot help: fail at once, saying what to run
            raise AirflowFailException(str(exc)) from exc

    materialize_new_batches()


materialize_features()

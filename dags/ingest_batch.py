"""Ingest one raw batch: contract rules + Great Expectations gate, then atomic publish or quarantine.

Trigger it per delivered batch (Airflow UI "Trigger DAG w/ config", the REST API, or a sensor):
``{"batch_dir": "/path/to/batch", "assume_utc": false}``. A refused batch fails the run, so it is
red in the UI, and the reason file in the quarantine folder says which table, rule, column and rows.
An accepted batch updates the ``offline_store`` asset, which schedules materialization; a batch
already published (same content) is skipped, with no asset event.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import Param, dag, task

from pipeline_assets import OFFLINE_STORE


@dag(
    dag_id="ingest_batch",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,  # ingestion also takes a file lock; one run at a time keeps the UI honest
    params={
        # Absolute: a worker's working directory is arbitrary, and an empty path would name it.
        "batch_dir": Param(type="string", pattern=r"^/.",
                           description="Absolute path of one raw batch directory on the worker (DATA_CONTRACT.md)."),
        "assume_utc": Param(False, type="boolean", description="Take naive timestamps as UTC."),
    },
    default_args={"retries": 0, "execution_timeout": timedelta(hours=1)},
    tags=["ingestion", "validation"],
    doc_md=__doc__,
)
def ingest_batch():
    @task(outlets=[OFFLINE_STORE])
    def ingest(params: dict | None = None) -> dict:
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowSkipException

        from ingestion.ingest import ingest_batch as run

        result = run(Path(params["batch_dir"]), assume_utc=bool(params["assume_utc"]))
        if not result.accepted:
            raise RuntimeError(result.to_text())
        if result.no_op:  # already published: skipped, so no offline_store event triggers materialization
            raise AirflowSkipException(result.to_text())
        return {"batch_id": result.batch_id, "summary": result.to_text()}

    ingest()


ingest_batch()

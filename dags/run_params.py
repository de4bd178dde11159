"""What the DAGs share about a run's parameters and its time (no heavy imports: parsed with the DAGs)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

# ISO 8601 date or date-time (optional seconds, fraction and zone; naive means UTC), checked by the
# trigger form before the run starts rather than by a parse error deep inside a task.
ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"
# A prediction-log window as monitoring.prediction_log.parse_window reads it: 7d, 24h, 30m, 2w.
WINDOW = r"^\s*0*[1-9]\d*\s*[mhdw]\s*$"


def run_instant(data_interval_end: datetime | None, dag_run: Any) -> datetime:
    """The instant a run stands for: its data interval end (scheduled runs, backfills) or, without
    one (asset-triggered and manual runs in Airflow 3), the time it was queued for. Both are fixed
    for the run, so clearing and re-running a task gives the same answer; the wall clock would not."""
    moment = data_interval_end if data_interval_end is not None else dag_run.run_after
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)

"""Run DAG files in a fresh interpreter with their own AIRFLOW_HOME (Airflow reads config at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from config.settings import REPO_ROOT, Settings

DAGS_DIR = REPO_ROOT / "dags"


def airflow_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update({
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(DAGS_DIR)]),
    })
    return env


def migrate(settings: Settings) -> None:
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], env=airflow_env(settings), check=True,
                   capture_output=True, timeout=300)


RUN_SCRIPT = r"""
import json, sys
from datetime import datetime
from airflow.dag_processing.dagbag import DagBag
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
(dag,) = bag.dags.values()
when = {k: (datetime.fromisoformat(v) if v else None) for k, v in json.loads(sys.argv[3]).items()}
consume = sys.argv[4]
if consume:
    # What the scheduler does for an asset-triggered run (SchedulerJobRunner: create_dagrun with
    # run_type ASSET_TRIGGERED, then dag_run.consumed_asset_events.extend(events)), done on the run
    # dag.test() creates, with the real events other runs stored in this Airflow database.
    from sqlalchemy import event, select
    from airflow.models.asset import AssetEvent, AssetModel, association_table
    from airflow.models.dagrun import DagRun

    @event.listens_for(DagRun, "before_insert")
    def _asset_triggered(mapper, connection, target):
        target.run_type = "asset_triggered"

    @event.listens_for(DagRun, "after_insert")
    def _consume(mapper, connection, target):
        ids = connection.execute(select(AssetEvent.id).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                                 .where(AssetModel.name == consume)).scalars().all()
        assert ids, f"no {consume} asset event to consume"
        for event_id in ids:
            connection.execute(association_table.insert().values(dag_run_id=target.id, event_id=event_id))
run = dag.test(run_conf=json.loads(sys.argv[2]), **when)
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
with create_session() as session:  # what each task returned (its XCom, as the UI shows it)
    rows = session.query(XComModel).filter_by(dag_id=dag.dag_id, run_id=run.run_id, key="return_value").all()
    returned = {row.task_id: XComModel.deserialize_value(row) for row in rows}
    from airflow.models.asset import AssetEvent, AssetModel

    emitted = [{"asset": name, "extra": extra} for name, extra in session.query(AssetModel.name, AssetEvent.extra)
               .join(AssetEvent, AssetModel.id == AssetEvent.asset_id)
               .filter(AssetEvent.source_dag_id == dag.dag_id, AssetEvent.source_run_id == run.run_id)]
end = run.data_interval_end
print("RESULT " + json.dumps({"state": str(run.state), "run_type": str(run.run_type), "tasks": states,
                              "returned": returned, "asset_events": emitted,
                              "data_interval_end": end.isoformat() if end is not None else None}, default=str))
"""


def _run_script(settings: Settings, script: str, args: list[str], what: str, timeout: float) -> dict:
    """Run `script` in a fresh interpreter under the Airflow env and return the JSON of its RESULT line."""
    proc = subprocess.run([sys.executable, "-c", script, *args], env=airflow_env(settings),
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"{what} produced no result (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    if result.get("state") not in (None, "success"):
        result["output_tail"] = (proc.stdout[-4000:] + "\n" + proc.stderr[-4000:]).strip()  # why it failed
    return result


def run_dag_test(settings: Settings, dag_file: str, conf: dict, logical_date: str | None = None,
                 run_after: str | None = None, consume_asset: str | None = None) -> dict:
    """`dag.test()` of one DAG file, at ``logical_date`` (ISO with offset) if given; with ``run_after``
    and no logical date, as an asset-triggered or manual Airflow 3 run (no data interval) queued for
    that time. With ``consume_asset`` (an asset name), the run is asset-triggered by every stored event
    of that asset, as the scheduler would make it (no scheduler runs in tests). Returns {"state",
    "run_type", "tasks": {task_id: state}, "returned": {task_id: XCom}, "asset_events": [{"asset",
    "extra"}] emitted by the run, "data_interval_end": ISO or None}."""
    when = {"logical_date": logical_date} if logical_date else {}
    if run_after:
        when.update(run_after=run_after, logical_date=None)
    args = [str(DAGS_DIR / dag_file), json.dumps(conf), json.dumps(when), consume_asset or ""]
    return _run_script(settings, RUN_SCRIPT, args, "dag.test()", 600)


PARSE_SCRIPT = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted(m for m in ("feast", "mlflow", "sklearn", "great_expectations", "pandas", "fastapi") if m in sys.modules)


def zone(dag):
    timetable = getattr(dag.timetable, "timetable", dag.timetable)  # an AssetOrTimeSchedule wraps one
    tz = getattr(timetable, "timezone", None)
    return None if tz is None else str(getattr(tz, "name", tz))


def refusals(dag, conf):
    import copy
    try:
        params = copy.deepcopy(dag.params)
        for key, value in conf.items():  # validated on assignment, as a trigger's conf is
            params[key] = value
        params.validate()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


probes = json.loads(sys.argv[2])
print("RESULT " + json.dumps({
    "dags": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()}, "heavy": heavy,
    "timezones": {d.dag_id: zone(d) for d in bag.dags.values()},
    "start_dates_aware": {d.dag_id: d.start_date is not None and d.start_date.tzinfo is not None
                          for d in bag.dags.values()},
    "params": {f"{dag_id} {json.dumps(conf, sort_keys=True)}": refusals(bag.dags[dag_id], conf)
               for dag_id, conf in probes},
}))
"""


def parse_dags(settings: Settings, param_probes: list[tuple[str, dict]] = ()) -> dict:
    """DagBag of dags/: DAG ids, import errors, which heavy libraries parsing imported, each scheduled
    DAG's timezone, whether start dates are aware, and for each (dag_id, conf) probe the trigger
    form's refusal (None: accepted)."""
    return _run_script(settings, PARSE_SCRIPT, [str(DAGS_DIR), json.dumps(list(param_probes))], "DagBag", 300)

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
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
(dag,) = bag.dags.values()
when = {"logical_date": datetime.fromisoformat(sys.argv[3])} if len(sys.argv) > 3 else {}
run = dag.test(run_conf=json.loads(sys.argv[2]), **when)
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
end = run.data_interval_end
print("RESULT " + json.dumps({"state": str(run.state), "tasks": states,
                              "data_interval_end": end.isoformat() if end is not None else None}))
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


def run_dag_test(settings: Settings, dag_file: str, conf: dict, logical_date: str | None = None) -> dict:
    """`dag.test()` of one DAG file (at ``logical_date``, ISO with offset, if given; else now);
    returns {"state": ..., "tasks": {task_id: state}, "data_interval_end": ISO or None}."""
    args = [str(DAGS_DIR / dag_file), json.dumps(conf)] + ([logical_date] if logical_date else [])
    return _run_script(settings, RUN_SCRIPT, args, "dag.test()", 600)


PARSE_SCRIPT = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted(m for m in ("feast", "mlflow", "sklearn", "great_expectations", "pandas", "fastapi") if m in sys.modules)
print("RESULT " + json.dumps({"dags": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()},
                              "heavy": heavy}))
"""


def parse_dags(settings: Settings) -> dict:
    """DagBag of dags/: DAG ids, import errors, and which heavy libraries parsing imported."""
    return _run_script(settings, PARSE_SCRIPT, [str(DAGS_DIR)], "DagBag", 300)

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
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
(dag,) = bag.dags.values()
run = dag.test(run_conf=json.loads(sys.argv[2]))
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
print("RESULT " + json.dumps({"state": str(run.state), "tasks": states}))
"""


def _run_script(settings: Settings, script: str, args: list[str], what: str, timeout: float) -> dict:
    """Run `script` in a fresh interpreter under the Airflow env and return the JSON of its RESULT line."""
    proc = subprocess.run([sys.executable, "-c", script, *args], env=airflow_env(settings),
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"{what} produced no result (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def run_dag_test(settings: Settings, dag_file: str, conf: dict) -> dict:
    """`dag.test()` of one DAG file; returns {"state": ..., "tasks": {task_id: state}}."""
    return _run_script(settings, RUN_SCRIPT, [str(DAGS_DIR / dag_file), json.dumps(conf)], "dag.test()", 600)


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

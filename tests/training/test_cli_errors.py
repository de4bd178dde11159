"""Code tests: `python -m training` refuses bad options before any work, reports bad settings in one
line, and a training run that fails says why on its (FAILED) MLflow run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from config.settings import get_settings
from tests.training.cli_env import use_env
from training.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_error_line(res, code: int = 1) -> str:
    assert res.exit_code == code and isinstance(res.exception, SystemExit), (res.exit_code, res.output)
    assert "Traceback" not in res.output, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.fixture
def cli(tmp_path, monkeypatch):
    with monkeypatch.context() as mp:
        yield lambda env=None: use_env(mp, {"PM_DATA_DIR": str(tmp_path / "data"), **(env or {})})
    get_settings.cache_clear()


def test_tuning_options_are_checked_before_the_training_set_is_built(cli, tmp_path):
    """They were checked after the (minutes long) training-set build, or not at all: `--trials 0` gave
    `error: min() arg is an empty sequence`, `--space` without `--tune` was silently ignored."""
    settings = cli()
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": [0.05, 0.1]}))
    for args, says in ((["--tune", "foo"], "'foo': use grid or random"),
                       (["--tune", "random", "--trials", "0"], "greater than or equal to 1"),
                       (["--space", str(space)], "only used with --tune")):
        res = invoke("train", *args)
        assert res.exit_code == 2, (args, res.output)
        assert says in " ".join(res.output.split()), (args, res.output)
    assert not settings.data_dir.exists() or not any(settings.data_dir.rglob("mlflow*.db"))  # no run was started


def test_a_tracking_store_mlflow_cannot_use_is_one_error_line(cli):
    cli({"MLFLOW_TRACKING_URI": "garbage://nowhere"})
    for args in (["promote", "--version", "1"], ["rollback", "--to-version", "1", "--reason", "r"],
                 ["audit-export", "--out", "unused"]):
        line = one_error_line(invoke(*args))
        assert "garbage" in line, (args, line)


def test_an_unwritable_audit_export_directory_is_one_error_line(cli):
    import mlflow

    from training.audit import EXPERIMENT
    from training.tracking import configure_mlflow

    configure_mlflow(cli())
    mlflow.set_experiment(EXPERIMENT)  # something to export
    line = one_error_line(invoke("audit-export", "--out", "/proc/no-such-dir/audit"))
    assert "/proc/no-such-dir" in line, line


def test_a_failed_training_run_records_why_on_its_mlflow_run(settings):
    import mlflow

    from training.tracking import configure_mlflow
    from training.train import train

    with pytest.raises(ValueError, match="future"):
        train(settings, as_of="2999-01-01T00:00:00Z")
    configure_mlflow(settings)
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FAILED"
    assert run.data.tags["pm.error"].startswith("TrainingSetError: ")
    assert "later than now" in run.data.tags["pm.error"]


def test_an_unknown_parent_version_is_refused_before_training(cli):
    """`--parent-version banana` was stored as the new version's lineage as given."""
    cli()
    line = one_error_line(invoke("train", "--parent-version", "banana"))
    assert "no version for 'banana'" in line, line

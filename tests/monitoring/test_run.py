"""Whole monitoring runs: prediction log + offline-store outcomes -> reports, gauges, alerts, retrain requests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from monitoring.cli import app
from monitoring.prediction_log import write_log
from monitoring.reference import build_reference_profile, save_profile
from monitoring.run import run_monitoring
from tests.monitoring import synthetic as syn

NUMERIC = syn.numeric_names(7)
END = syn.T0 + timedelta(days=7)


def bad_input(res) -> str:
    """The monitoring CLI's one-line report of bad input or state: exit 2 (1 is `--fail-on` reached),
    `error: ...`, no traceback."""
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)  # not an uncaught error
    errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0]


def make_profile(rng: np.random.Generator, model_version: str | None = "1") -> dict:
    val = syn.calibrated_markets(1500, 4, rng)
    feats = syn.features(len(val), rng)
    return build_reference_profile(feats, val["q"], val["outcome"], NUMERIC, syn.CATEGORICAL,
                                   model_version=model_version, groups=val["market_id"])


def write_window(settings, rng: np.random.Generator, drift: bool, n_markets: int = 300,
                 null_features: tuple[str, ...] = (), feature_shift: float | None = None) -> pd.DataFrame:
    """A 7-day window of champion predictions; with ``drift``, one feature shifts and predictions lose
    calibration; ``feature_shift`` (reference std) shifts that feature alone, predictions staying
    calibrated; ``null_features`` are logged as null in every row."""
    m = syn.calibrated_markets(n_markets, 10, rng)
    shift = feature_shift if feature_shift is not None else (0.8 if drift else 0.0)
    feats = syn.features(len(m), rng, shift=shift, shifted=("price_change_1d",))
    for name in null_features:
        feats[name] = None
    p = syn.shrink_toward_half(m["q"].to_numpy(), 0.2) if drift else m["q"].to_numpy()
    df = syn.log_frame(feats, p, m["market_id"].to_numpy(), syn.T0, timedelta(days=7), rng)
    # Rows that are not the monitored model's: must be counted but not scored.
    other = df.sample(200, random_state=0).assign(model_role="fallback", source="market_price", probability=0.999)
    write_log(pd.concat([df, other], ignore_index=True), settings.prediction_log_dir)
    syn.write_markets_table(settings.offline_store_dir, m, END + timedelta(days=3))
    return df


def parse_prom(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-z_]+)\{([^}]*)\} (\S+)', line)
        assert m, f"bad exposition line: {line!r}"
        samples[f"{m.group(1)}{{{m.group(2)}}}"] = float(m.group(3))
    return samples


@pytest.mark.slow  # renders the HTML report (matplotlib)
def test_drifted_window_produces_every_output(settings):
    rng = np.random.default_rng(21)
    profile = make_profile(rng)
    write_window(settings, rng, drift=True)
    out = run_monitoring(settings, profile, timedelta(days=7), end=END, model_version="1", log_to_mlflow=False)
    r = out.result
    assert r["status"] == "ok" and r["severity"] == "high" and r["n_predictions"] == 3000
    assert r["counts_by_role_source_version"] == {"champion/model/1": 3000, "fallback/market_price/1": 200}
    kinds = {(f["kind"], f["subject"]): f["severity"] for f in out.findings}
    assert kinds[("feature_drift", "price_change_1d")] == "high"
    assert kinds[("concept_drift", "brier")] in ("moderate", "high")
    assert ("feature_drift", "price") not in kinds
    assert r["concept"]["n_markets"] == 300 and r["concept"]["status"] == "ok"

    saved = json.loads(out.json_path.read_text())
    assert saved["run_id"] == r["run_id"] and saved["severity"] == "high"
    page = out.html_path.read_text()
    # distributions, PSI per feature, concept drift: three inline plots, no script
    assert page.count("data:image/png;base64,") == 3 and "price_change_1d" in page and "<script" not in page
    assert "PSI per feature" in page
    alerts = [json.loads(line) for line in out.alerts_path.read_text().splitlines()]
    assert len(alerts) == len(out.findings) and all(a["severity"] in ("moderate", "high") for a in alerts)
    request = json.loads(out.retrain_request_path.read_text())
    assert out.retrain_request_path.parent == settings.data_dir / "retrain_requests"
    assert request["severity"] == "high" and request["model_version"] == "1"
    assert "feature_drift:price_change_1d:high" in request["reasons"]
    assert any(x.startswith("concept_drift:brier:") for x in request["reasons"])
    prom = parse_prom(out.prom_path.read_text())
    assert prom['pm_feature_drift_severity{model_version="1",feature="price_change_1d"}'] == 2
    assert prom['pm_feature_psi{model_version="1",feature="price"}'] < 0.1
    assert prom['pm_monitoring_retrain_requested{model_version="1"}'] == 1
    assert prom['pm_concept_brier{model_version="1"}'] > prom['pm_concept_brier_reference{model_version="1"}']


@pytest.mark.slow  # renders the HTML report (matplotlib)
def test_rerunning_a_window_replaces_its_request_and_an_older_window_keeps_the_latest_gauges(settings):
    """A cleared or backfilled monitor_model run must not file a second request for the same window (each
    one schedules a training run), nor put an older window's values into the collector's textfile."""
    rng = np.random.default_rng(21)
    profile = make_profile(rng)
    write_window(settings, rng, drift=True)
    first = run_monitoring(settings, profile, timedelta(days=7), end=END, model_version="1", log_to_mlflow=False)
    again = run_monitoring(settings, profile, timedelta(days=7), end=END, model_version="1", log_to_mlflow=False)
    assert first.retrain_request_new and not again.retrain_request_new
    assert again.retrain_request_path == first.retrain_request_path
    assert list((settings.data_dir / "retrain_requests").iterdir()) == [first.retrain_request_path]
    latest = again.prom_path.read_text()
    assert parse_prom(latest)['pm_monitoring_window_end_timestamp_seconds{model_version="1"}'] == END.timestamp()

    older = run_monitoring(settings, profile, timedelta(days=7), end=END - timedelta(days=3), model_version="1",
                           log_to_mlflow=False)
    assert older.prom_path is None and again.prom_path.read_text() == latest
    assert older.json_path.is_file()  # its own report is still written


@pytest.mark.slow  # renders the HTML report (matplotlib)
def test_quiet_window_raises_nothing(settings):
    rng = np.random.default_rng(22)
    profile = make_profile(rng)
    write_window(settings, rng, drift=False)
    out = run_monitoring(settings, profile, timedelta(days=7), end=END, log_to_mlflow=False)
    assert out.result["severity"] == "none", out.to_text()
    assert out.findings == [] and out.alerts_path is None and out.retrain_request_path is None
    assert not (settings.data_dir / "retrain_requests").exists()
    assert parse_prom(out.prom_path.read_text())['pm_monitoring_retrain_requested{model_version="1"}'] == 0  # the one version the window holds


@pytest.mark.slow  # renders the HTML report (matplotlib)
@pytest.mark.parametrize("shift, severity, requested", [(0.4, "moderate", False), (0.8, "high", True)],
                         ids=["moderate_drift_alerts_only", "high_drift_requests"])
def test_only_high_drift_files_a_retraining_request(settings, shift, severity, requested):
    """The retraining rule (report.needs_retraining, docs/monitoring.md): moderate drift is alerted,
    only high feature / prediction drift (or concept drift) files a request. Predictions stay
    calibrated, so the shifted feature is the run's only finding."""
    rng = np.random.default_rng(28)
    profile = make_profile(rng)
    write_window(settings, rng, drift=False, feature_shift=shift)
    out = run_monitoring(settings, profile, timedelta(days=7), end=END, log_to_mlflow=False)
    r = out.result
    kinds = {(f["kind"], f["subject"]): f["severity"] for f in out.findings}
    assert kinds == {("feature_drift", "price_change_1d"): severity}, kinds
    assert r["concept"]["status"] == "ok" and r["concept"]["severity"] == "none"
    assert r["severity"] == severity
    alerts = [json.loads(line) for line in out.alerts_path.read_text().splitlines()]
    assert [(a["kind"], a["subject"], a["severity"]) for a in alerts] == [("feature_drift", "price_change_1d", severity)]
    requests = settings.data_dir / "retrain_requests"
    prom = parse_prom(out.prom_path.read_text())
    if requested:
        assert out.retrain_request_path is not None and list(requests.iterdir()) == [out.retrain_request_path]
        request = json.loads(out.retrain_request_path.read_text())
        assert request["reasons"] == ["feature_drift:price_change_1d:high"] and request["severity"] == "high"
        assert r["retrain_request"] == str(out.retrain_request_path)
        assert prom['pm_monitoring_retrain_requested{model_version="1"}'] == 1
    else:
        assert out.retrain_request_path is None and not requests.exists()
        assert "retrain_request" not in r and "retrain_request" not in json.loads(out.json_path.read_text())
        assert prom['pm_monitoring_retrain_requested{model_version="1"}'] == 0


def test_window_without_predictions_is_reported(settings):
    rng = np.random.default_rng(23)
    out = run_monitoring(settings, make_profile(rng), timedelta(days=7), end=END, log_to_mlflow=False)
    assert out.result["status"] == "no_data"
    assert [f["kind"] for f in out.findings] == ["no_data"]
    assert "no_data" in out.html_path.read_text()


@pytest.mark.slow  # renders the HTML report (matplotlib)
def test_cli_run_with_reference_file(settings, tmp_path):
    rng = np.random.default_rng(24)
    path = save_profile(make_profile(rng), tmp_path / "reference_profile.json")
    write_window(settings, rng, drift=True)
    runner = CliRunner()
    args = ["run", "--window", "7d", "--end", END.isoformat(), "--reference", str(path), "--no-mlflow"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "severity high" in res.output and "retrain request:" in res.output
    for fail_on in ("high", "moderate"):  # severity reached: exit 1, the report printed, not an error
        res = runner.invoke(app, [*args, "--fail-on", fail_on])
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
        assert "severity high" in res.stdout and "error:" not in res.output
    assert "error: window 'seven days'" in bad_input(
        runner.invoke(app, ["run", "--window", "seven days", "--reference", str(path), "--no-mlflow"]))


def test_cli_reports_expected_errors_in_one_line(settings, tmp_path):
    """No champion registered, a naive or unparseable --end, a bad window, a missing profile file or
    log dir: `error: ...` and exit 2 instead of a long traceback, so a cron job running `--fail-on`
    (exit 1) can tell drift from a broken invocation."""
    runner = CliRunner()
    naive = "2024-06-30T00:00:00"
    out = bad_input(runner.invoke(app, ["run", "--window", "7d", "--end", naive, "--no-mlflow"]))
    assert "give an explicit UTC offset" in out
    for flags in ([], ["--fail-on", "high"]):
        out = bad_input(runner.invoke(app, ["run", "--window", "7d", "--end", "yesterday", "--no-mlflow",
                                            *flags]))
        assert out == "error: --end 'yesterday': not an ISO-8601 time (e.g. 2024-06-30T00:00:00+00:00)"
        out = bad_input(runner.invoke(app, ["run", "--window", "7d", "--end", END.isoformat(), "--no-mlflow",
                                            *flags]))
        assert "no version for 'champion'" in out  # an empty registry
    out = bad_input(runner.invoke(app, ["run", "--window", "0d", "--end", END.isoformat(), "--no-mlflow"]))
    assert "window '0d': expected a positive integer" in out
    out = bad_input(runner.invoke(app, ["run", "--reference", str(tmp_path / "absent.json"), "--no-mlflow"]))
    assert "reference profile not found" in out
    profile = save_profile(make_profile(np.random.default_rng(26)), tmp_path / "profile.json")
    out = bad_input(runner.invoke(app, ["run", "--window", "7d", "--end", END.isoformat(), "--reference",
                                        str(profile), "--log-dir", str(tmp_path / "no_log"), "--no-mlflow",
                                        "--fail-on", "high"]))
    assert out == f"error: prediction log directory not found: {tmp_path / 'no_log'}"
    out = bad_input(runner.invoke(app, ["replay", "--start", "2024-05-01T00:00:00", "--end",
                                        "2024-06-01T00:00:00+00:00", "--log-dir", str(tmp_path / "log")]))
    assert "timezone-aware" in out
    out = bad_input(runner.invoke(app, ["replay", "--start", "May 1st", "--end", "2024-06-01T00:00:00+00:00",
                                        "--log-dir", str(tmp_path / "log")]))
    assert out.startswith("error: --start 'May 1st': not an ISO-8601 time")


@pytest.mark.slow  # renders the HTML report (matplotlib)
def test_reference_file_without_version_refuses_a_window_of_several_versions(settings, tmp_path):
    """Training's profiles carry no model_version; a window where the champion changed holds two
    versions, and one profile must not be compared with both (a model change would read as drift)."""
    from monitoring.run import execute_run

    rng = np.random.default_rng(27)
    path = save_profile(make_profile(rng, model_version=None), tmp_path / "reference_profile.json")
    m = syn.calibrated_markets(300, 10, rng)
    feats = syn.features(len(m), rng)
    old = syn.log_frame(feats, m["q"].to_numpy(), m["market_id"].to_numpy(), syn.T0, timedelta(days=3), rng,
                        model_version="1")
    new = syn.log_frame(feats, np.full(len(m), 0.999), m["market_id"].to_numpy(), syn.T0 + timedelta(days=4),
                        timedelta(days=3), rng, model_version="2")
    write_log(pd.concat([old, new], ignore_index=True), settings.prediction_log_dir)

    with pytest.raises(ValueError, match=r"model versions \['1', '2'\].*give --model-version"):
        execute_run(settings, window="7d", end=END, reference=path, log_to_mlflow=False)
    out = bad_input(CliRunner().invoke(app, ["run", "--window", "7d", "--end", END.isoformat(),
                                             "--reference", str(path), "--no-mlflow"]))
    assert "give --model-version" in out
    only_new = execute_run(settings, window="7d", end=END, reference=path, model_version="2", log_to_mlflow=False)
    assert only_new.result["model_version"] == "2" and only_new.result["n_predictions"] == len(new)


@pytest.mark.slow
def test_mlflow_reference_lookup_and_run_logging(settings):
    """Real MLflow sqlite store: a registered version carries reference_profile.json; the run is logged."""
    import mlflow
    from mlflow import MlflowClient

    from monitoring.run import execute_run
    from training.tracking import configure_mlflow

    rng = np.random.default_rng(25)
    configure_mlflow(settings, "market_forecaster")
    with mlflow.start_run() as train_run:
        # Where training.train logs it (its run dir under "evaluation/"); the model artifact has none here.
        mlflow.log_dict(make_profile(rng, model_version=None), "evaluation/reference_profile.json")
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    client.create_registered_model(settings.model_name)
    mv = client.create_model_version(settings.model_name, source=train_run.info.artifact_uri, run_id=train_run.info.run_id)
    client.set_registered_model_alias(settings.model_name, "champion", mv.version)
    write_window(settings, rng, drift=True)

    out = execute_run(settings, window="7d", end=END)  # default reference: the champion's profile
    assert out.result["model_version"] == str(mv.version) and out.result["n_predictions"] == 3000
    run = client.get_run(out.mlflow_run_id)
    assert client.get_experiment(run.info.experiment_id).name == "monitoring"
    assert run.data.tags["severity"] == "high" and run.data.tags["model_version"] == str(mv.version)
    assert run.data.metrics["psi.price_change_1d"] > 0.1
    logged = {a.path for a in client.list_artifacts(out.mlflow_run_id)}
    assert {"report.json", "report.html", "alerts.jsonl", "monitoring.prom"} <= logged

    from monitoring.reference import ProfileError

    with pytest.raises(Exception, match="no version for '99'"):
        execute_run(settings, window="7d", end=END, model_version="99")
    bare = client.create_model_version(settings.model_name, source=train_run.info.artifact_uri + "/nothing")
    client.set_registered_model_alias(settings.model_name, "challenger", bare.version)
    with pytest.raises(ProfileError, match="no reference profile"):
        execute_run(settings, window="7d", end=END, model_version="challenger")


@pytest.mark.slow
def test_profile_inside_the_model_artifact_is_sha_checked(settings):
    """Training's layout: models:/<name>/<v>/extra_files/reference_profile.json + reference_profile_sha256 tag."""
    import hashlib

    import mlflow
    from mlflow import MlflowClient

    from monitoring.registry_io import fetch_reference_profile
    from training.registry import TamperedArtifactError
    from training.tracking import configure_mlflow

    rng = np.random.default_rng(26)
    profile = make_profile(rng, model_version=None)
    configure_mlflow(settings, "market_forecaster")
    with mlflow.start_run() as run:
        mlflow.log_dict(profile, "model/extra_files/reference_profile.json")
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    client.create_registered_model(settings.model_name)
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model/extra_files")
    sha = hashlib.sha256((Path(local) / "reference_profile.json").read_bytes()).hexdigest()
    good = client.create_model_version(settings.model_name, source=f"{run.info.artifact_uri}/model",
                                       run_id=run.info.run_id, tags={"reference_profile_sha256": sha})
    bad = client.create_model_version(settings.model_name, source=f"{run.info.artifact_uri}/model",
                                      run_id=run.info.run_id, tags={"reference_profile_sha256": "0" * 64})
    got, name, version = fetch_reference_profile(settings, str(good.version))
    assert got == json.loads(json.dumps(profile)) and version == str(good.version)
    with pytest.raises(TamperedArtifactError, match="does not match"):
        fetch_reference_profile(settings, str(bad.version))


@pytest.mark.slow  # renders the HTML report (matplotlib)
def test_a_feature_null_in_every_row_is_a_missing_feature_not_a_reason_to_retrain(settings):
    """What serving logs when a view's values expired (stopped materialization): a pipeline fault,
    reported like a feature absent from the log, never filed as drift for retraining."""
    rng = np.random.default_rng(22)
    profile = make_profile(rng)
    numeric, categorical = NUMERIC[0], syn.CATEGORICAL[0]
    write_window(settings, rng, drift=False, null_features=(numeric, categorical))
    out = run_monitoring(settings, profile, timedelta(days=7), end=END, log_to_mlflow=False)
    kinds = {(f["kind"], f["subject"]): f["severity"] for f in out.findings}
    assert kinds == {("missing_feature", numeric): "high", ("missing_feature", categorical): "high"}, kinds
    assert "null in every one" in " ".join(f["message"] for f in out.findings)
    assert out.retrain_request_path is None and not (settings.data_dir / "retrain_requests").exists()


@pytest.mark.slow  # renders the HTML report (matplotlib)
def test_outputs_are_readable_by_other_users_and_the_request_is_filed_last(settings, monkeypatch):
    """The Prometheus textfile collector and a retraining poller usually run as other users (mkstemp's
    0600 would hide every file from them); the request appears only once its report exists, and a run
    that fails on the way files none."""
    import os
    import stat

    from monitoring import report

    rng = np.random.default_rng(21)
    profile = make_profile(rng)
    write_window(settings, rng, drift=True)
    old_umask = os.umask(0o022)
    try:
        render = report.html_report
        monkeypatch.setattr(report, "html_report", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            run_monitoring(settings, profile, timedelta(days=7), end=END, model_version="1", log_to_mlflow=False)
        requests = settings.data_dir / "retrain_requests"
        assert not requests.exists() or list(requests.iterdir()) == []
        monkeypatch.setattr(report, "html_report", render)
        out = run_monitoring(settings, profile, timedelta(days=7), end=END, model_version="1", log_to_mlflow=False)
    finally:
        os.umask(old_umask)
    assert out.retrain_request_path is not None
    assert json.loads(out.retrain_request_path.read_text())["report"] == str(out.json_path)
    for path in (out.json_path, out.html_path, out.alerts_path, out.prom_path, out.retrain_request_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    leftovers = [p.name for p in (settings.reports_dir / "monitoring").rglob(".*.tmp")]
    assert leftovers == [], leftovers  # the failed run's temp file was removed too


def test_feast_checks_are_skipped_for_a_window_that_ended_long_ago(settings):
    """The online store holds current values only: freshness and skew "as of" a 2024 window end would
    read today's values as fresh and as skewed. (No Feast repo is applied here: calling it would fail.)"""
    rng = np.random.default_rng(23)
    profile = make_profile(rng)
    write_window(settings, rng, drift=False)
    out = run_monitoring(settings, profile, timedelta(days=7), end=END, log_to_mlflow=False,
                         feature_service="market_forecaster_v1")
    for kind in ("freshness", "skew"):
        assert out.result[kind]["status"] == "skipped" and out.result[kind]["findings"] == []
    assert "freshness and skew not checked" in out.to_text()


def test_log_timestamps_in_nanoseconds_are_read_and_an_unreadable_part_file_is_named(settings):
    from monitoring.prediction_log import PredictionLogError, read_window

    rng = np.random.default_rng(24)
    feats = syn.features(50, rng)
    df = syn.log_frame(feats, np.full(50, 0.5), np.array([f"m{i}" for i in range(50)]), syn.T0,
                       timedelta(hours=1), rng)
    df["logged_at"] = df["logged_at"].astype("datetime64[ns, UTC]") + pd.Timedelta(nanoseconds=7)
    write_log(df, settings.prediction_log_dir)
    read = read_window(settings.prediction_log_dir, syn.T0, syn.T0 + timedelta(days=1))
    assert len(read) == 50
    corrupt = next(settings.prediction_log_dir.glob("date=*")) / "part-corrupt.parquet"
    corrupt.write_bytes(b"")
    with pytest.raises(PredictionLogError, match="part-corrupt.parquet"):
        read_window(settings.prediction_log_dir, syn.T0, syn.T0 + timedelta(days=1))


def test_cli_refuses_a_window_too_long_in_one_line(settings, tmp_path):
    profile = tmp_path / "profile.json"
    save_profile(make_profile(np.random.default_rng(25)), profile)
    for window in ("3000000d", "99999999999w"):
        out = bad_input(CliRunner().invoke(app, ["run", "--window", window, "--reference", str(profile),
                                                 "--no-mlflow"]))
        assert "too long" in out or "before year 1" in out

"""Auditability: a future as_of is refused, the audit export holds every alias move and rollback
reason, a failed reproduction run ends FAILED, and the CLI reports expected errors in one line.

One world per module: a tiny simulated batch ingested into an offline store whose Feast registry
was never applied (so any Feast retrieval finds no FeatureService), and an MLflow store beside it
with two versions trained on the synthetic frame and moved between champion and back.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from config.settings import Settings, get_settings
from tests.feast_project import copy_feature_repo
from tests.training.cli_env import use_env
from training.cli import app
from training.pipeline import ModelSpec
from training.registry import CHAMPION, GateLimits, aliases, promote, rollback
from training.train import TrainConfig, train
from tests.cli_output import expected_error

pytestmark = pytest.mark.slow

LOOSE = GateLimits(max_brier=0.25, max_ece=0.2, min_roc_auc=0.5, min_brier_skill=-1.0, max_train_valid_gap=0.3,
                   champion_tolerance=0.05)
FAST = {"importance_repeats": 1, "baseline_logreg": False}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    from ingestion.ingest import ingest_batch
    from ingestion.simulate import SimulationConfig, generate

    root = tmp_path_factory.mktemp("review")
    env = {"PM_DATA_DIR": str(root / "data"), "PM_FEATURE_REPO_DIR": str(copy_feature_repo(root))}
    settings = Settings.from_env(env)
    settings.ensure_dirs()
    generate(SimulationConfig(n_markets=40, start=date(2024, 1, 1), end=date(2024, 3, 1), seed=4, n_batches=1),
             root / "raw", progress=False)
    batch = sorted((root / "raw").glob("batch-*"))[0]
    # published right after its data ends, so the synthetic versions' as_of (2025-01-01) sees it
    assert ingest_batch(batch, settings=settings, now=pd.Timestamp("2024-03-02", tz="UTC"), run_gate=False).accepted
    return SimpleNamespace(settings=settings, env=env)


@pytest.fixture(scope="module")
def history(world, ts) -> SimpleNamespace:
    """v1 champion, v2 promoted, rollback to v1 ("first reason"), v2 promoted again, rollback to
    v1 ("second reason"): v1's rollback.reason tag now holds only the second reason."""
    import sklearn.ensemble  # noqa: F401  (threadpoolctl only limits libraries already loaded)
    from threadpoolctl import threadpool_limits

    s = world.settings
    with threadpool_limits(limits=1):
        v1 = train(s, training_set=ts, limits=LOOSE, config=TrainConfig(**FAST), promote_if_passed=True).version
        v2 = train(s, training_set=ts, limits=LOOSE, config=TrainConfig(spec=ModelSpec(seed=5), **FAST))
        assert v2.passed, v2.to_text()
        v2 = v2.version
        promote(s, v2)
        rollback(s, v1, reason="first reason")
        promote(s, v2)
        rollback(s, v1, reason="second reason")
    assert aliases(s, s.model_name)[CHAMPION] == v1
    return SimpleNamespace(v1=v1, v2=v2)


@pytest.fixture
def cli_env(world, monkeypatch):
    """get_settings() of the CLI reads the module's world."""
    assert use_env(monkeypatch, world.env).mlflow_tracking_uri == world.settings.mlflow_tracking_uri
    yield
    get_settings.cache_clear()


# ---------------------------------------------------------------- 1. future as_of

def test_future_as_of_is_refused(world):
    from training.data import TrainingSetError, build_training_set

    def price_only(entity_df, feature_service, settings):  # stands in for Feast: no registry needed
        return entity_df.assign(price=0.5)

    past = build_training_set(world.settings, "2024-06-01T00:00:00Z", retriever=price_only, run_gx=False)
    assert len(past.frame) > 0
    with pytest.raises(TrainingSetError, match=r"as_of 2099-01-01T00:00:00\+00:00 is later than now \(20"):
        build_training_set(world.settings, "2099-01-01T00:00:00Z", retriever=price_only, run_gx=False)


# ---------------------------------------------------------------- 2. audit export: alias moves

def test_audit_export_has_every_alias_move_and_rollback_reason(world, history, tmp_path):
    from training.audit import export

    out = export(world.settings, tmp_path / "audit")
    bundle = json.loads(out.json_path.read_text())
    assert len([k for k in bundle["registered_model_tags"] if k.startswith("alias_history.")]) == 5
    moves = [(m["action"], m["from_version"], m["to_version"], m["reason"]) for m in bundle["alias_moves"]]
    v1, v2 = history.v1, history.v2
    assert moves == [("promote", None, v1, ""), ("promote", v1, v2, ""), ("rollback", v2, v1, "first reason"),
                     ("promote", v1, v2, ""), ("rollback", v2, v1, "second reason")]
    assert [m["recorded_at"] for m in bundle["alias_moves"]] == sorted(m["recorded_at"] for m in bundle["alias_moves"])
    table = pd.read_csv(out.alias_moves_csv_path, dtype=str, keep_default_na=False)
    assert out.n_alias_moves == len(table) == 5
    assert list(table["reason"]) == ["", "", "first reason", "", "second reason"]
    assert list(table["to_version"]) == [v1, v2, v1, v2, v1]


# ---------------------------------------------------------------- 3. failed reproduction run

def test_reproduction_with_different_predictions_ends_its_run_failed(world, history, ts, monkeypatch):
    import training.pipeline as pipeline
    from training.reproduce import ReproduceError, reproduce
    from training.tracking import EXPERIMENT, client

    fit = pipeline.fit_model
    monkeypatch.setattr(pipeline, "fit_model",
                        lambda spec, train, names: fit(replace(spec, seed=spec.seed + 1), train, names))
    with pytest.raises(ReproduceError, match="retrained predictions differ"):
        reproduce(world.settings, history.v1, training_set=ts)
    c = client(world.settings)
    runs = c.search_runs([c.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.`pm.kind` = 'reproduce'",
                         order_by=["attributes.start_time DESC"], max_results=1)
    assert runs[0].info.status == "FAILED"
    assert runs[0].data.metrics["max_abs_diff"] > 0


# ---------------------------------------------------------------- 4. CLI expected errors

def test_cli_reproduce_reports_a_feature_service_missing_from_the_registry(world, history, cli_env):
    line = expected_error(CliRunner().invoke(app, ["reproduce", "--version", history.v1]))
    assert "FeatureService 'market_forecaster_v1' is not in the Feast registry" in line


def test_cli_tune_refuses_an_unknown_hyperparameter_before_fitting(world, history, ts, cli_env, tmp_path,
                                                                   monkeypatch):
    import training.train
    from training.tracking import EXPERIMENT, client

    monkeypatch.setattr(training.train, "build_training_set", lambda settings, as_of: ts)
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"max_leaf_node": [7, 15]}))
    c = client(world.settings)
    experiment = c.get_experiment_by_name(EXPERIMENT).experiment_id
    trials = lambda: len(c.search_runs([experiment], "tags.`pm.kind` = 'tuning_trial'"))  # noqa: E731
    before = trials()
    line = expected_error(CliRunner().invoke(app, ["train", "--tune", "grid", "--space", str(space)]))
    assert "unknown hgb hyperparameter(s) ['max_leaf_node']" in line and "'max_leaf_nodes'" in line
    assert trials() == before


def test_cli_backtest_names_the_columns_missing_from_truth(world, ts, cli_env, tmp_path, monkeypatch):
    import training.data

    monkeypatch.setattr(training.data, "build_training_set", lambda settings, as_of: ts)
    truth = tmp_path / "truth.parquet"
    ts.frame[["market_id", "ts"]].assign(prob=0.5).to_parquet(truth)
    line = expected_error(CliRunner().invoke(app, ["backtest", "--truth", str(truth), "--out",
                                                   str(tmp_path / "bt")]))
    assert "missing column(s) ['true_probability']" in line


def test_cli_audit_export_refuses_an_existing_file_as_out(world, cli_env, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    line = expected_error(CliRunner().invoke(app, ["audit-export", "--out", str(afile)]))
    assert "exists and is not a directory" in line


# ---------------------------------------------------------------- 5. backtest coverage

def test_backtest_reports_period_coverage_and_warns_when_low(synthetic_ts):
    from training.backtest import BacktestConfig, cutoffs_for, run

    frame = synthetic_ts.frame
    config = BacktestConfig(n_periods=2, spec=ModelSpec(kind="logreg", calibration=None), min_train_markets=10)
    edges = cutoffs_for(frame, 2)
    last = frame[(frame["ts"] >= edges[1]) & (frame["ts"] < edges[2])]
    # snapshots of markets still open at as_of: in the store, never forecast (no label)
    open_markets = pd.DataFrame({"market_id": [f"open-{i}" for i in range(len(last) // 2)],
                                 "ts": last["ts"].iloc[: len(last) // 2].to_numpy()})
    store = pd.concat([frame[["market_id", "ts"]], open_markets], ignore_index=True)
    result = run(synthetic_ts, config, store=store)
    periods = result.periods
    assert list(periods["store_n"]) == [len(frame[(frame["ts"] >= edges[0]) & (frame["ts"] < edges[1])]),
                                        len(last) + len(open_markets)]
    assert periods["coverage_snapshots"].iloc[0] == 1.0
    assert periods["coverage_snapshots"].iloc[1] == pytest.approx(len(last) / (len(last) + len(open_markets)))
    assert periods["coverage_markets"].iloc[1] < 0.8
    assert len(result.warnings) == 1 and edges[1].isoformat() in result.warnings[0]
    assert f"warning: {result.warnings[0]}" in result.to_text()

"""MLflow on PostgreSQL (README, "Production shape": MLFLOW_TRACKING_URI=postgresql+psycopg2://...):
train, register, promote, load verified and export the audit through our training functions, with
the tracking and registry store in a fresh database of a throwaway PostgreSQL server."""

from __future__ import annotations

import json
import uuid

import pytest

from config.settings import Settings
from training.registry import CHALLENGER, CHAMPION, GateLimits, aliases, load_verified_model, promote
from training.train import TrainConfig, train

LENIENT = GateLimits(max_brier=0.25, max_ece=0.12, min_roc_auc=0.6, min_brier_skill=-1.0,
                     max_train_valid_gap=0.2, champion_tolerance=0.05)


def fresh_database(server) -> str:
    """A new, empty database on ``server``; its SQLAlchemy URL (README: MLflow gets a database of its own)."""
    import psycopg2

    name = f"mlflow_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(host=server.host, port=server.port, user=server.user, password=server.password,
                            dbname=server.database)
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return f"postgresql+psycopg2://{server.user}:{server.password}@{server.host}:{server.port}/{name}"


def query(url: str, sql: str) -> list[tuple]:
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = psycopg2.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_train_register_promote_and_load_with_mlflow_on_postgresql(postgres_srv, ts, tmp_path):
    from training.audit import export

    url = fresh_database(postgres_srv)
    settings = Settings.from_env({"PM_DATA_DIR": str(tmp_path / "data"), "MLFLOW_TRACKING_URI": url})
    settings.ensure_dirs()
    assert settings.mlflow_tracking_uri == url

    # Before anything is registered: "no champion", not an error (registered_aliases on PostgreSQL).
    result = train(settings, training_set=ts, limits=LENIENT, config=TrainConfig(importance_repeats=1,
                                                                                  baseline_logreg=False))
    assert result.passed and result.aliases == [CHALLENGER], result.to_text()
    change = promote(settings)
    assert (change.from_version, change.to_version, change.dry_run) == (None, result.version, False)
    assert aliases(settings, settings.model_name) == {CHAMPION: result.version}

    loaded = load_verified_model(settings.model_name, CHAMPION, settings)
    assert loaded.version == result.version and loaded.feature_names == ts.feature_names
    assert loaded.sha256 == loaded.tags["artifact_sha256"]
    assert loaded.predict(ts.frame).shape == (len(ts.frame),)

    # The registry lives in that database, not in a SQLite file of the data dir.
    assert query(url, "SELECT name, alias, version FROM registered_model_aliases") == [
        (settings.model_name, CHAMPION, int(result.version))]
    assert query(url, f"SELECT status FROM runs WHERE run_uuid = '{result.run_id}'") == [("FINISHED",)]
    assert not list(settings.data_dir.glob("*.db"))

    out = export(settings, tmp_path / "audit")
    bundle = json.loads(out.json_path.read_text())
    assert bundle["tracking_uri"] == url and out.n_versions == 1 and out.n_alias_moves == 1
    assert [m["to_version"] for m in bundle["alias_moves"]] == [result.version]

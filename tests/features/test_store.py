"""Store construction from settings, the yaml's variables, the `feast` CLI on a temp repo copy, PG registry."""

from __future__ import annotations

import json
import shlex
import subprocess
import os
import sys
from datetime import datetime, timezone

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from config.settings import REPO_ROOT, Settings, get_settings
from features.cli import app
from features.materialize import materialize
from features.retrieve import historical_features
from features.store import (apply, feast_executable, feast_yaml_env, get_store, render_yaml, repo_config,
                            settings_env)
from tests.features import scenario
from tests.feast_project import copy_feature_repo
from tests.features.conftest import settings_for
from tests.features.offline_data import publish

OWNER = "ml-platform@prediction-markets.example"


def test_sqlite_by_default(settings: Settings):
    config = repo_config(settings)
    assert config.online_store.type == "sqlite"
    assert config.online_store.path == str(settings.online_sqlite_path)
    assert config.registry.registry_type == "sql"
    assert config.registry.path == settings.feast_registry_uri
    assert config.offline_store.type == "duckdb"


def test_redis_when_configured_with_a_password_yaml_would_misread(tmp_path):
    from feast.infra.online_stores.redis import RedisOnlineStore

    password = 'p@ss: "w#o\\rd=1'
    s = Settings.from_env({"PM_DATA_DIR": str(tmp_path), "PM_ONLINE_STORE_TYPE": "redis", "PM_REDIS_HOST": "10.0.0.5",
                           "PM_REDIS_PORT": "6400", "PM_REDIS_DB": "2", "PM_REDIS_PASSWORD": password})
    config = repo_config(s)
    assert config.online_store.type == "redis"
    assert config.online_store.connection_string == f"10.0.0.5:6400,db=2,password={json.dumps(password)}"
    # ... and Feast's own parser hands redis-py the password unchanged.
    _, params = RedisOnlineStore._parse_connection_string(config.online_store.connection_string)
    assert params == {"db": 2, "password": password}


@pytest.mark.parametrize("password", ["true", "1e3"])
def test_json_looking_redis_password_authenticates_against_a_real_redis(tmp_path, password):
    """Feast JSON-decodes connection-string values: unquoted, `true` became a bool and `1e3` "1000.0"."""
    from tests.servers import redis_server

    with redis_server(password=password) as server:
        s = Settings.from_env({"PM_DATA_DIR": str(tmp_path), "PM_ONLINE_STORE_TYPE": "redis",
                               "PM_REDIS_HOST": server.host, "PM_REDIS_PORT": str(server.port),
                               "PM_REDIS_PASSWORD": password})
        store = get_store(s)
        assert store._get_provider().online_store._get_client(store.config.online_store).ping()


def test_postgres_registry_uri_passes_through(tmp_path):
    uri = "postgresql+psycopg2://pm:secret@db.internal:5433/feast"
    s = Settings.from_env({"PM_DATA_DIR": str(tmp_path), "PM_FEAST_REGISTRY_URI": uri})
    assert repo_config(s).registry.path == uri


def test_unknown_online_store_type_is_refused(tmp_path):
    # By the settings, so every command refuses it in one line (tests/config/test_settings.py), not only Feast's.
    with pytest.raises(ValueError, match="PM_ONLINE_STORE_TYPE='memcached' is not one of sqlite, redis"):
        Settings.from_env({"PM_DATA_DIR": str(tmp_path), "PM_ONLINE_STORE_TYPE": "memcached"})


def test_yaml_variable_without_a_setting_is_an_error(tmp_path):
    repo = copy_feature_repo(tmp_path / "proj")
    yaml_path = repo / "feature_store.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("cache_ttl_seconds: 60", "cache_ttl_seconds: ${PM_TYPO}"))
    with pytest.raises(KeyError, match="PM_TYPO"):
        render_yaml(settings_for(tmp_path / "data", repo))


def test_env_command_prints_what_feast_expandvars_needs(settings: Settings):
    result = CliRunner().invoke(app, ["env"])
    assert result.exit_code == 0, result.output
    exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in result.output.splitlines())
    assert exported == feast_yaml_env(settings)
    # What Feast will do with it: os.path.expandvars, then YAML.
    text = (REPO_ROOT / "feature_repo" / "feature_store.yaml").read_text()
    for name, value in exported.items():
        text = text.replace("${" + name + "}", value)
    assert yaml.safe_load(text)["online_store"] == {"type": "sqlite", "path": str(settings.online_sqlite_path)}


def _env_without_settings(**extra: str) -> dict[str, str]:
    """os.environ without platform settings or PYTHONPATH (tests' own must not leak into a child process)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PM_", "MLFLOW_")) and k not in ("AIRFLOW_HOME", "PYTHONPATH")}
    return {**env, **extra}


def test_feature_repo_module_names_are_not_shadowed_by_the_project():
    """`feast apply` imports feature_repo/*.py as top-level modules, with feature_repo/ LAST on sys.path:
    with the project on PYTHONPATH (README's Airflow setup), a project package of the same name wins."""
    names = sorted(p.stem for p in (REPO_ROOT / "feature_repo").glob("*.py"))
    assert "feature_views" in names and "features" not in names
    probe = ("import importlib.util, json, sys; "
             "print(json.dumps({n: getattr(importlib.util.find_spec(n), 'origin', None) for n in sys.argv[1:]}))")
    env = _env_without_settings(PYTHONPATH=f"{REPO_ROOT}:{REPO_ROOT / 'dags'}")
    out = subprocess.run([sys.executable, "-c", probe, *names], cwd="/", env=env, capture_output=True, text=True,
                         check=True)
    shadowed = {name: origin for name, origin in json.loads(out.stdout).items() if origin is not None}
    assert not shadowed, f"feature_repo modules shadowed by other importable modules: {shadowed}"


def test_env_command_creates_the_local_dirs_the_feast_cli_cannot(tmp_path, monkeypatch):
    """On a fresh clone data/ does not exist; SQLite (registry, online store) cannot create directories."""
    data = tmp_path / "fresh" / "data"
    monkeypatch.setenv("PM_DATA_DIR", str(data))
    monkeypatch.setenv("PM_ONLINE_SQLITE_PATH", str(tmp_path / "fresh" / "online" / "online_store.db"))
    for var in ("PM_FEAST_REGISTRY_URI", "PM_ONLINE_STORE_TYPE"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["env"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert data.is_dir() and (tmp_path / "fresh" / "online").is_dir()


@pytest.mark.slow
def test_documented_feast_cli_flow_on_a_fresh_data_dir(tmp_path):
    """README / this doc: eval "$(python -m features env)"; cd feature_repo; feast apply, with no data/ yet."""
    repo = copy_feature_repo(tmp_path / "proj")
    data = tmp_path / "proj" / "data"
    env = _env_without_settings(PM_DATA_DIR=str(data), PM_FEATURE_REPO_DIR=str(repo))
    script = f'eval "$({shlex.quote(sys.executable)} -m features env)" && cd {shlex.quote(str(repo))} && ' \
             f'{shlex.quote(feast_executable())} apply'
    proc = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Created feature service market_forecaster_v1" in proc.stdout
    assert (data / "feast_registry.db").is_file()


@pytest.mark.slow
def test_features_apply_with_the_project_on_pythonpath_and_a_relative_sqlite_registry(tmp_path):
    """README's Airflow setup exports PYTHONPATH=$PWD:$PWD/dags, which the `feast` child inherits; the README's
    settings table shows the registry as sqlite:///./data/feast_registry.db, relative to where you run."""
    project = tmp_path / "proj"
    repo = copy_feature_repo(project)
    env = _env_without_settings(PYTHONPATH=f"{REPO_ROOT}:{REPO_ROOT / 'dags'}", PM_DATA_DIR="data",
                                PM_FEATURE_REPO_DIR=str(repo),
                                PM_FEAST_REGISTRY_URI="sqlite:///./data/feast_registry.db")
    proc = subprocess.run([sys.executable, "-m", "features", "apply"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Created feature service market_forecaster_v1" in proc.stdout
    assert (project / "data" / "feast_registry.db").is_file()
    assert not (repo / "data").exists(), "the registry was opened relative to feature_repo/"


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "features", "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("env", "apply", "materialize", "materialize-incremental", "historical", "online"):
        assert command in out.stdout


@pytest.mark.slow
def test_feast_apply_cli_on_a_temp_copy_registers_documented_definitions(applied_repo):
    assert "Created feature service market_forecaster_v1" in applied_repo.apply_stdout
    store = get_store(applied_repo.settings)
    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == {"price_features", "poll_features", "market_info", "market_resolution"}
    assert store.get_entity("market").join_key == "market_id"
    for view in views.values():
        assert view.owner == OWNER and view.description and view.tags
        for field in view.features:
            assert field.description and field.tags.get("owner") == OWNER, (view.name, field.name)
    odfv = store.get_on_demand_feature_view("market_derived")
    for field in odfv.features:
        assert odfv.tags[f"description.{field.name}"] and odfv.tags[f"owner.{field.name}"] == OWNER
    service = store.get_feature_service("market_forecaster_v1")
    assert [p.name for p in service.feature_view_projections] == ["price_features", "poll_features", "market_info",
                                                                   "market_derived"]
    assert [f.name for f in service.feature_view_projections[2].features] == ["event_type", "platform"]
    assert store.get_data_source("price_ticks_push").batch_source.name == "price_features_source"


@pytest.mark.slow
def test_registry_on_postgres(postgres_srv, tmp_path):
    repo = copy_feature_repo(tmp_path / "proj")
    s = settings_for(tmp_path / "data", repo, PM_FEAST_REGISTRY_URI=postgres_srv.sqlalchemy_url)
    s.ensure_dirs()
    out = apply(s)
    assert "Created feature service market_forecaster_v1" in out
    store = get_store(s)
    assert {v.name for v in store.list_feature_views()} == {"price_features", "poll_features", "market_info",
                                                            "market_resolution"}
    # Nothing ingested yet: a clear error naming the empty table, not a DuckDB IO error.
    entities = pd.DataFrame({"market_id": ["m"], "ts": pd.to_datetime(["2024-01-02"], utc=True)})
    with pytest.raises(ValueError, match="price_features: nothing matches .*price_features"):
        historical_features(entities, "market_forecaster_v1", store=store)
    report = materialize(datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc),
                         store=store)
    assert report.windows == {} and set(report.skipped) == {"price_features", "poll_features", "market_info"}

    # Two "DAG tasks" (separate processes, as Airflow runs them) materializing different views at the
    # same time: both intervals land in the registry (a whole-file registry lets the last writer win).
    publish(s.offline_store_dir, scenario.batch_online(), "2024-02-01")
    end = datetime(2024, 2, 1, tzinfo=timezone.utc)
    env = {**os.environ, **settings_env(s)}
    tasks = [subprocess.Popen([sys.executable, "-m", "features", "materialize", "--start", "2024-01-01T00:00:00Z",
                               "--end", end.isoformat(), "--view", view], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for view in ("price_features", "poll_features")]
    for task in tasks:
        out, err = task.communicate(timeout=600)
        assert task.returncode == 0, err[-2000:]
    fresh = get_store(s)
    for view in ("price_features", "poll_features"):
        assert fresh.get_feature_view(view).most_recent_end_time.replace(tzinfo=timezone.utc) == end


@pytest.mark.slow
def test_materializing_before_any_apply_says_to_apply_first(tmp_path):
    """A fresh data dir and no `feast apply`: one error line naming the command to run (the
    materialize DAG fails at once on it instead of retrying an obscure 'market_resolution does not exist')."""
    from features.materialize import FeatureRepoNotApplied, materialize_new_batches

    repo = copy_feature_repo(tmp_path / "proj")
    env = _env_without_settings(PM_DATA_DIR=str(tmp_path / "proj" / "data"), PM_FEATURE_REPO_DIR=str(repo))
    proc = subprocess.run([sys.executable, "-m", "features", "materialize-new-batches", "--end", "2024-02-01T00:00:00Z"],
                          cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "python -m features apply" in lines[0], proc.stderr
    settings = Settings.from_env({"PM_DATA_DIR": str(tmp_path / "proj" / "data"), "PM_FEATURE_REPO_DIR": str(repo)})
    with pytest.raises(FeatureRepoNotApplied, match="holds no feature views"):
        materialize_new_batches(datetime.now(timezone.utc), settings=settings)


@pytest.mark.slow
def test_a_failing_feast_apply_is_one_error_line_naming_feasts_exception(tmp_path):
    """An unreachable SQL registry: Feast's own exception in one line, not 130 lines of traceback; the
    registry password never printed."""
    repo = copy_feature_repo(tmp_path / "proj")
    env = _env_without_settings(PM_DATA_DIR=str(tmp_path / "proj" / "data"), PM_FEATURE_REPO_DIR=str(repo),
                                PM_FEAST_REGISTRY_URI="postgresql+psycopg2://u:secretpw@127.0.0.1:1/db")
    proc = subprocess.run([sys.executable, "-m", "features", "apply"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: `feast apply`"), proc.stderr
    assert "OperationalError" in lines[0] and "Connection refused" in lines[0], lines[0]
    assert "secretpw" not in proc.stdout + proc.stderr


def test_materialize_cli_does_not_repeat_ibis_deprecation_noise(fork):
    """Importing feast turns on every library's DeprecationWarning; the DuckDB offline store's ibis then
    printed duckdb's fetch_arrow_table() deprecation for each view of each window (~600 lines of
    `make demo`). Our own output and other warnings still show."""
    s = fork()
    env = {**os.environ, **settings_env(s)}
    proc = subprocess.run([sys.executable, "-m", "features", "materialize", "--start", "2024-01-01T00:00:00Z",
                           "--end", "2024-01-20T00:00:00Z"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "price_features: 3 window(s)" in proc.stdout, proc.stdout  # the offline store was really read
    assert "fetch_arrow_table" not in proc.stderr, proc.stderr[-2000:]

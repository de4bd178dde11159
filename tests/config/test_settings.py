"""The one settings module: defaults are local and embedded, every value comes from the environment."""

from pathlib import Path

import pytest

from config.settings import REPO_ROOT, Settings, describe


def test_defaults_are_local_and_embedded():
    s = Settings.from_env({})
    assert s.data_dir == REPO_ROOT / "data"
    assert s.offline_store_dir == REPO_ROOT / "data" / "offline"
    assert s.online_store_type == "sqlite"
    assert s.mlflow_tracking_uri.startswith("sqlite:///")
    assert s.feast_registry_uri.startswith("sqlite:///")
    assert s.admin_token == ""


def test_every_setting_reads_its_env_var(tmp_path: Path):
    env = {
        "PM_DATA_DIR": str(tmp_path / "d"), "PM_RAW_DIR": str(tmp_path / "raw"),
        "PM_OFFLINE_STORE_DIR": str(tmp_path / "off"), "PM_QUARANTINE_DIR": str(tmp_path / "q"),
        "PM_FEATURE_REPO_DIR": str(tmp_path / "fr"), "PM_FEAST_REGISTRY_URI": "postgresql+psycopg2://u:p@h:1/r",
        "PM_ONLINE_STORE_TYPE": "REDIS", "PM_ONLINE_SQLITE_PATH": str(tmp_path / "o.db"),
        "PM_REDIS_HOST": "10.0.0.1", "PM_REDIS_PORT": "6390", "PM_REDIS_DB": "3", "PM_REDIS_PASSWORD": "s3cret",
        "MLFLOW_TRACKING_URI": "postgresql://m", "PM_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "art"),
        "PM_MODEL_NAME": "m", "AIRFLOW_HOME": str(tmp_path / "af"), "PM_GX_DIR": str(tmp_path / "gx"),
        "PM_REPORTS_DIR": str(tmp_path / "rep"), "PM_PREDICTION_LOG_DIR": str(tmp_path / "log"),
        "PM_SERVING_HOST": "0.0.0.0", "PM_SERVING_PORT": "9001", "PM_ADMIN_TOKEN": "tok", "PM_DOCS_PORT": "9002",
        "PM_SERVING_OPTIONS": '{"ab_share": 0.2}',
    }
    s = Settings.from_env(env)
    documented = {row[0] for row in describe()}
    assert documented == set(env), "every setting has exactly one env var, and the test covers all of them"
    assert s.raw_dir == tmp_path / "raw" and s.quarantine_dir == tmp_path / "q"
    assert s.online_store_type == "redis"
    assert (s.redis_port, s.redis_db, s.serving_port, s.docs_port) == (6390, 3, 9001, 9002)
    assert s.redis_connection_string == '10.0.0.1:6390,db=3,password="s3cret"'
    assert s.mlflow_tracking_uri == "postgresql://m" and s.model_name == "m"
    assert s.serving_options == '{"ab_share": 0.2}'


def test_redis_connection_string_omits_empty_password():
    assert Settings.from_env({"PM_REDIS_PORT": "7000"}).redis_connection_string == "127.0.0.1:7000,db=0"


@pytest.mark.parametrize("password", ["s3cret", "123456", "true", "null", "1e3", 'qu"ote\\s', "a=b:c", " spaced "])
def test_redis_password_reaches_redis_py_as_the_same_string(password):
    """Feast JSON-decodes connection-string values: the password must come back as this exact str."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    s = Settings.from_env({"PM_REDIS_PASSWORD": password})
    nodes, params = RedisOnlineStore._parse_connection_string(s.redis_connection_string)
    assert nodes == [{"host": "127.0.0.1", "port": "6379"}]
    assert params == {"db": 0, "password": password} and type(params["password"]) is str


def test_redis_password_with_a_comma_is_refused():
    s = Settings.from_env({"PM_REDIS_PASSWORD": "ab,cd"})
    with pytest.raises(ValueError, match="PM_REDIS_PASSWORD contains ','"):
        s.redis_connection_string


def test_paths_derive_from_data_dir(tmp_path: Path):
    s = Settings.from_env({"PM_DATA_DIR": str(tmp_path)})
    for p in (s.raw_dir, s.offline_store_dir, s.quarantine_dir, s.online_sqlite_path, s.mlflow_artifact_root,
              s.airflow_home, s.reports_dir, s.prediction_log_dir):
        assert tmp_path in p.parents
    assert str(tmp_path) in s.mlflow_tracking_uri and str(tmp_path) in s.feast_registry_uri


@pytest.mark.parametrize("var", ["PM_REDIS_PORT", "PM_REDIS_DB", "PM_SERVING_PORT", "PM_DOCS_PORT"])
def test_a_bad_integer_names_its_variable_and_value(var):
    with pytest.raises(ValueError, match=rf"^{var}='80OO' is not an integer$"):
        Settings.from_env({var: "80OO"})


@pytest.mark.parametrize("var", ["PM_REDIS_PORT", "PM_SERVING_PORT", "PM_DOCS_PORT"])
@pytest.mark.parametrize("value", ["0", "-1", "70000", "99999"])
def test_a_port_outside_1_to_65535_is_refused(var, value):
    # 99999 would otherwise be bound as 34463 (modulo 65536) while the logs say 99999.
    with pytest.raises(ValueError, match=rf"^{var}='{value}' is not a port \(1-65535\)$"):
        Settings.from_env({var: value})
    assert getattr(Settings.from_env({var: "65535"}), var.removeprefix("PM_").lower()) == 65535


@pytest.mark.parametrize("var, attr", [("PM_FEAST_REGISTRY_URI", "feast_registry_uri"),
                                       ("MLFLOW_TRACKING_URI", "mlflow_tracking_uri")])
def test_relative_sqlite_uri_is_made_absolute_against_the_current_dir(tmp_path: Path, monkeypatch, var, attr):
    """`feast` runs with cwd=feature_repo/: a relative SQLite path must not mean a different file there."""
    monkeypatch.chdir(tmp_path)
    cases = {
        "sqlite:///./data/reg.db": f"sqlite:///{tmp_path}/data/reg.db",  # the README table's form
        "sqlite:///data/reg.db?timeout=5": f"sqlite:///{tmp_path}/data/reg.db?timeout=5",
        "sqlite+pysqlite:///reg.db": f"sqlite+pysqlite:///{tmp_path}/reg.db",
        f"sqlite:///{tmp_path}/abs.db": f"sqlite:///{tmp_path}/abs.db",  # absolute: four slashes, unchanged
        "sqlite:///:memory:": "sqlite:///:memory:",
        "postgresql+psycopg2://u:p@h:5432/db": "postgresql+psycopg2://u:p@h:5432/db",
    }
    for given, expected in cases.items():
        assert getattr(Settings.from_env({var: given}), attr) == expected, given
    # The README's default column, set explicitly from the checkout, is exactly the default.
    monkeypatch.chdir(REPO_ROOT)
    defaults = dict((env, default) for env, default, _ in describe())
    assert getattr(Settings.from_env({var: defaults[var]}), attr) == getattr(Settings.from_env({}), attr)


@pytest.mark.parametrize("command, variable, value", [
    (["ingestion", "show"], "PM_SERVING_PORT", "abc"),
    (["features", "env"], "PM_DOCS_PORT", "8o00"),
    (["serving"], "PM_SERVING_OPTIONS", '{"bogus": 1}'),
    (["serving"], "PM_SERVING_PORT", "99999"),
    (["features", "apply"], "PM_ONLINE_STORE_TYPE", "bogus"),
    (["ingestion", "show"], "PM_ONLINE_STORE_TYPE", "bogus"),
])
def test_every_cli_refuses_a_bad_setting_in_one_line(tmp_path: Path, command, variable, value):
    """A bad environment variable is a user error: `error: ...` naming it, exit 2, no traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PM_DATA_DIR": str(tmp_path / "data"), variable: value}
    out = subprocess.run([sys.executable, "-m", *command], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith(f"error: {variable}") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stdout + out.stderr

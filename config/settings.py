"""Every path, URI, port and secret of the platform, read from the environment.

Nothing else in the code base reads ``os.environ`` for configuration or hard-codes a
path, a port or a password: it asks :func:`get_settings`. Defaults are local and
embedded (files under ``./data``, SQLite everywhere) so that a fresh clone runs with
no server at all; production points the same variables at Redis, PostgreSQL and a
remote MLflow.

The table in README.md ("Settings") is generated from ``describe()`` below, so the
two cannot drift apart (a test compares them).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A setting (environment variable) that cannot be used; the message names the variable."""


def _path(env: Mapping[str, str], name: str, default: Path) -> Path:
    value = env.get(name)
    return Path(value).expanduser().resolve() if value else default


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not an integer") from None


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port: 1-65535 (a larger number is silently taken modulo 65536 by the socket layer)."""
    port = _int(env, name, default)
    if not 1 <= port <= 65535:
        raise SettingsError(f"{name}={env.get(name)!r} is not a port (1-65535)")
    return port


ONLINE_STORE_TYPES = ("sqlite", "redis")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).lower()
    if value not in choices:
        raise SettingsError(f"{name}={env.get(name)!r} is not one of {', '.join(choices)}")
    return value


# sqlite:///relative/path.db (three slashes, then no fourth): SQLAlchemy and MLflow open the path relative
# to the process's current directory, and `feast` runs with cwd=feature_repo/. `sqlite:////abs.db`,
# `sqlite://` and `sqlite:///:memory:` are left alone.
_RELATIVE_SQLITE = re.compile(r"^(sqlite(?:\+\w+)?:///)(?!/)(?!:memory:)([^?]+)(\?.*)?$")


def _sqlite_uri(env: Mapping[str, str], name: str, default: str) -> str:
    """The URI in `name` (or `default`), a relative SQLite path made absolute against the current directory."""
    value = env.get(name)
    if not value:
        return default
    m = _RELATIVE_SQLITE.match(value)
    if not m:
        return value
    prefix, path, query = m.groups()
    return f"{prefix}{Path(path).expanduser().resolve()}{query or ''}"


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :func:`get_settings` or :meth:`from_env`."""

    data_dir: Path = field(metadata={"env": "PM_DATA_DIR", "doc": "Root of all local state (raw batches, stores, logs)."})
    raw_dir: Path = field(metadata={"env": "PM_RAW_DIR", "doc": "Where `make demo` writes its generated batches (`$PM_RAW_DIR/demo`). No command reads it: `python -m ingestion generate` needs `--out`, `ingest` a batch directory."})
    offline_store_dir: Path = field(metadata={"env": "PM_OFFLINE_STORE_DIR", "doc": "Parquet offline store written by ingestion and read by Feast."})
    quarantine_dir: Path = field(metadata={"env": "PM_QUARANTINE_DIR", "doc": "Refused batches, copied whole with a `_reason.json`."})
    feature_repo_dir: Path = field(metadata={"env": "PM_FEATURE_REPO_DIR", "doc": "The Feast feature repository (definitions as code)."})
    feast_registry_uri: str = field(metadata={"env": "PM_FEAST_REGISTRY_URI", "doc": "Feast SQL registry (SQLAlchemy URL): SQLite file by default, `postgresql+psycopg2://...` in production. A relative `sqlite:///path` is made absolute against the current directory."})
    online_store_type: str = field(metadata={"env": "PM_ONLINE_STORE_TYPE", "doc": "`sqlite` (embedded, default) or `redis`."})
    online_sqlite_path: Path = field(metadata={"env": "PM_ONLINE_SQLITE_PATH", "doc": "SQLite online store file when `PM_ONLINE_STORE_TYPE=sqlite`."})
    redis_host: str = field(metadata={"env": "PM_REDIS_HOST", "doc": "Redis host for the online store."})
    redis_port: int = field(metadata={"env": "PM_REDIS_PORT", "doc": "Redis port for the online store."})
    redis_db: int = field(metadata={"env": "PM_REDIS_DB", "doc": "Redis logical database number."})
    redis_password: str = field(metadata={"env": "PM_REDIS_PASSWORD", "doc": "Redis password (empty: none; no commas: Feast's connection string cannot carry one). A secret: never logged."})
    mlflow_tracking_uri: str = field(metadata={"env": "MLFLOW_TRACKING_URI", "doc": "MLflow tracking + registry store (`sqlite:///...` locally; file stores are refused by MLflow 3). A relative `sqlite:///path` is made absolute against the current directory."})
    mlflow_artifact_root: Path = field(metadata={"env": "PM_MLFLOW_ARTIFACT_ROOT", "doc": "Where MLflow stores run artifacts and models."})
    model_name: str = field(metadata={"env": "PM_MODEL_NAME", "doc": "Registered model name in the MLflow registry."})
    airflow_home: Path = field(metadata={"env": "AIRFLOW_HOME", "doc": "Airflow home (metadata DB, logs). Read by Airflow itself, and only when exported (as in Airflow above): unexported, Airflow uses `~/airflow`. No platform command hands it to Airflow (the DAG tests export it)."})
    gx_dir: Path = field(metadata={"env": "PM_GX_DIR", "doc": "Great Expectations file project (committed config)."})
    reports_dir: Path = field(metadata={"env": "PM_REPORTS_DIR", "doc": "Monitoring and evaluation reports."})
    prediction_log_dir: Path = field(metadata={"env": "PM_PREDICTION_LOG_DIR", "doc": "Date-partitioned Parquet log of every served prediction."})
    serving_host: str = field(metadata={"env": "PM_SERVING_HOST", "doc": "Interface the prediction service binds to."})
    serving_port: int = field(metadata={"env": "PM_SERVING_PORT", "doc": "Port of the prediction service."})
    serving_options: str = field(metadata={"env": "PM_SERVING_OPTIONS", "doc": "Prediction-service tunables as a JSON object of `serving/options.py` fields, e.g. `{\"ab_share\": 0.2}` (empty: defaults)."})
    admin_token: str = field(metadata={"env": "PM_ADMIN_TOKEN", "doc": "Bearer token for `/admin/*` endpoints (empty: admin endpoints refuse everyone). A secret."})
    docs_port: int = field(metadata={"env": "PM_DOCS_PORT", "doc": "Port `make docs` serves the GX Data Docs on."})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        data_dir = _path(env, "PM_DATA_DIR", REPO_ROOT / "data")
        return cls(
            data_dir=data_dir,
            raw_dir=_path(env, "PM_RAW_DIR", data_dir / "raw"),
            offline_store_dir=_path(env, "PM_OFFLINE_STORE_DIR", data_dir / "offline"),
            quarantine_dir=_path(env, "PM_QUARANTINE_DIR", data_dir / "quarantine"),
            feature_repo_dir=_path(env, "PM_FEATURE_REPO_DIR", REPO_ROOT / "feature_repo"),
            feast_registry_uri=_sqlite_uri(env, "PM_FEAST_REGISTRY_URI", f"sqlite:///{data_dir / 'feast_registry.db'}"),
            online_store_type=_choice(env, "PM_ONLINE_STORE_TYPE", "sqlite", ONLINE_STORE_TYPES),
            online_sqlite_path=_path(env, "PM_ONLINE_SQLITE_PATH", data_dir / "online_store.db"),
            redis_host=env.get("PM_REDIS_HOST") or "127.0.0.1",
            redis_port=_port(env, "PM_REDIS_PORT", 6379),
            redis_db=_int(env, "PM_REDIS_DB", 0),
            redis_password=env.get("PM_REDIS_PASSWORD") or "",
            mlflow_tracking_uri=_sqlite_uri(env, "MLFLOW_TRACKING_URI", f"sqlite:///{data_dir / 'mlflow.db'}"),
            mlflow_artifact_root=_path(env, "PM_MLFLOW_ARTIFACT_ROOT", data_dir / "mlartifacts"),
            model_name=env.get("PM_MODEL_NAME") or "market_forecaster",
            airflow_home=_path(env, "AIRFLOW_HOME", data_dir / "airflow"),
            gx_dir=_path(env, "PM_GX_DIR", REPO_ROOT / "gx"),
            reports_dir=_path(env, "PM_REPORTS_DIR", data_dir / "reports"),
            prediction_log_dir=_path(env, "PM_PREDICTION_LOG_DIR", data_dir / "prediction_log"),
            serving_host=env.get("PM_SERVING_HOST") or "127.0.0.1",
            serving_port=_port(env, "PM_SERVING_PORT", 8000),
            serving_options=env.get("PM_SERVING_OPTIONS") or "",
            admin_token=env.get("PM_ADMIN_TOKEN") or "",
            docs_port=_port(env, "PM_DOCS_PORT", 8765),
        )

    @property
    def redis_connection_string(self) -> str:
        """Feast's Redis format: ``host:port,db=N[,password="..."]`` (not a ``redis://`` URL).

        Feast splits the string on ``,`` and JSON-decodes each value, so the password is written as
        a JSON string: unquoted, ``123456`` would reach redis-py as an int and ``true`` as a bool.
        A comma cannot be escaped in this format, so a password with one is refused.
        """
        parts = [f"{self.redis_host}:{self.redis_port}", f"db={self.redis_db}"]
        if self.redis_password:
            if "," in self.redis_password:
                raise SettingsError("PM_REDIS_PASSWORD contains ',', which Feast's Redis connection string "
                                 "(host:port,db=N,password=...) cannot carry: use a password without commas")
            parts.append("password=" + json.dumps(self.redis_password))
        return ",".join(parts)

    def ensure_dirs(self) -> None:
        """Create the local directories the platform writes to."""
        for d in (self.data_dir, self.raw_dir, self.offline_store_dir, self.quarantine_dir,
                  self.mlflow_artifact_root, self.reports_dir, self.prediction_log_dir):
            d.mkdir(parents=True, exist_ok=True)


def describe() -> list[tuple[str, str, str]]:
    """(env var, default, description) for every setting, for the README table."""
    defaults = Settings.from_env({})
    rows = []
    for f in fields(Settings):
        default = getattr(defaults, f.name)
        if isinstance(default, Path):
            try:
                default = "./" + str(default.relative_to(REPO_ROOT))
            except ValueError:
                default = str(default)
        elif isinstance(default, str) and str(REPO_ROOT) in default:
            default = default.replace(str(REPO_ROOT) + "/", "./")
        rows.append((f.metadata["env"], str(default) if default != "" else "(empty)", f.metadata["doc"]))
    return rows


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings.from_env()

"""Shared fixtures: isolated settings, and real Redis / PostgreSQL servers started here."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from config.settings import REPO_ROOT, Settings, get_settings
from tests.servers import PostgresServer, RedisServer, postgres_server, redis_server

SHARED_DIR = Path(__file__).resolve().parent.parent.parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def no_writes_to_the_default_data_dir() -> Iterator[None]:
    """Tests keep their state in tmp dirs: a test that forgets to pass settings would write into ./data."""
    default_data = REPO_ROOT / "data"
    existed = default_data.exists()
    yield
    if not existed and default_data.exists():
        written = sorted(str(p.relative_to(REPO_ROOT)) for p in default_data.rglob("*"))[:10]
        pytest.fail(f"a test wrote into the default data dir {default_data}: {written}")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose every writable path lives under this test's tmp dir."""
    monkeypatch.setenv("PM_DATA_DIR", str(tmp_path / "data"))
    for var in ("PM_RAW_DIR", "PM_OFFLINE_STORE_DIR", "PM_QUARANTINE_DIR", "PM_FEAST_REGISTRY_URI",
                "PM_ONLINE_SQLITE_PATH", "MLFLOW_TRACKING_URI", "PM_MLFLOW_ARTIFACT_ROOT", "AIRFLOW_HOME",
                "PM_REPORTS_DIR", "PM_PREDICTION_LOG_DIR", "PM_ONLINE_STORE_TYPE"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    s = get_settings()
    s.ensure_dirs()
    yield s
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, shared by the session."""
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_clean(redis_srv: RedisServer) -> RedisServer:
    """The session Redis, flushed before the test."""
    redis_srv.start()
    redis_srv.client().flushall()
    return redis_srv


@pytest.fixture(scope="session")
def postgres_srv() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free loopback port."""
    with postgres_server() as server:
        yield server

"""The SQLite online store (the embedded default): /ready reads it for real, and a locked file gives a
503 within online_timeout_s, not sqlite3's default 5 s wait.

A real `feast apply` with a SQLite online store, rows written through Feast, a real lock held by
another process (BEGIN EXCLUSIVE), the session's real MLflow registry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from config.settings import Settings, get_settings
from tests.serving import world
from tests.serving.conftest import FAST

pytestmark = pytest.mark.slow

# Another process holding SQLite's exclusive lock (what a long write transaction does) until stdin closes.
HOLD_EXCLUSIVE = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
                  "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()")


@pytest.fixture(scope="session")
def sqlite_feast_project(tmp_path_factory) -> dict[str, str]:
    return world.apply_feast_project(tmp_path_factory.mktemp("serving_feast_sqlite"))


@pytest.fixture
def sqlite_settings(serving_settings, sqlite_feast_project, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """serving_settings (private registry copy) with the SQLite Feast project as feature store."""
    for name, value in sqlite_feast_project.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    s = get_settings()
    assert s.online_store_type == "sqlite" and s.mlflow_tracking_uri == serving_settings.mlflow_tracking_uri
    return s


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_EXCLUSIVE, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_locked_sqlite_store_is_not_ready_and_503_within_the_online_timeout(make_client, sqlite_settings):
    from features.store import get_store

    online = world.write_online(get_store(sqlite_settings), 5, pd.Timestamp.now(tz="UTC"))
    client = make_client(dataclasses.replace(FAST, online_timeout_s=0.5), settings=sqlite_settings)
    assert client.get("/ready").status_code == 200
    assert client.post("/predict", json={"market_id": online.ids[0]}).status_code == 200
    with exclusive_lock(sqlite_settings.online_sqlite_path):
        ready = client.get("/ready")
        started = time.monotonic()
        predict = client.post("/predict", json={"market_id": online.ids[1]})
        elapsed = time.monotonic() - started
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["online_store_reachable"] is False and body["model_loaded"] is True
    assert "online store (sqlite) unreachable" in body["detail"][0] and "database is locked" in body["detail"][0]
    assert predict.status_code == 503 and "database is locked" in predict.json()["detail"], predict.text
    assert elapsed < 3.0, f"the lock wait is not bounded by online_timeout_s=0.5: {elapsed:.1f} s"
    # The lock released: ready and answering again, with no restart.
    assert client.get("/ready").status_code == 200
    assert client.post("/predict", json={"market_id": online.ids[1]}).status_code == 200


def test_a_missing_sqlite_file_is_not_ready_and_the_ping_does_not_create_it(make_client, sqlite_settings, tmp_path):
    missing = tmp_path / "nowhere" / "online_store.db"
    client = make_client(settings=dataclasses.replace(sqlite_settings, online_sqlite_path=missing))
    ready = client.get("/ready")
    assert ready.status_code == 503 and "does not exist" in ready.json()["detail"][0]
    assert not missing.exists()

"""Serving fixtures: one real `feast apply` (Redis online store) and one real MLflow registry per session,
then per test a private copy of the registry DB, a flushed Redis with fresh online rows, and the app."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from config.settings import Settings, get_settings
from serving.app import create_app
from serving.options import ServingOptions
from tests.serving import world

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # 2 shared CI cores: BLAS/OpenMP pools only add contention for these tiny models.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(autouse=True)
def mlflow_http_bounds_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's lifespan sets MLflow's HTTP bounds in os.environ when unset (serving/models.py);
    record them as unset here so monkeypatch removes them again after the test."""
    import os

    from serving.models import MLFLOW_HTTP_BOUNDS

    for name in MLFLOW_HTTP_BOUNDS:
        if name not in os.environ:
            monkeypatch.setenv(name, "")   # remembers "unset" for the undo ...
            monkeypatch.delenv(name)       # ... and leaves it unset for the test


@pytest.fixture(scope="session")
def feast_project(redis_srv, tmp_path_factory) -> dict[str, str]:
    return world.apply_feast_project(tmp_path_factory.mktemp("serving_feast"), redis_srv)


@dataclass
class ModelStore:
    data_dir: Path
    feature_names: list[str]
    versions: dict[str, str]  # role in the tests -> registered version


@pytest.fixture(scope="session")
def model_store(feast_project, tmp_path_factory) -> ModelStore:
    """v1 (old champion), v2 (champion, previous_champion=1), v3 (registered, no alias) in a real registry.

    v2 is the production model kind (calibrated HistGradientBoosting); v1 and v3 are logistic regressions."""
    from features.retrieve import feature_names
    from features.store import get_store

    data_dir = tmp_path_factory.mktemp("serving_mlflow") / "data"
    settings = Settings.from_env({"PM_DATA_DIR": str(data_dir), **feast_project})
    settings.ensure_dirs()
    names = feature_names(get_store(settings), world.FEATURE_SERVICE)
    v1 = world.register_model(settings, names, seed=1, C=0.5)
    world.set_champion(settings, v1)
    v2 = world.register_model(settings, names, seed=2, kind="hgb")  # the production kind: calibrated HGB
    world.set_champion(settings, v2)
    v3 = world.register_model(settings, names, seed=3, C=2.0)
    return ModelStore(data_dir, names, {"old": v1, "champion": v2, "next": v3})


@pytest.fixture
def serving_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch, feast_project, model_store,
                     redis_clean) -> Settings:
    """The `settings` fixture's tmp paths, a private copy of the session registry DB, the session Feast project."""
    shutil.copy(model_store.data_dir / "mlflow.db", settings.data_dir / "mlflow.db")
    for name, value in {**feast_project, "PM_ADMIN_TOKEN": ADMIN_TOKEN}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    s = get_settings()
    assert s.mlflow_tracking_uri == f"sqlite:///{settings.data_dir / 'mlflow.db'}"
    return s


@pytest.fixture
def online(serving_settings: Settings) -> world.OnlineMarkets:
    from features.store import get_store

    return world.write_online(get_store(serving_settings), 40, pd.Timestamp.now(tz="UTC"))


FAST = ServingOptions(poll_interval_s=0, log_flush_interval_s=0.2, max_batch_size=50)


@pytest.fixture
def make_client(serving_settings) -> Iterator[Callable[..., TestClient]]:
    """make_client(options) -> a started TestClient (lifespan ran); make_client.stop(client) runs its
    shutdown; every client still running is shut down after the test."""
    running: list[TestClient] = []

    def make(options: ServingOptions = FAST, settings: Settings | None = None) -> TestClient:
        client = TestClient(create_app(settings or serving_settings, options), raise_server_exceptions=True)
        client.__enter__()
        running.append(client)
        return client

    def stop(client: TestClient) -> None:
        running.remove(client)
        client.__exit__(None, None, None)

    make.stop = stop
    yield make
    for client in list(running):
        stop(client)


@pytest.fixture
def client(make_client, online) -> TestClient:
    return make_client()

"""Fixtures for training tests: small synthetic training sets and a trained, registered model."""

from __future__ import annotations

from typing import Iterator

import pytest

from config.settings import Settings
from tests.training.synthetic import FEATURES, make_frame
from training.data import TrainingSet, training_set_from_frame


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One OpenMP/BLAS thread: the CI box has 2 cores shared by parallel test workers, where
    HistGradientBoosting's thread pool is many times slower than a single thread."""
    import sklearn.ensemble  # noqa: F401  (threadpoolctl only limits libraries already loaded)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def synthetic_frame():
    return make_frame(n_markets=120, snapshots=12, seed=1)


@pytest.fixture
def synthetic_ts(synthetic_frame) -> TrainingSet:
    return training_set_from_frame(synthetic_frame.copy(), FEATURES, "2025-01-01", run_gx=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Settings:
    """A fresh MLflow store (and data dir) per test module: its registry history is the module's own."""
    settings = Settings.from_env({"PM_DATA_DIR": str(tmp_path_factory.mktemp("mlflow") / "data")})
    settings.ensure_dirs()
    return settings


@pytest.fixture(scope="module")
def ts() -> TrainingSet:
    """300 markets x 3 snapshots, built without Feast or GX (what the model tests train on)."""
    return training_set_from_frame(make_frame(n_markets=300, snapshots=3, seed=1), FEATURES, "2025-01-01",
                                   run_gx=False)

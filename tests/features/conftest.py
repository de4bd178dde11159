"""Feature-store fixtures: ONE real `feast apply` (the CLI, on a temp copy of feature_repo/) per session
over adversarial offline data, then cheap per-test forks of its registry + online store.

A fork copies the SQLite registry and online-store files that apply produced (what a restore of a
Feast deployment would do), so each test materializes into its own online store and has its own
materialization history, without paying for another `feast apply` (~15 s on the CI box).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from config.settings import Settings
from tests.feast_project import copy_feature_repo
from tests.features import scenario


@dataclass
class AppliedRepo:
    root: Path  # temp "project": feature_repo copy + link to config/
    settings: Settings
    apply_stdout: str


def settings_for(data_dir: Path, repo: Path, **env: str) -> Settings:
    return Settings.from_env({"PM_DATA_DIR": str(data_dir), "PM_FEATURE_REPO_DIR": str(repo), **env})


@pytest.fixture(scope="session")
def applied_repo(tmp_path_factory: pytest.TempPathFactory) -> AppliedRepo:
    from features.store import apply

    root = tmp_path_factory.mktemp("feast_project")
    repo = copy_feature_repo(root)
    settings = settings_for(root / "data", repo)
    settings.ensure_dirs()
    scenario.publish_all(settings.offline_store_dir)
    out = apply(settings)
    return AppliedRepo(root, settings, out)


@pytest.fixture
def fork(applied_repo: AppliedRepo, tmp_path: Path) -> Callable[..., Settings]:
    """fork(online="sqlite"|"redis", redis=server) -> Settings of a private copy of the applied store."""

    def make(online: str = "sqlite", redis=None) -> Settings:
        base = applied_repo.settings
        registry = tmp_path / "registry.db"
        shutil.copy(base.feast_registry_uri.removeprefix("sqlite:///"), registry)
        env = {"PM_OFFLINE_STORE_DIR": str(base.offline_store_dir), "PM_FEAST_REGISTRY_URI": f"sqlite:///{registry}",
               "PM_ONLINE_STORE_TYPE": online}
        if online == "sqlite":
            online_db = tmp_path / "online.db"
            shutil.copy(base.online_sqlite_path, online_db)
            env["PM_ONLINE_SQLITE_PATH"] = str(online_db)
        else:
            env.update(PM_REDIS_HOST=redis.host, PM_REDIS_PORT=str(redis.port), PM_REDIS_PASSWORD=redis.password)
        return settings_for(tmp_path / "data", base.feature_repo_dir, **env)

    return make


def entity_rows(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"market_id": [m for m, _ in rows], "ts": pd.to_datetime([t for _, t in rows], utc=True)})

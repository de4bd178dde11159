"""A throwaway Feast project for tests and benchmarks: `feast apply` then writes nothing into the work tree."""

from __future__ import annotations

import shutil
from pathlib import Path

from config.settings import REPO_ROOT


def copy_feature_repo(project: Path) -> Path:
    """feature_repo/ copied into `project`, beside a link to the real `config` package (data_sources imports it)."""
    project.mkdir(parents=True, exist_ok=True)
    repo = project / "feature_repo"
    shutil.copytree(REPO_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    (project / "config").symlink_to(REPO_ROOT / "config", target_is_directory=True)
    return repo

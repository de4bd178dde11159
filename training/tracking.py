"""MLflow setup from settings, and lineage facts (git commit and dirty flag, pinned environment)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config.settings import Settings

EXPERIMENT = "market_forecaster"
REPO_ROOT = Path(__file__).resolve().parent.parent


def configure_mlflow(settings: "Settings", experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the settings' tracking/registry store; return the experiment id."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        experiment_id = existing.experiment_id
    else:
        location = (Path(settings.mlflow_artifact_root) / experiment).resolve()
        location.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(experiment, artifact_location=location.as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def client(settings: "Settings"):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def git_commit(repo_root: Path = REPO_ROOT) -> str:
    """HEAD commit read from .git files (no git subprocess); 'unknown' outside a checkout."""
    git_dir = repo_root / ".git"
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(" ", 1)[1]
        ref_file = git_dir / ref
        if ref_file.exists():
            return ref_file.read_text().strip()
        packed = git_dir / "packed-refs"
        for line in packed.read_text().splitlines() if packed.exists() else []:
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
        return "unknown (no commit yet)"
    except OSError:
        return "unknown"


def git_dirty(repo_root: Path = REPO_ROOT) -> bool | None:
    """Whether the working tree differs from HEAD (modified, staged or untracked files), so the
    recorded commit alone does not describe the code; None when not a git checkout or git fails."""
    import subprocess

    if not (repo_root / ".git").exists():
        return None
    try:
        # --no-optional-locks: read-only, never takes index.lock (others may be using the repo).
        out = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain"], cwd=repo_root,
                             capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())


def pinned_environment() -> str:
    """``name==version`` of every installed distribution, sorted (what pip freeze would say)."""
    seen = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            seen[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(seen[k] for k in sorted(seen)) + "\n"


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)

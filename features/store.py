"""Build the Feast FeatureStore from config.settings, with feature_repo/feature_store.yaml as the one definition.

The yaml references ${VAR}s. Feast itself only runs os.path.expandvars on it (an unset variable
stays literal), so here we substitute the same names from settings, in code, without touching
os.environ; `python -m features env` prints the same values for people running the Feast CLI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import warnings
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.settings import Settings, get_settings

if TYPE_CHECKING:
    from feast import FeatureStore

FEATURE_STORE_YAML = "feature_store.yaml"

# Feast's DuckDB offline store runs every query on ibis's process-wide default DuckDB connection,
# which refuses a second concurrent call ("connection is busy"). Offline work (materialization,
# historical retrieval) in one process is therefore serialized on this lock; separate processes
# (Airflow tasks) are unaffected.
OFFLINE_LOCK = threading.RLock()
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def online_store_config(settings: Settings) -> dict[str, str]:
    """Feast's online_store block for PM_ONLINE_STORE_TYPE."""
    if settings.online_store_type == "sqlite":
        return {"type": "sqlite", "path": str(settings.online_sqlite_path)}
    if settings.online_store_type == "redis":
        return {"type": "redis", "connection_string": settings.redis_connection_string}
    raise ValueError(f"PM_ONLINE_STORE_TYPE={settings.online_store_type!r} is not supported: use 'sqlite' or 'redis'")


def feast_yaml_env(settings: Settings) -> dict[str, str]:
    """Values of the ${VAR}s feature_store.yaml references."""
    return {
        "PM_FEAST_REGISTRY_URI": settings.feast_registry_uri,
        # JSON is valid YAML flow syntax, and json.dumps quotes/escapes a password safely.
        "PM_FEAST_ONLINE_STORE": json.dumps(online_store_config(settings)),
    }


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that makes config.settings in a child process resolve to exactly `settings`."""
    return {f.metadata["env"]: str(getattr(settings, f.name)) for f in fields(Settings)}


def cli_env(settings: Settings) -> dict[str, str]:
    """Everything a `feast` CLI process needs: the yaml's variables and the settings its repo reads."""
    return {**settings_env(settings), **feast_yaml_env(settings)}


def render_yaml(settings: Settings) -> str:
    """feature_store.yaml with its variables substituted from settings.

    A variable used in a value that settings does not provide is an error (Feast would keep it
    literal and fail later, far from the cause); variables in comments are left alone.
    """
    import yaml

    path = settings.feature_repo_dir / FEATURE_STORE_YAML
    values = feast_yaml_env(settings)
    text = path.read_text()
    used = {a or b for value in _scalars(yaml.safe_load(text)) for a, b in _VAR.findall(value)}
    missing = sorted(used - values.keys())
    if missing:
        raise KeyError(f"{path} references {', '.join(missing)}, which features.store.feast_yaml_env does not set")
    return _VAR.sub(lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def _scalars(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _scalars(v)]
    if isinstance(node, list):
        return [s for v in node for s in _scalars(v)]
    return [node] if isinstance(node, str) else []


def repo_config(settings: Settings | None = None) -> Any:
    """feast.RepoConfig from the rendered yaml (validated by Feast's own models)."""
    import yaml
    from feast.repo_config import RepoConfig

    settings = settings or get_settings()
    config = RepoConfig(**yaml.safe_load(render_yaml(settings)))
    config.repo_path = settings.feature_repo_dir
    return config


def get_store(settings: Settings | None = None) -> "FeatureStore":
    """The FeatureStore for these settings (default: this process's settings)."""
    from feast import FeatureStore

    # Importing feast runs warnings.simplefilter("once", DeprecationWarning): every library's deprecation
    # is shown (Python hides them outside __main__), ahead of any -W / PYTHONWARNINGS filter. Hidden
    # here, after that import, is only ibis's call of duckdb's deprecated fetch_arrow_table() in the
    # DuckDB offline store: repeated per view and window, and nothing a user of this project can fix.
    warnings.filterwarnings("ignore", r"fetch_arrow_table\(\) is deprecated", DeprecationWarning,
                            r"ibis\.backends\.duckdb")
    settings = settings or get_settings()
    ensure_local_dirs(settings)
    return FeatureStore(repo_path=str(settings.feature_repo_dir), config=repo_config(settings))


def ensure_local_dirs(settings: Settings) -> None:
    """Create the directories of the SQLite registry and online store (SQLite cannot create them).

    Called before any Feast use, including `python -m features env`, so that the documented
    `eval "$(python -m features env)"; cd feature_repo; feast apply` works on a fresh clone.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.feast_registry_uri.startswith("sqlite:///"):
        path = settings.feast_registry_uri.removeprefix("sqlite:///").split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    if settings.online_store_type == "sqlite":
        settings.online_sqlite_path.parent.mkdir(parents=True, exist_ok=True)


def views_without_data(store: "FeatureStore", views: list[str]) -> dict[str, str]:
    """{view: source glob} for views whose Parquet source has no published file yet.

    Feast's DuckDB store fails deep inside a query on an empty glob; callers check first and
    say which table is empty.
    """
    import glob

    from feast import FileSource

    empty = {}
    for name in views:
        source = store.get_feature_view(name).batch_source
        if isinstance(source, FileSource) and not glob.glob(source.path, recursive=True):
            empty[name] = source.path
    return empty


def feast_executable() -> str:
    """The `feast` console script of this interpreter's environment."""
    candidate = Path(sys.executable).parent / "feast"
    if candidate.exists():
        return str(candidate)
    raise FileNotFoundError(f"no `feast` executable beside {sys.executable}: is feast installed in this environment?")


def run_feast_cli(args: list[str], settings: Settings | None = None, timeout: float = 600) -> str:
    """Run the real `feast` CLI in the feature repo with this settings' environment; return its stdout.

    A subprocess, not feast's in-process apply: `feast apply` chdirs into the repo, appends it to
    sys.path and imports its files as top-level modules (`entities`, `feature_views`, ...), which would
    stay cached in this process's sys.modules. The child inherits os.environ (PYTHONPATH included:
    feature_repo/ module names must not collide with the project's packages, a test checks it).
    """
    settings = settings or get_settings()
    ensure_local_dirs(settings)
    env = {**os.environ, **cli_env(settings)}
    proc = subprocess.run([feast_executable(), *args], cwd=settings.feature_repo_dir, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        command = f"`feast {' '.join(args)}` in {settings.feature_repo_dir}"
        raise FeastCliError(f"{command} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}", command,
                            proc.stderr)
    return proc.stdout


class FeastCliError(RuntimeError):
    """The `feast` CLI failed: ``command`` is what ran (and where), ``stderr`` its output."""

    def __init__(self, message: str, command: str, stderr: str) -> None:
        super().__init__(message)
        self.command = command
        self.stderr = stderr

    def last_line(self) -> str:
        """The exception Feast died of (its last `SomeError: message` line), for a one-line report."""
        lines = [ln.strip(" │╰╭─") for ln in self.stderr.splitlines() if ln.strip(" │╰╭─")]
        errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", ln)]
        return (errors or lines or ["no output"])[-1]


def apply(settings: Settings | None = None) -> str:
    """`feast apply` of feature_repo/ against the configured registry and online store."""
    return run_feast_cli(["apply"], settings)

"""Point `python -m training` (whose get_settings() reads the environment) at a test's settings."""

from __future__ import annotations

import pytest

from config.settings import Settings, get_settings

# Every variable that could point the CLI elsewhere than the test's data dir.
ENV_VARS = ("PM_RAW_DIR", "PM_OFFLINE_STORE_DIR", "PM_QUARANTINE_DIR", "PM_FEAST_REGISTRY_URI",
            "PM_ONLINE_SQLITE_PATH", "MLFLOW_TRACKING_URI", "PM_MLFLOW_ARTIFACT_ROOT", "AIRFLOW_HOME",
            "PM_REPORTS_DIR", "PM_PREDICTION_LOG_DIR", "PM_ONLINE_STORE_TYPE", "PM_MODEL_NAME")


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Set ``env`` (and unset the other settings variables) for the CLI; the settings it will read.
    Call ``get_settings.cache_clear()`` after ``monkeypatch`` is undone."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    get_settings.cache_clear()
    return get_settings()

"""One GX context per test session: importing GX and opening the file context costs seconds.

The committed project in ``gx/`` is used as is (read only); validation results and Data Docs
go under a session tmp dir (``settings.data_dir / "gx"``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import REPO_ROOT, Settings


@pytest.fixture(scope="session")
def gate_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir: Path = tmp_path_factory.mktemp("validation_data")
    return Settings.from_env({"PM_DATA_DIR": str(data_dir), "PM_GX_DIR": str(REPO_ROOT / "gx")})

"""`python -m serving` as a real process: serves, and a SIGTERM (graceful stop) loses no logged prediction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from config.settings import REPO_ROOT, Settings
from features.store import settings_env
from monitoring.prediction_log import read_window
from tests.servers import free_port

pytestmark = pytest.mark.slow


def test_python_m_serving_serves_and_flushes_the_log_on_sigterm(serving_settings, online):
    port = free_port()
    settings = Settings.from_env({**settings_env(serving_settings), "PM_SERVING_PORT": str(port)})
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--log-level", "warning"], cwd=REPO_ROOT,
                            env={**os.environ, **settings_env(settings)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"python -m serving exited: {proc.stdout.read()[-3000:]}"
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "python -m serving not ready within 120 s"
            time.sleep(0.2)
        ids = [httpx.post(f"{url}/predict", json={"market_id": m}, timeout=10).json()["request_id"]
               for m in online.ids[:5]]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    output = proc.stdout.read()
    # uvicorn finishes its graceful shutdown (lifespan included), then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM), output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    now = datetime.now(timezone.utc)
    log = read_window(settings.prediction_log_dir, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert sorted(log["request_id"]) == sorted(ids)

"""The demo's serving step talks only to the service it started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from config.settings import REPO_ROOT


def test_demo_serving_refuses_a_port_another_process_listens_on(tmp_path: Path):
    """A `python -m serving` left running would otherwise answer the demo's requests, and the demo would
    report success for a service it never started."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
        env.update(PM_DATA_DIR=str(tmp_path / "data"), PM_SERVING_HOST="127.0.0.1", PM_SERVING_PORT=str(port))
        proc = subprocess.run([sys.executable, "-m", "scripts.demo_serving"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr
    assert "Traceback" not in proc.stderr and "service ready" not in proc.stdout

"""Demo step: start the real prediction service, ask it about open markets, stop it gracefully.

Used by `make demo` (`python -m scripts.demo_serving`). It talks to the service only over HTTP on PM_SERVING_HOST:PM_SERVING_PORT, exactly
as a trading system would, then sends SIGTERM so the prediction log is flushed (graceful stop).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from config.settings import get_settings
from ingestion.store import read_published


def _call(url: str, payload: dict | None = None) -> tuple[int, dict]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def main() -> int:
    settings = get_settings()
    if _port_in_use(settings.serving_host, settings.serving_port):
        # Another service (e.g. a `python -m serving` left running) would answer in our child's place.
        print(f"port {settings.serving_port} on {settings.serving_host} is already in use: stop what listens "
              "there or set PM_SERVING_PORT to a free port", file=sys.stderr)
        return 1
    markets = read_published(settings.offline_store_dir, "markets").sort_values("updated_at")
    current = markets.groupby("market_id").tail(1)
    open_ids = current.loc[current["resolved_at"].isna(), "market_id"].tolist()[:3]
    resolved_id = current.loc[current["resolved_at"].notna(), "market_id"].iloc[0]
    base = f"http://{settings.serving_host}:{settings.serving_port}"

    server = subprocess.Popen([sys.executable, "-m", "serving", "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:  # before trusting any answer on the port: it must be our child's
                print(f"the prediction service exited (code {server.returncode}) before it was ready",
                      file=sys.stderr)
                return 1
            try:
                status, ready = _call(f"{base}/ready")
                if status == 200 and ready.get("ready"):
                    break
                if ready.get("online_store_reachable") and not ready.get("model_loaded"):
                    # Up, but the registry has no champion (e.g. every model was refused by a gate).
                    print(f"the service is up but not ready: {ready.get('detail')}", file=sys.stderr)
                    return 1
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                print("the prediction service did not become ready", file=sys.stderr)
                return 1
            time.sleep(0.5)
        print(f"service ready at {base} (OpenAPI docs: {base}/docs)")
        for market_id in open_ids + [resolved_id, "no-such-market"]:
            status, body = _call(f"{base}/predict", {"market_id": market_id})
            shown = {k: body[k] for k in ("probability", "source", "model_version", "warnings") if k in body}
            print(f"POST /predict {market_id}: {status} {json.dumps(shown or body)[:300]}")
        status, body = _call(f"{base}/predict/batch", {"items": [{"market_id": m} for m in open_ids]})
        print(f"POST /predict/batch ({len(open_ids)} markets): {status}")
        status, model = _call(f"{base}/model")
        print(f"GET /model: {status} {json.dumps(model)[:300]}")
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: the prediction log is flushed before exit
        server.wait(timeout=60)
    print(f"prediction log: {settings.prediction_log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the prediction service beside `feast serve`, same Redis, same features, same markets, same run.

Both run as their own uvicorn processes (one worker each) against one real redis-server
(tests/servers.py). Our /predict does the online read of FeatureService market_forecaster_v1 AND
runs the model (plus TTL checks, response building, logging); feast serve's /get-online-features
only reads the features. Single-client latencies alternate the two services request by request so
machine noise hits both alike. Before the servers start, the stored-feature read alone is timed in
process: Feast's SDK (`get_online_features` + `to_dict`) beside our direct reader of Feast's Redis
layout (features.retrieve), which serving uses. Prints JSON.

    .venv/bin/python bench/bench_serving.py                      # ~1.5-4 min depending on the box
    .venv/bin/python bench/bench_serving.py --requests 2000 --clients 8 --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.settings import REPO_ROOT, Settings  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3), "p90_ms": round(percentile(ms, 90), 3),
            "p99_ms": round(percentile(ms, 99), 3), "mean_ms": round(statistics.fmean(ms), 3)}


def wait_ready(client, url: str, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            if client.get(url, timeout=2).status_code == 200:
                return
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{what} not ready at {url} within {timeout}s")


def throughput(make_request, clients: int, duration: float) -> dict[str, float]:
    import httpx

    counts, errors, latencies = [0] * clients, [0] * clients, [[] for _ in range(clients)]
    stop = threading.Event()

    def worker(k: int) -> None:
        with httpx.Client() as client:
            i = 0
            while not stop.is_set():
                started = time.perf_counter()
                ok = make_request(client, i)
                latencies[k].append(time.perf_counter() - started)
                counts[k] += ok
                errors[k] += not ok
                i += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = [x for per in latencies for x in per]
    return {"clients": clients, "requests_per_s": round(sum(counts) / elapsed, 1), "errors": sum(errors),
            **summary_ms(flat)}


def online_read_in_process(settings: Settings, markets: list[str], batch_size: int, repeats: int = 200) -> dict:
    """The stored-feature read alone, in this process, through the serving store (registry cached,
    bounded timeouts): Feast's SDK (`get_online_features` + `to_dict`) beside our direct Redis
    reader of the same layout, alternated call by call."""
    from features import retrieve
    from serving.features_source import FeastFeatureSource
    from tests.serving import world

    store = FeastFeatureSource(settings).store
    service = store.get_feature_service(world.FEATURE_SERVICE)
    odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
    wanted: dict[str, set[str]] = {}
    for projection in service.feature_view_projections:
        sources = (odfvs[projection.name].source_feature_view_projections.values()
                   if projection.name in odfvs else [projection])
        for source in sources:
            wanted.setdefault(source.name, set()).update(f.name for f in source.features)
    wanted_sorted = {view: sorted(names) for view, names in wanted.items()}
    out = {}
    for label, ids in (("1_market", markets[:1]), (f"{batch_size}_markets", markets[:batch_size])):
        times: dict[str, list[float]] = {"feast_sdk": [], "direct_redis": []}
        for i in range(repeats + 10):
            for name, read in (("feast_sdk", retrieve._read_stored_sdk), ("direct_redis", retrieve._read_stored_redis)):
                started = time.perf_counter()
                read(store, wanted_sorted, ids)
                if i >= 10:  # warm-up
                    times[name].append(time.perf_counter() - started)
        out[label] = {name: summary_ms(values) for name, values in times.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markets", type=int, default=300)
    parser.add_argument("--requests", type=int, default=400, help="single-client requests per service")
    parser.add_argument("--batch-requests", type=int, default=60, help="single-client batch requests per service")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    args = parser.parse_args()

    import httpx
    import pandas as pd

    from features.retrieve import feature_names
    from features.store import cli_env, feast_executable, get_store, settings_env
    from tests.servers import free_port, redis_server
    from tests.serving import world

    result: dict = {"bench": "serving", "markets": args.markets, "batch_size": args.batch_size,
                    "cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    procs: list[subprocess.Popen] = []
    with redis_server() as redis, tempfile.TemporaryDirectory(prefix="pm-bench-serving-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        env = world.apply_feast_project(root / "project", redis)
        ours_port, feast_port = free_port(), free_port()
        settings = Settings.from_env({"PM_DATA_DIR": str(root / "data"), **env, "PM_SERVING_PORT": str(ours_port)})
        settings.ensure_dirs()
        store = get_store(settings)
        names = feature_names(store, world.FEATURE_SERVICE)
        world.set_champion(settings, world.register_model(settings, names, seed=1, kind="hgb"))
        markets = world.write_online(store, args.markets, pd.Timestamp.now(tz="UTC")).ids
        result["setup_s"] = round(time.perf_counter() - t0, 1)
        result["online_read_in_process"] = online_read_in_process(settings, markets, args.batch_size)
        try:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "serving", "--log-level", "warning"], cwd=REPO_ROOT,
                env={**os.environ, **settings_env(settings)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen(
                [feast_executable(), "serve", "-p", str(feast_port), "--no-access-log", "-w", "1"],
                cwd=settings.feature_repo_dir, env={**os.environ, **cli_env(settings)},
                stdout=subprocess.DEVNULL, stderr=open(root / "feast_serve.log", "w")))
            ours, feast = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{feast_port}"
            with httpx.Client() as client:
                wait_ready(client, f"{ours}/ready", procs[0], "prediction service")
                wait_ready(client, f"{feast}/health", procs[1], "feast serve")

                def feast_body(ids: list[str]) -> dict:
                    now = int(datetime.now(timezone.utc).timestamp())  # feast serve reads UnixTimestamp as int seconds
                    return {"feature_service": world.FEATURE_SERVICE,
                            "entities": {"market_id": ids, "request_ts": [now] * len(ids)}}

                def call_ours(c, i: int) -> bool:
                    return c.post(f"{ours}/predict", json={"market_id": markets[i % len(markets)]}).status_code == 200

                def call_feast(c, i: int) -> bool:
                    return c.post(f"{feast}/get-online-features",
                                  json=feast_body([markets[i % len(markets)]])).status_code == 200

                def batch_ids(i: int) -> list[str]:
                    start = (i * args.batch_size) % len(markets)
                    return [markets[(start + k) % len(markets)] for k in range(args.batch_size)]

                def call_ours_batch(c, i: int) -> bool:
                    items = [{"market_id": m} for m in batch_ids(i)]
                    return c.post(f"{ours}/predict/batch", json={"items": items}).status_code == 200

                def call_feast_batch(c, i: int) -> bool:
                    return c.post(f"{feast}/get-online-features", json=feast_body(batch_ids(i))).status_code == 200

                # Sanity: both answer, and feast serve returns the same feature values we serve.
                check = client.post(f"{feast}/get-online-features", json=feast_body([markets[0]]))
                if check.status_code != 200:
                    raise RuntimeError(f"feast serve: {check.status_code} {check.text[:500]}\n"
                                       + (root / "feast_serve.log").read_text()[-3000:])
                ours_check = client.post(f"{ours}/predict", json={"market_id": markets[0]})
                ours_check.raise_for_status()
                feast_names = check.json()["metadata"]["feature_names"]
                price_at = feast_names.index("price")
                assert check.json()["results"][price_at]["values"][0] == ours_check.json()["features"]["price"]["value"]
                result["our_model_version"] = ours_check.json()["model_version"]

                for name, (a, b, n) in {"single": (call_ours, call_feast, args.requests),
                                        "batch": (call_ours_batch, call_feast_batch, args.batch_requests)}.items():
                    for i in range(20 if name == "single" else 5):  # warm-up
                        a(client, i), b(client, i)
                    lat_a, lat_b = [], []
                    for i in range(n):
                        for fn, out in ((a, lat_a), (b, lat_b)) if i % 2 == 0 else ((b, lat_b), (a, lat_a)):
                            started = time.perf_counter()
                            if not fn(client, i):
                                raise RuntimeError(f"{fn.__name__} failed during the {name} run")
                            out.append(time.perf_counter() - started)
                    key = "predict_1_market" if name == "single" else f"predict_batch_{args.batch_size}_markets"
                    result[key] = {"ours": summary_ms(lat_a), "feast_serve": summary_ms(lat_b)}

            result["throughput_predict_1_market"] = {
                "ours": throughput(call_ours, args.clients, args.duration),
                "feast_serve": throughput(call_feast, args.clients, args.duration)}
            result["throughput_batch"] = {
                "ours": throughput(call_ours_batch, args.clients, args.duration),
                "feast_serve": throughput(call_feast_batch, args.clients, args.duration)}
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        single = result["predict_1_market"]
        result["targets"] = {
            "predict_p50_below_feast_serve_p50": single["ours"]["p50_ms"] < single["feast_serve"]["p50_ms"],
            "predict_p99_below_10ms": single["ours"]["p99_ms"] < 10.0,
            "batch_p50_below_20ms": result[f"predict_batch_{args.batch_size}_markets"]["ours"]["p50_ms"] < 20.0,
        }
        result["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

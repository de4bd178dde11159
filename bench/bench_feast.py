"""Feature store benchmark: our Feast paths beside a baseline measured in the same run. Prints JSON.

1. Materialization into Redis (rows/s) vs two floors: redis-py pipelined plain HSETs of the same rows,
   and the same rows in Feast's Redis layout (serialized entity key, murmur3 fields, Value protos).
2. Historical retrieval of N entity rows with the `duckdb` and the `file` (dask) offline store vs
   DuckDB's own ASOF JOIN over the same Parquet files (the choice in feature_store.yaml).
3. Online read latency p50/p99 for 1 and 100 markets through the Feast SDK (and features.retrieve).

Default size is small (10k markets x 30 daily snapshots = 300k feature rows, 100k entity rows) to
run in a few minutes on a shared 2-core box; use --markets / --days / --entity-rows for larger runs.
The feature Parquet files are always written directly in the offline-store layout of architecture.md
(no simulator, no ingestion) so setup stays bounded at 1M markets. For big runs, --skip-online,
--skip-historical and --skip-service leave out parts (the online part re-materializes all three
views; the service retrieval costs ~0.1 ms per entity row in the python on-demand view). The load
average is recorded before and after each part: the box is shared.
Redis is a private server from tests/servers.py on a free port (never the machine's 6379).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.settings import Settings  # noqa: E402

PRICE_COLUMNS = ["price", "volume_24h", "price_change_1d", "price_change_7d", "price_volatility_7d",
                 "price_volatility_30d", "volume_mean_7d"]
T0 = pd.Timestamp("2024-01-01", tz="UTC")


def write_offline(offline: Path, markets: int, days: int, seed: int) -> dict[str, int]:
    """price_features + market_info in the architecture.md layout, one file per month."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"m{i:07d}" for i in range(markets)])
    ingested = pd.Timestamp("2024-12-31", tz="UTC")
    ts = T0 + pd.to_timedelta(np.arange(1, days + 1), unit="D")
    n = markets * days
    prices = pd.DataFrame({"market_id": np.repeat(ids, days), "ts": np.tile(ts.values, markets)})
    prices["ts"] = pd.to_datetime(prices["ts"], utc=True)
    for c in PRICE_COLUMNS:
        prices[c] = rng.random(n)
    prices["ingested_at"], prices["batch_id"] = ingested, "bench000000000000"
    for month, part in prices.groupby(prices["ts"].dt.strftime("%Y-%m")):
        path = offline / "price_features" / f"month={month}" / "bench000000000000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        part = part.astype({"ts": "datetime64[us, UTC]", "ingested_at": "datetime64[us, UTC]"})
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), path, row_group_size=256_000)
    poll_ids, poll_ts = ids[::2], ts[::3]
    polls = pd.DataFrame({"market_id": np.repeat(poll_ids, len(poll_ts)),
                          "ts": pd.to_datetime(np.tile(poll_ts.values, len(poll_ids)), utc=True)})
    polls["poll_average"], polls["poll_trend"] = rng.random(len(polls)), rng.uniform(-0.1, 0.1, len(polls))
    polls["n_polls"] = rng.integers(1, 20, len(polls))
    polls["ingested_at"], polls["batch_id"] = ingested, "bench000000000000"
    path = offline / "poll_features" / "month=2024-01" / "bench000000000000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    polls = polls.astype({"ts": "datetime64[us, UTC]", "ingested_at": "datetime64[us, UTC]"})
    pq.write_table(pa.Table.from_pandas(polls, preserve_index=False), path)
    info = pd.DataFrame({"market_id": ids, "event_ts": T0, "question": "?", "event_type": "election",
                         "platform": "kalshi", "created_at": T0, "resolution_date": T0 + pd.Timedelta(days=days + 30),
                         "ingested_at": ingested, "batch_id": "bench000000000000"})
    path = offline / "market_info" / "month=2024-01" / "bench000000000000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    info = info.astype({c: "datetime64[us, UTC]" for c in ("event_ts", "created_at", "resolution_date", "ingested_at")})
    pq.write_table(pa.Table.from_pandas(info, preserve_index=False), path)
    return {"price_rows": n, "markets": markets}


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def bench_materialize(settings: Settings, redis_client, markets: int, days: int) -> dict:
    from features.materialize import materialize
    from features.store import get_store

    store = get_store(settings)
    start, end = T0.to_pydatetime(), (T0 + pd.Timedelta(days=days + 1)).to_pydatetime()
    # Warm-up on an empty window: Feast imports its ibis/DuckDB backend (~2.5 s) on first use.
    warm_seconds, _ = timed(materialize, start - timedelta(hours=1), start, views=["price_features"], store=store)
    seconds, _ = timed(materialize, start, end, views=["price_features"], chunk=timedelta(days=days + 1), store=store)
    written = markets  # pull_latest_features: Feast writes the newest row per market of the window
    assert redis_client.dbsize() >= markets, "materialization did not reach Redis"
    # The Feast-format floor below must write what Feast wrote: same key and field names.
    # (feast_redis_key mirrors floor_feast_format's key construction.)
    fields = set(redis_client.hkeys(feast_redis_key(store, "m0000000")))
    expected = {b"_ts:price_features", *(feast_field_key(c) for c in PRICE_COLUMNS)}
    assert expected <= fields, f"Feast's Redis layout changed: expected fields {expected}, found {fields}"

    # Floor: the same number of rows, same field count, one pipelined HSET per row (no Feast, no reads).
    rng = np.random.default_rng(0)
    redis_client.flushdb()
    values = rng.random((markets, len(PRICE_COLUMNS)))
    floor_start = time.perf_counter()
    pipe = redis_client.pipeline(transaction=False)
    for i in range(markets):
        mapping = {c: float(values[i, j]) for j, c in enumerate(PRICE_COLUMNS)}
        mapping["_ts:price_features"] = 1_700_000_000
        pipe.hset(f"floor:{i}", mapping=mapping)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    floor = time.perf_counter() - floor_start
    redis_client.flushdb()
    feast_format = floor_feast_format(redis_client, store, values)
    redis_client.flushdb()
    return {"rows": written, "offline_rows_in_window": markets * days, "first_call_warmup_seconds": round(warm_seconds, 3),
            "feast_seconds": round(seconds, 3), "feast_rows_per_s": round(written / seconds),
            "floor_redis_pipelined_hset_seconds": round(floor, 3), "floor_rows_per_s": round(written / floor),
            "floor_feast_format_seconds": round(feast_format, 3),
            "floor_feast_format_rows_per_s": round(written / feast_format)}


def feast_redis_key(store, market_id: str) -> bytes:
    """The Redis key Feast's Redis online store uses for one market."""
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    entity_key = EntityKey(join_keys=["market_id"], entity_values=[Value(string_val=market_id)])
    version = store.config.entity_key_serialization_version
    return _redis_key(store.project, entity_key, entity_key_serialization_version=version)


def feast_field_key(column: str) -> bytes:
    """The hash field Feast's Redis online store uses for one price_features column."""
    from feast.infra.online_stores.helpers import _mmh3

    return _mmh3(f"price_features:{column}")


def floor_feast_format(redis_client, store, values: np.ndarray) -> float:
    """Seconds to write the rows as Feast's Redis store lays them out, with redis-py pipelines.

    Same key (serialized entity key + project), same murmur3 field names and serialized Value /
    Timestamp protos, 10k rows per pipeline; no offline read, no timestamp read-before-write.
    """
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from google.protobuf.timestamp_pb2 import Timestamp

    project, version = store.project, store.config.entity_key_serialization_version
    field_keys = [feast_field_key(c) for c in PRICE_COLUMNS]
    ts = Timestamp()
    ts.FromDatetime((T0 + pd.Timedelta(days=1)).to_pydatetime())
    start = time.perf_counter()
    pipe = redis_client.pipeline(transaction=False)
    for i in range(len(values)):
        entity_key = EntityKey(join_keys=["market_id"], entity_values=[Value(string_val=f"m{i:07d}")])
        key = _redis_key(project, entity_key, entity_key_serialization_version=version)
        mapping = {"_ts:price_features": ts.SerializeToString()}
        for field_key, value in zip(field_keys, values[i]):
            mapping[field_key] = Value(double_val=float(value)).SerializeToString()
        pipe.hset(key, mapping=mapping)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - start


def entity_frame(markets: int, days: int, rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.array([f"m{i:07d}" for i in range(markets)])
    offsets = pd.to_timedelta(rng.uniform(0, days + 2, rows), unit="D").round("s")
    return pd.DataFrame({"market_id": ids[rng.integers(0, markets, rows)], "event_timestamp": T0 + offsets})


def bench_historical(settings: Settings, markets: int, days: int, rows: int, seed: int, skip_file: bool,
                     skip_service: bool) -> dict:
    import duckdb
    from feast import FeatureStore

    from features.store import repo_config

    entities = entity_frame(markets, days, rows, seed)
    refs = [f"price_features:{c}" for c in PRICE_COLUMNS]
    out: dict = {"entity_rows": rows}
    for offline_type in ("duckdb", "file"):
        if offline_type == "file" and skip_file:
            continue
        config = repo_config(settings)
        config.offline_config = {"type": offline_type}
        config._offline_store = None
        store = FeatureStore(repo_path=str(settings.feature_repo_dir), config=config)
        seconds, frame = timed(lambda: store.get_historical_features(entities, refs).to_df())
        # Recorded, not asserted: the file (dask) store drops entity rows that match no feature row.
        out[f"feast_{offline_type}_rows_returned"] = len(frame)
        out[f"feast_{offline_type}_seconds"] = round(seconds, 3)
        out[f"feast_{offline_type}_null_price"] = int(frame["price"].isna().sum())

    if not skip_service:
        # Our training path: the whole FeatureService (3 views + on-demand), row ids, order restored.
        from features.retrieve import historical_features

        config_store = FeatureStore(repo_path=str(settings.feature_repo_dir), config=repo_config(settings))
        service_entities = entities.rename(columns={"event_timestamp": "ts"})
        seconds, frame = timed(historical_features, service_entities, "market_forecaster_v1", store=config_store)
        assert len(frame) == rows
        out["features_retrieve_service_seconds"] = round(seconds, 3)

    glob = str(settings.offline_store_dir / "price_features" / "**" / "*.parquet")
    con = duckdb.connect()
    con.register("entities", entities.assign(row_id=np.arange(rows)))
    ttl = "INTERVAL 3 DAY"
    query = f"""
        SELECT e.row_id, e.market_id, e.event_timestamp,
               CASE WHEN p.ts >= e.event_timestamp - {ttl} THEN p.price END AS price
        FROM entities e ASOF LEFT JOIN read_parquet('{glob}', hive_partitioning = true) p
          ON e.market_id = p.market_id AND e.event_timestamp >= p.ts
    """
    seconds, frame = timed(lambda: con.execute(query).df())
    assert len(frame) == rows
    out["duckdb_asof_join_seconds"] = round(seconds, 3)
    out["duckdb_asof_null_price"] = int(frame["price"].isna().sum())
    return out


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q))


def bench_online(settings: Settings, markets: int, days: int, repeats: int) -> dict:
    from features.retrieve import online_features
    from features.store import get_store

    store = get_store(settings)
    from features.materialize import materialize

    materialize(T0.to_pydatetime(), (T0 + pd.Timedelta(days=days + 1)).to_pydatetime(),
                chunk=timedelta(days=days + 1), store=store)
    service = store.get_feature_service("market_forecaster_v1")
    rng = np.random.default_rng(1)
    when = (T0 + pd.Timedelta(days=days, hours=12)).to_pydatetime()
    out: dict = {"repeats": repeats}
    for batch in (1, 100):
        sdk, ours = [], []
        for _ in range(repeats):
            ids = [f"m{i:07d}" for i in rng.integers(0, markets, batch)]
            t, resp = timed(store.get_online_features, features=service,
                            entity_rows=[{"market_id": m, "request_ts": when} for m in ids])
            sdk.append(t * 1000)
            t, _ = timed(online_features, ids, service, request_ts=when, store=store)
            ours.append(t * 1000)
        out[f"sdk_{batch}_markets_ms"] = {"p50": round(percentile(sdk, 50), 2), "p99": round(percentile(sdk, 99), 2)}
        out[f"features_retrieve_{batch}_markets_ms"] = {"p50": round(percentile(ours, 50), 2),
                                                       "p99": round(percentile(ours, 99), 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30, help="daily price snapshots per market")
    parser.add_argument("--entity-rows", type=int, default=100_000)
    parser.add_argument("--online-repeats", type=int, default=200)
    parser.add_argument("--skip-file-store", action="store_true", help="skip the (slow) file/dask offline store")
    parser.add_argument("--skip-online", action="store_true", help="skip online reads (they re-materialize all views)")
    parser.add_argument("--skip-historical", action="store_true", help="skip historical retrieval")
    parser.add_argument("--skip-service", action="store_true",
                        help="skip historical_features on the whole FeatureService (slow python on-demand view)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pm-bench-feast-"))
    result: dict = {"benchmark": "feast", "args": vars(args), "python": platform.python_version()}
    # Feast prints progress bars to stdout: send them to stderr so stdout is the JSON result only.
    with contextlib.redirect_stdout(sys.stderr):
        run(args, work, result)
    print(json.dumps(result, indent=2))


def with_load(fn, *args) -> dict:
    """fn(*args) plus the 1-minute load average before and after (other jobs share the machine)."""
    before = os.getloadavg()[0]
    out = fn(*args)
    return {**out, "load_average_1m_before_after": [round(before, 2), round(os.getloadavg()[0], 2)]}


def run(args: argparse.Namespace, work: Path, result: dict) -> None:
    from features.store import apply
    from tests.servers import redis_server

    try:
        base_env = {"PM_DATA_DIR": str(work / "data")}
        sqlite_settings = Settings.from_env(base_env)
        sqlite_settings.ensure_dirs()
        t, sizes = timed(write_offline, sqlite_settings.offline_store_dir, args.markets, args.days, args.seed)
        result["data"] = {**sizes, "write_seconds": round(t, 2)}
        t, _ = timed(apply, sqlite_settings)
        result["apply_seconds"] = round(t, 2)
        with redis_server() as redis:
            redis_settings = Settings.from_env({**base_env, "PM_ONLINE_STORE_TYPE": "redis", "PM_REDIS_HOST": redis.host,
                                                "PM_REDIS_PORT": str(redis.port), "PM_REDIS_PASSWORD": redis.password})
            result["materialize_redis"] = with_load(bench_materialize, redis_settings, redis.client(), args.markets,
                                                    args.days)
            if not args.skip_online:
                result["online_redis"] = with_load(bench_online, redis_settings, args.markets, args.days,
                                                   args.online_repeats)
        if not args.skip_historical:
            result["historical"] = with_load(bench_historical, sqlite_settings, args.markets, args.days,
                                             args.entity_rows, args.seed, args.skip_file_store, args.skip_service)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: GX validation of N price-snapshot rows vs reading those rows from Parquet.

Prints JSON with both times and the ratio (target: validation <= 3x the Parquet read).
The validation time is the whole gate path ingestion pays per batch: building the validation
frame (join with market lifetimes) + the price_snapshots checkpoint (one suite: the contract
plus the warning-level distribution checks; result stored, Data Docs updated). The GX context
is opened once per process (as in ingestion), so the first run is reported separately as
``first_run_s`` and the median of later runs is the steady-state figure.

    .venv/bin/python bench/bench_validation.py                # 1M rows, 5 repeats
    .venv/bin/python bench/bench_validation.py --rows 200000  # quicker
    .venv/bin/python bench/bench_validation.py --shuffle      # rows in random order, not grouped by market

Rows are grouped by market (ts increasing) by default, as exports usually are; some of the gate's
exact speed-ups (validation/speedups.py, validation/frames.py) work per run of one market's rows,
so ``--shuffle`` shows the cost when rows come in random order.

Beside each big batch the same gate runs on a batch of ``--floor-rows`` rows (default 1 000):
``fixed_cost_s`` is what one checkpoint run costs whatever the batch size, and
``fixed_cost_ratio`` that floor against the big batch's read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.settings import Settings  # noqa: E402


def make_tables(n_rows: int, n_markets: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"mkt-{i:06d}" for i in range(n_markets)], dtype=object)
    created = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 60, n_markets), unit="D")
    resolved = created + pd.Timedelta(days=200)
    markets = pd.DataFrame({
        "market_id": ids, "question": [f"Will {i} happen?" for i in range(n_markets)],
        "event_type": rng.choice(["election", "sports", "crypto", "other"], n_markets).astype(object),
        "platform": rng.choice(["polymarket", "kalshi"], n_markets).astype(object),
        "created_at": created, "resolution_date": resolved, "resolved_at": resolved,
        "outcome": pd.array(rng.integers(0, 2, n_markets), dtype="Int8"), "updated_at": resolved,
    })
    per_market = -(-n_rows // n_markets)
    market_idx = np.repeat(np.arange(n_markets), per_market)[:n_rows]
    step = np.tile(np.arange(per_market), n_markets)[:n_rows]
    ts = created[market_idx] + pd.to_timedelta(step * 3, unit="h")
    snapshots = pd.DataFrame({
        "market_id": ids[market_idx], "ts": ts,
        "price": rng.uniform(0.02, 0.98, n_rows), "volume_24h": rng.exponential(1000.0, n_rows),
    })
    return markets, snapshots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--markets", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shuffle", action="store_true", help="write the rows in random order")
    parser.add_argument("--floor-rows", type=int, default=1_000,
                        help="rows of the small batch gated beside each big one: GX's fixed cost per run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_validation_"))
    try:
        repo = Path(__file__).resolve().parent.parent
        settings = Settings.from_env({"PM_DATA_DIR": str(work / "data"), "PM_GX_DIR": str(repo / "gx")})
        markets, snapshots = make_tables(args.rows, args.markets, args.seed)
        # Same shape, same markets, a handful of rows: what one checkpoint run costs whatever the batch size.
        _, small = make_tables(args.floor_rows, args.markets, args.seed)
        if args.shuffle:
            snapshots = snapshots.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
        parquet = work / "price_snapshots.parquet"
        snapshots.to_parquet(parquet, index=False)

        t = time.perf_counter()
        from validation.gate import run_batch_checkpoint
        from validation.project import get_project
        get_project(settings)
        setup_s = time.perf_counter() - t

        from validation.frames import market_lifetimes, observation_frame

        read_times, validate_times, frame_times, floor_times, first_run_s = [], [], [], [], None
        for i in range(args.repeats + 1):
            t = time.perf_counter()
            frame = pd.read_parquet(parquet)
            read_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            observation_frame(frame, "price_snapshots", market_lifetimes(None, markets))
            frame_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = run_batch_checkpoint({"price_snapshots": frame}, f"bench-{i}", settings=settings,
                                          published_markets=markets)
            elapsed = time.perf_counter() - t
            if not result.success:
                raise SystemExit(f"benchmark batch unexpectedly failed validation:\n{result.to_text()}")
            t = time.perf_counter()
            small_result = run_batch_checkpoint({"price_snapshots": small.copy()}, f"bench-floor-{i}",
                                                settings=settings, published_markets=markets)
            floor_elapsed = time.perf_counter() - t
            if not small_result.success:
                raise SystemExit(f"small benchmark batch unexpectedly failed validation:\n{small_result.to_text()}")
            if i == 0:
                first_run_s = elapsed
            else:
                validate_times.append(elapsed)
                floor_times.append(floor_elapsed)

        read_s = statistics.median(read_times)
        validate_s = statistics.median(validate_times)
        floor_s = statistics.median(floor_times)
        print(json.dumps({
            "benchmark": "validation_price_snapshots",
            "rows": args.rows, "markets": args.markets, "repeats": args.repeats,
            "row_order": "shuffled" if args.shuffle else "grouped by market",
            "parquet_read_s": round(read_s, 4),
            "validation_s": round(validate_s, 4),
            "ratio": round(validate_s / read_s, 2),
            "target_ratio": 3.0,
            "of_which_frame_build_s": round(statistics.median(frame_times), 4),
            # The same gate on a tiny batch: GX's cost per checkpoint run (freshness checks, metric
            # graph, stored result, Data Docs), which no per-row speed-up can remove.
            "fixed_cost_rows": args.floor_rows,
            "fixed_cost_s": round(floor_s, 4),
            "fixed_cost_ratio": round(floor_s / read_s, 2),
            "parquet_read_all_s": [round(x, 4) for x in read_times[1:]],
            "validation_all_s": [round(x, 4) for x in validate_times],
            "first_run_s": round(first_run_s, 4),
            "gx_import_and_context_s": round(setup_s, 3),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
        }, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark the market simulator: rows/s and peak memory, beside a plain Parquet-write baseline.

Each size runs in a fresh subprocess so ``ru_maxrss`` (peak resident memory) belongs to that size
alone; bounded memory shows as a peak that barely grows while the number of markets grows 10x.
The baseline, in the same subprocess after the simulator, writes the same number of rows of
random numbers (same columns as price_snapshots, no simulation) with one ParquetWriter in chunks:
the cost of the I/O the simulator cannot avoid.

    python bench/bench_simulator.py                 # 2k and 20k markets
    python bench/bench_simulator.py --sizes 100000  # the large run (about a minute)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _baseline(n_rows: int, out: Path, chunk_rows: int) -> float:
    """Write ``n_rows`` random price_snapshots-shaped rows; return seconds."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    schema = pa.schema([("market_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
                        ("price", pa.float64()), ("volume_24h", pa.float64())])
    ids = pa.array([f"polymarket-0-{i:07d}" for i in range(1000)])
    ts_type = schema.field("ts").type
    t0 = time.perf_counter()
    with pq.ParquetWriter(out, schema) as writer:
        for lo in range(0, n_rows, chunk_rows):
            n = min(chunk_rows, n_rows - lo)
            writer.write_table(pa.Table.from_arrays([
                ids.take(pa.array(rng.integers(0, 1000, n))),
                pa.array(rng.integers(1_700_000_000, 1_730_000_000, n) * 1_000_000).cast(ts_type),
                pa.array(rng.random(n)), pa.array(rng.random(n) * 1e4),
            ], schema=schema))
    return time.perf_counter() - t0


def run_one(n_markets: int, fmt: str, batches: int) -> dict:
    """One size, in this process: simulator, then baseline."""
    sys.path.insert(0, str(REPO_ROOT))
    from ingestion.simulate import SimulationConfig, generate

    cfg = SimulationConfig(n_markets=n_markets, start=date(2024, 1, 1), end=date(2025, 1, 1), seed=0,
                           n_batches=batches, fmt=fmt)
    with tempfile.TemporaryDirectory(prefix="bench_simulator_") as tmp:
        t0 = time.perf_counter()
        summary = generate(cfg, Path(tmp) / "out", progress=False)
        sim_s = time.perf_counter() - t0
        sim_rss = _peak_rss_mb()
        rows = summary.n_market_versions + summary.n_snapshots + summary.n_polls + summary.n_truth
        disk_mb = sum(p.stat().st_size for p in (Path(tmp) / "out").rglob("*") if p.is_file()) / 2**20
        base_s = _baseline(rows, Path(tmp) / "baseline.parquet", chunk_rows=100_000)
    return {
        "n_markets": n_markets, "format": fmt, "batches": batches,
        "rows_written": rows, "snapshots": summary.n_snapshots, "polls": summary.n_polls,
        "market_versions": summary.n_market_versions, "output_mb": round(disk_mb, 1),
        "simulator_s": round(sim_s, 2), "simulator_rows_per_s": round(rows / sim_s),
        "baseline_parquet_write_s": round(base_s, 2), "baseline_rows_per_s": round(rows / base_s),
        "simulator_vs_baseline": round(sim_s / base_s, 2),
        "peak_rss_mb_after_simulator": round(sim_rss, 1),
        "brier_market": round(summary.brier_market, 4), "brier_truth": round(summary.brier_truth, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="numbers of markets")
    parser.add_argument("--format", dest="fmt", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # internal: run one size, print JSON
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(run_one(args.worker, args.fmt, args.batches)))
        return
    results = []
    for n in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--worker", str(n), "--format", args.fmt,
                               "--batches", str(args.batches)], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "simulator", "python": platform.python_version(),
                      "machine": platform.machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark ingest: rows/s of contract-exact ingestion beside a plain pyarrow read + write baseline.

One simulated year (``--markets`` markets, default 2000: about 100k rows) is generated once, then,
in this process:

* ``baseline``: ``pq.read_table`` of each table and ``pq.write_table`` of the same rows (the I/O
  any ingest must do, with no checks, features or partitioning);
* ``ingest_one_batch``: :func:`ingestion.ingest.ingest_batch` of the whole year as one batch into a
  fresh store (reading, typing, every contract rule, batch id, rolling features, month
  partitions, staged atomic publish), without the Great Expectations gate;
* ``ingest_multi_batch``: the same world delivered as ``--batches`` time-ordered batches, each
  ingested on top of the previous ones (published-row lookback for rolling features and
  cross-batch checks included);
* ``ingest_with_gate`` (``--gate``): the one-batch ingest including the GX gate; the first GX run
  in a process also pays for importing Great Expectations, reported separately.

    python bench/bench_ingest.py                      # 2k markets, parquet
    python bench/bench_ingest.py --markets 20000 --format csv --gate
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _baseline(batch_dir: Path, out_dir: Path) -> tuple[int, float]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True)
    rows = 0
    t0 = time.perf_counter()
    for path in sorted(batch_dir.iterdir()):
        table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
        rows += table.num_rows
        pq.write_table(table, out_dir / f"{path.stem}.parquet")
    return rows, time.perf_counter() - t0


def _settings(root: Path):
    from config.settings import Settings

    base = Settings.from_env({"PM_DATA_DIR": str(root)})
    return dataclasses.replace(base, offline_store_dir=root / "offline", quarantine_dir=root / "quarantine")


def _ingest_all(batches: list[Path], root: Path, run_gate: bool) -> tuple[int, float]:
    from ingestion.ingest import ingest_batch

    settings = _settings(root)
    rows = 0
    t0 = time.perf_counter()
    for batch in batches:
        result = ingest_batch(batch, settings=settings, run_gate=run_gate)
        if not result.accepted:
            raise SystemExit(f"benchmark batch refused:\n{result.to_text()}")
        rows += sum(result.input_rows.values())
    return rows, time.perf_counter() - t0


def _rate(rows: int, seconds: float) -> dict:
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=2000)
    parser.add_argument("--format", dest="fmt", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--batches", type=int, default=4, help="batches for the multi-batch delivery")
    parser.add_argument("--gate", action="store_true",
                        help="also time ingest with the Great Expectations gate")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO_ROOT))
    from ingestion.simulate import SimulationConfig, generate

    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        work = Path(tmp)
        world = dict(n_markets=args.markets, start=date(2024, 1, 1), end=date(2025, 1, 1), seed=0,
                     fmt=args.fmt)
        generate(SimulationConfig(**world, n_batches=1), work / "one", progress=False)
        generate(SimulationConfig(**world, n_batches=args.batches), work / "multi", progress=False)
        one = sorted((work / "one").glob("batch-*"))
        multi = sorted((work / "multi").glob("batch-*"))

        base_rows, base_s = _baseline(one[0], work / "baseline")
        rows, secs = _ingest_all(one, work / "store-one", run_gate=False)
        m_rows, m_secs = _ingest_all(multi, work / "store-multi", run_gate=False)
        result = {
            "benchmark": "ingest",
            "markets": args.markets, "format": args.fmt, "python": platform.python_version(),
            "baseline_pyarrow_read_write": _rate(base_rows, base_s),
            "ingest_one_batch": _rate(rows, secs),
            f"ingest_multi_batch_{len(multi)}": _rate(m_rows, m_secs),
            "slowdown_vs_baseline": round(secs / base_s, 1),
        }
        if args.gate:
            g_rows, g_secs = _ingest_all(one, work / "store-gate-warmup", run_gate=True)
            g2_rows, g2_secs = _ingest_all(one, work / "store-gate", run_gate=True)
            result["ingest_with_gate_first_in_process"] = _rate(g_rows, g_secs)
            result["ingest_with_gate"] = _rate(g2_rows, g2_secs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Drift run over a large prediction log, beside the floor: numpy/pyarrow alone reading and sorting the same columns.

Default: 1,000,000 logged predictions x 20 features (18 numeric, 2 categorical) over 7 daily
partitions, 20,000 markets. Prints one JSON object.

    .venv/bin/python bench/bench_drift.py [--rows 1000000] [--numeric 18] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitoring.drift import compare_to_reference  # noqa: E402
from monitoring.prediction_log import FEATURE_PREFIX, read_window, write_log  # noqa: E402
from monitoring.reference import build_reference_profile  # noqa: E402
from tests.monitoring import synthetic as syn  # noqa: E402


def floor_read_and_sort(log_dir: Path, columns: list[str], numeric: list[str]) -> float:
    """The least any drift run must do: read the columns from Parquet and sort each numeric one."""
    import pyarrow.parquet as pq

    t = time.perf_counter()
    tables = [pq.read_table(f, columns=columns) for f in sorted(log_dir.glob("date=*/part-*.parquet"))]
    for c in numeric:
        col = np.concatenate([tb.column(c).to_numpy(zero_copy_only=False) for tb in tables])
        np.sort(col)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--numeric", type=int, default=18, help="numeric features (plus 2 categorical)")
    ap.add_argument("--markets", type=int, default=20_000)
    ap.add_argument("--reference-rows", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions; the best is reported")
    ap.add_argument("--drift", type=float, default=0.2, help="shift (in std) of one feature in the window")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    numeric = syn.numeric_names(args.numeric)
    ref = syn.features(args.reference_rows, rng, n_numeric=args.numeric)
    ref_markets = rng.integers(0, args.markets // 2, args.reference_rows)
    p_ref = rng.beta(2, 2, args.reference_rows)
    profile = build_reference_profile(ref, p_ref, (rng.random(args.reference_rows) < p_ref).astype(int), numeric,
                                      syn.CATEGORICAL, groups=ref_markets)

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        log_dir = Path(tmp) / "log"
        feats = syn.features(args.rows, rng, n_numeric=args.numeric, shift=args.drift, shifted=("price_change_1d",))
        markets = np.array([f"m{i:06d}" for i in range(args.markets)])[rng.integers(0, args.markets, args.rows)]
        df = syn.log_frame(feats, rng.beta(2, 2, args.rows), markets, syn.T0, timedelta(days=7), rng)
        write_log(df, log_dir)
        del df, feats
        log_bytes = sum(f.stat().st_size for f in log_dir.rglob("*.parquet"))
        feature_cols = [FEATURE_PREFIX + c for c in [*numeric, *syn.CATEGORICAL]]
        start, end = syn.T0, syn.T0 + timedelta(days=7)

        floor_s, read_s, drift_s, total_s = [], [], [], []
        for _ in range(args.repeat):
            floor_s.append(floor_read_and_sort(log_dir, [*feature_cols, "probability"],
                                               [FEATURE_PREFIX + c for c in numeric] + ["probability"]))
            t0 = time.perf_counter()
            window = read_window(log_dir, start, end, columns=feature_cols)
            t1 = time.perf_counter()
            cols = {c[len(FEATURE_PREFIX):]: window[c] for c in feature_cols}
            result = compare_to_reference(cols, window["probability"], profile, groups=window["market_id"])
            t2 = time.perf_counter()
            read_s.append(t1 - t0)
            drift_s.append(t2 - t1)
            total_s.append(t2 - t0)
            del window, cols

    flagged = {f["feature"]: f["severity"] for f in result["features"] if f["severity"] != "none"}
    best_total, best_floor = min(total_s), min(floor_s)
    print(json.dumps({
        "bench": "drift",
        "rows": args.rows, "features": args.numeric + len(syn.CATEGORICAL), "markets": args.markets,
        "log_parquet_mb": round(log_bytes / 1e6, 1),
        "floor_read_and_sort_s": round(best_floor, 3),
        "ours_read_window_s": round(min(read_s), 3),
        "ours_drift_stats_s": round(min(drift_s), 3),
        "ours_total_s": round(best_total, 3),
        "ours_over_floor": round(best_total / best_floor, 2),
        "under_10s": best_total < 10,
        "all_totals_s": [round(x, 3) for x in total_s],
        "flagged": flagged,
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(), "numpy": np.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()

"""Training benchmark: our model beside its baselines on simulated data, through the real path.

simulate -> ingest (no GX gate) -> feast apply (temp copy of feature_repo) -> training set via
Feast -> fit + score on the resolution-time split. Prints JSON: seconds per stage and, per model
(ours; ours without per-market thinning; logistic regression; the market price), validation
Brier, ECE and MSE to the simulator's true probability.

    .venv/bin/python bench/bench_training.py [--markets 300] [--seed 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=300)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads for sklearn")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import sklearn.ensemble  # noqa: F401
    from threadpoolctl import threadpool_limits

    from config.settings import Settings
    from features.store import apply
    from ingestion.ingest import ingest_batch
    from tests.feast_project import copy_feature_repo
    from ingestion.simulate import SimulationConfig, generate
    from training.data import build_training_set
    from training.evaluate import brier, ece
    from training.pipeline import ModelSpec, fit_model, predict_proba
    from training.split import split_by_resolution

    threadpool_limits(args.threads)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        root = Path(tmp)
        repo = copy_feature_repo(root)
        settings = Settings.from_env({"PM_DATA_DIR": str(root / "data"), "PM_FEATURE_REPO_DIR": str(repo)})
        settings.ensure_dirs()
        t = time.perf_counter()
        summary = generate(SimulationConfig(n_markets=args.markets, start=date(2024, 1, 1), end=date(2024, 7, 1),
                                            seed=args.seed), root / "raw", progress=False)
        for batch in sorted((root / "raw").glob("batch-*")):
            result = ingest_batch(batch, settings=settings, run_gate=False)
            assert result.accepted, result
        timings["simulate_and_ingest_s"] = time.perf_counter() - t
        t = time.perf_counter()
        apply(settings)
        timings["feast_apply_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ts = build_training_set(settings, run_gx=False)
        timings["training_set_via_feast_s"] = time.perf_counter() - t
        truth = pd.read_parquet(root / "raw" / "truth.parquet")

    split = split_by_resolution(ts.frame, 0.25)
    valid = split.valid.merge(truth, on=["market_id", "ts"], how="left", validate="one_to_one")
    y, t_true = valid["label"].to_numpy(), valid["true_probability"].to_numpy()
    ours = ModelSpec()
    models = {"ours (calibrated HGB, thinned, market-weighted)": ours,
              "ours without thinning": replace(ours, max_rows_per_market=None),
              "logistic regression": ModelSpec(kind="logreg", calibration=None)}
    results = {}
    for name, spec in models.items():
        t = time.perf_counter()
        model = fit_model(spec, split.train, ts.feature_names)
        fit_s = time.perf_counter() - t
        p = predict_proba(model, valid, ts.feature_names)
        results[name] = {"fit_s": round(fit_s, 2), "valid_brier": round(brier(y, p), 5), "valid_ece": round(ece(y, p), 5),
                         "mse_to_truth": round(float(np.mean((p - t_true) ** 2)), 5)}
    price = valid["price"].to_numpy()
    results["market price"] = {"valid_brier": round(brier(y, price), 5), "valid_ece": round(ece(y, price), 5),
                               "mse_to_truth": round(float(np.mean((price - t_true) ** 2)), 5)}
    results["truth (best achievable)"] = {"valid_brier": round(float(np.mean(t_true * (1 - t_true))), 5)}
    print(json.dumps({"bench": "training", "markets": args.markets, "seed": args.seed, "threads": args.threads,
                      "rows": len(ts.frame), "train_markets": int(split.train["market_id"].nunique()),
                      "valid_markets": int(split.valid["market_id"].nunique()),
                      "simulator_brier_market_all": round(summary.brier_market, 5),
                      "timings_s": {k: round(v, 2) for k, v in timings.items()}, "models": results}, indent=2))


if __name__ == "__main__":
    main()

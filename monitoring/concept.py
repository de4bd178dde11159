"""Concept drift: predictions joined with outcomes as markets resolve, scored with bootstrap CIs.

Many predictions share one market and therefore one outcome, so rows are not independent:
the bootstrap resamples *markets* (cluster bootstrap), not rows. Resampling every row would
give intervals several times too narrow and false alarms. The bootstrap is vectorised: per
market sums of losses (and per probability bin sums for ECE) are weighted by a
(B x markets) multinomial count matrix in one matrix product.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring.drift import DriftThresholds, level
from monitoring.reference import ECE_BINS, LOG_LOSS_EPS, check_labels, check_probabilities


class OutcomeError(ValueError):
    """The offline store's markets table could not be read as outcomes; the message says where."""


def load_outcomes(offline_store_dir: Path) -> pd.DataFrame:
    """Resolved markets from the offline store `markets` table: market_id, resolved_at, outcome.

    The current state of a market is its newest version (max updated_at); a market counts as
    resolved when that version has an outcome.
    """
    import pyarrow.parquet as pq

    table_dir = Path(offline_store_dir) / "markets"
    files = sorted(table_dir.glob("month=*/*.parquet"))
    cols = ["market_id", "resolved_at", "outcome", "updated_at"]
    if not files:
        return pd.DataFrame({"market_id": pd.Series(dtype=str),
                             "resolved_at": pd.Series(dtype="datetime64[us, UTC]"),
                             "outcome": pd.Series(dtype="Int8")})
    frames = []
    for f in files:
        schema = pq.read_schema(f)
        lacking = [c for c in cols if c not in schema.names]
        if lacking:
            raise OutcomeError(f"{f}: markets file lacks columns {lacking}")
        frames.append(pq.read_table(f, columns=cols).to_pandas())
    markets = pd.concat(frames, ignore_index=True)
    current = markets.sort_values("updated_at").drop_duplicates("market_id", keep="last")
    resolved = current[current["outcome"].notna()]
    return resolved[["market_id", "resolved_at", "outcome"]].reset_index(drop=True)


def join_outcomes(predictions: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Predictions (logged_at, market_id, probability) of markets that resolved after the prediction.

    A prediction logged at or after its market resolved is not a forecast and is left out of
    the scores (the report counts them).
    """
    joined = predictions.merge(outcomes, on="market_id", how="inner")
    return joined[joined["logged_at"] < joined["resolved_at"]].reset_index(drop=True)


def _market_sums(p: np.ndarray, y: np.ndarray, market_codes: np.ndarray, n_markets: int,
                 n_bins: int) -> dict[str, np.ndarray]:
    q = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    ll = -(y * np.log(q) + (1 - y) * np.log1p(-q))
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    cell = market_codes * n_bins + b
    return {
        "count": np.bincount(market_codes, minlength=n_markets).astype(np.float64),
        "brier": np.bincount(market_codes, weights=(p - y) ** 2, minlength=n_markets),
        "log_loss": np.bincount(market_codes, weights=ll, minlength=n_markets),
        "bin_p": np.bincount(cell, weights=p, minlength=n_markets * n_bins).reshape(n_markets, n_bins),
        "bin_y": np.bincount(cell, weights=y, minlength=n_markets * n_bins).reshape(n_markets, n_bins),
    }


def _metrics_from_sums(s: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics for each row of ``weights`` (B x markets); weights of ones give the point estimate."""
    n = weights @ s["count"]
    ece = np.abs(weights @ s["bin_p"] - weights @ s["bin_y"]).sum(axis=1) / n
    return {"brier": (weights @ s["brier"]) / n, "log_loss": (weights @ s["log_loss"]) / n, "ece": ece}


def scores_with_ci(p: Any, y: Any, market_ids: Any, n_boot: int = 1000, confidence: float = 0.95,
                   seed: int = 0, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """Brier, log loss and ECE with market-cluster bootstrap percentile intervals."""
    p = check_probabilities(p, "probabilities")
    y = check_labels(y, "outcomes")
    codes, uniques = pd.factorize(pd.Series(market_ids), sort=False)
    n_markets = len(uniques)
    if p.size == 0:
        return {"n": 0, "n_markets": 0}
    sums = _market_sums(p, y, codes, n_markets, n_bins)
    point = _metrics_from_sums(sums, np.ones((1, n_markets)))
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_markets, np.full(n_markets, 1.0 / n_markets), size=n_boot).astype(np.float64)
    boot = _metrics_from_sums(sums, weights)
    tail = (1 - confidence) / 2
    out: dict[str, Any] = {"n": int(p.size), "n_markets": int(n_markets)}
    for k, v in point.items():
        lo, hi = np.quantile(boot[k], [tail, 1 - tail])
        out[k] = {"value": float(v[0]), "ci_low": float(lo), "ci_high": float(hi)}
    return out


def reliability(p: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, list]:
    """Mean prediction, observed frequency and count per equal-width probability bin."""
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, weights=p, minlength=n_bins) / count
        mean_y = np.bincount(b, weights=y, minlength=n_bins) / count
    keep = count > 0
    return {"mean_predicted": mean_p[keep].tolist(), "observed": mean_y[keep].tolist(),
            "count": count[keep].tolist()}


def concept_drift(resolved: pd.DataFrame, reference_performance: dict[str, Any],
                  thresholds: DriftThresholds = DriftThresholds(), bucket: str = "1D",
                  seed: int = 0) -> dict[str, Any]:
    """Scores of resolved predictions vs the reference, overall and per time bucket of logged_at.

    Severity: the Brier increase over the reference must pass the effect threshold AND the
    bootstrap interval must lie wholly above the reference Brier (evidence). With fewer than
    ``min_resolved_markets`` resolved markets the status is ``insufficient_data``.
    """
    n_markets = int(resolved["market_id"].nunique()) if len(resolved) else 0
    base: dict[str, Any] = {"n": int(len(resolved)), "n_markets": n_markets,
                            "reference": {k: reference_performance[k] for k in ("brier", "log_loss", "ece")},
                            "min_resolved_markets": thresholds.min_resolved_markets}
    if n_markets < thresholds.min_resolved_markets:
        return {**base, "status": "insufficient_data", "severity": "none"}
    p = resolved["probability"].to_numpy(np.float64)
    y = resolved["outcome"].to_numpy(np.float64)
    overall = scores_with_ci(p, y, resolved["market_id"], thresholds.bootstrap_samples, thresholds.confidence, seed)
    ref_brier = float(reference_performance["brier"])
    increase = overall["brier"]["value"] - ref_brier
    significant = overall["brier"]["ci_low"] > ref_brier
    effect = level(increase, thresholds.brier_increase_moderate, thresholds.brier_increase_high)
    over_time = []
    buckets = resolved["logged_at"].dt.floor(bucket)
    for start, idx in resolved.groupby(buckets).indices.items():
        part = resolved.iloc[idx]
        scores = scores_with_ci(part["probability"], part["outcome"].to_numpy(np.float64), part["market_id"],
                                thresholds.bootstrap_samples, thresholds.confidence, seed)
        over_time.append({"bucket_start": pd.Timestamp(start).isoformat(), **scores})
    return {
        **base,
        "status": "ok",
        **{k: overall[k] for k in ("brier", "log_loss", "ece")},
        "brier_increase": increase,
        "significant": bool(significant),
        "effect_severity": effect,
        "severity": effect if significant else "none",
        "reliability": reliability(p, y),
        "over_time": over_time,
        "bucket": bucket,
        "confidence": thresholds.confidence,
    }

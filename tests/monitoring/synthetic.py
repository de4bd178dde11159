"""Synthetic features / predictions / prediction-log rows for monitoring tests and bench/bench_drift.py.

The columns imitate the FeatureService (price features, poll features with missing values,
a discrete count, two categoricals) so the statistics meet the awkward cases real data has:
ties, missing values, skewed and discrete distributions, unseen categories.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

EVENT_TYPES = np.array(["election", "sports", "economics", "crypto", "weather", "science", "other"])
EVENT_P = np.array([0.25, 0.2, 0.15, 0.15, 0.1, 0.1, 0.05])
PLATFORMS = np.array(["polymarket", "kalshi", "predictit", "manifold"])
PLATFORM_P = np.array([0.4, 0.3, 0.2, 0.1])
BASE_NUMERIC = ["price", "volume_24h", "price_change_1d", "price_change_7d", "price_volatility_7d",
                "poll_average", "n_polls"]
CATEGORICAL = ["event_type", "platform"]


def numeric_names(n_numeric: int) -> list[str]:
    extra = [f"aux_{i}" for i in range(max(0, n_numeric - len(BASE_NUMERIC)))]
    return (BASE_NUMERIC + extra)[:n_numeric]


def features(n: int, rng: np.random.Generator, n_numeric: int = len(BASE_NUMERIC), shift: float = 0.0,
             shifted: tuple[str, ...] = ()) -> pd.DataFrame:
    """``n`` rows; each feature in ``shifted`` gets ``shift`` reference-std added (numeric)."""
    cols: dict[str, np.ndarray] = {}
    for name in numeric_names(n_numeric):
        if name == "price":
            v = rng.beta(2, 2, n)
        elif name == "volume_24h":
            v = rng.lognormal(8, 1.5, n)
        elif name == "n_polls":
            v = rng.poisson(3, n).astype(float)
            v[rng.random(n) < 0.4] = np.nan
        elif name == "poll_average":
            v = rng.beta(5, 5, n)
            v[rng.random(n) < 0.4] = np.nan
        elif name.startswith("price_volatility"):
            v = rng.gamma(2, 0.02, n)
        else:
            v = rng.normal(0, 1, n)
        if name in shifted:
            v = v + shift * np.nanstd(v)
        cols[name] = v
    cols["event_type"] = EVENT_TYPES[rng.choice(EVENT_TYPES.size, n, p=EVENT_P)]
    cols["platform"] = PLATFORMS[rng.choice(PLATFORMS.size, n, p=PLATFORM_P)]
    return pd.DataFrame(cols)


def calibrated_markets(n_markets: int, per_market: int, rng: np.random.Generator) -> pd.DataFrame:
    """market_id, true probability q (varying a little around a per-market level), outcome ~ Bernoulli(q_market)."""
    level = rng.beta(1.2, 1.2, n_markets)
    outcome = (rng.random(n_markets) < level).astype(np.int8)
    market = np.repeat(np.arange(n_markets), per_market)
    return pd.DataFrame({"market_id": [f"m{i:05d}" for i in market], "q": level[market], "outcome": outcome[market]})


def shrink_toward_half(p: np.ndarray, factor: float) -> np.ndarray:
    """Recalibration shift: logit(p) scaled by ``factor`` < 1 pushes probabilities toward 0.5."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return 1 / (1 + np.exp(-factor * np.log(p / (1 - p))))


def log_frame(feats: pd.DataFrame, probability: np.ndarray, market_ids: np.ndarray, start: datetime,
              span: timedelta, rng: np.random.Generator, model_version: str = "1") -> pd.DataFrame:
    """Prediction-log rows (the schema of docs/architecture.md) spread uniformly over ``span``."""
    n = len(feats)
    offsets = np.sort(rng.random(n)) * span.total_seconds()
    logged_at = pd.to_datetime(start, utc=True) + pd.to_timedelta(offsets, unit="s")
    df = pd.DataFrame({
        "logged_at": logged_at.astype("datetime64[us, UTC]"),
        "request_id": [f"r{i}" for i in range(n)],
        "market_id": market_ids,
        "model_version": model_version,
        "model_role": "champion",
        "source": "model",
        "probability": probability,
        "latency_ms": rng.gamma(2, 3, n),
        "ab_group": None,
    })
    for c in feats.columns:
        df[f"feature__{c}"] = feats[c].to_numpy()
    return df


UTC = timezone.utc
T0 = datetime(2024, 6, 1, tzinfo=UTC)


def write_markets_table(offline_store_dir, markets: pd.DataFrame, resolved_at: datetime) -> None:
    """Write resolved markets in the offline-store layout ingestion uses (markets/month=YYYY-MM/<batch>.parquet).

    Each market gets two versions, open then resolved, so the loader must pick the newest.
    """
    from pathlib import Path

    ids = markets["market_id"].unique()
    outcome = markets.groupby("market_id")["outcome"].first().loc[ids].to_numpy()
    created = pd.Timestamp("2024-01-01", tz="UTC")
    res = pd.Timestamp(resolved_at)
    n = len(ids)

    def frame(resolved: bool) -> pd.DataFrame:
        return pd.DataFrame({
            "market_id": ids, "question": "q", "event_type": "other", "platform": "kalshi",
            "created_at": created, "resolution_date": res,
            "resolved_at": pd.Series([res if resolved else pd.NaT] * n, dtype="datetime64[us, UTC]"),
            "outcome": pd.array(outcome if resolved else [pd.NA] * n, dtype="Int8"),
            "updated_at": res if resolved else created,
            "ingested_at": res, "batch_id": "b" * 16,
        })

    for version, month in ((frame(False), f"{created:%Y-%m}"), (frame(True), f"{res:%Y-%m}")):
        d = Path(offline_store_dir) / "markets" / f"month={month}"
        d.mkdir(parents=True, exist_ok=True)
        version.to_parquet(d / f"{'open' if version['outcome'].isna().all() else 'resolved'}.parquet", index=False)

"""Small typed frames as ingestion hands them to the gate (UTC timestamps, Int8 outcome, int n_polls)."""

from __future__ import annotations

import numpy as np
import pandas as pd

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def markets(n: int = 120, resolved_share: float = 0.5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    created = T0 + pd.to_timedelta(rng.integers(0, 30, n), unit="D")
    resolution = created + pd.Timedelta(days=60)
    is_resolved = np.arange(n) < int(n * resolved_share)
    resolved_at = pd.Series(resolution).where(is_resolved)
    outcome = pd.array(np.where(is_resolved, rng.integers(0, 2, n), 0), dtype="Int8")
    outcome[~is_resolved] = pd.NA
    return pd.DataFrame({
        "market_id": [f"m{i:04d}" for i in range(n)],
        "question": [f"Will event {i} happen?" for i in range(n)],
        "event_type": rng.choice(["election", "sports", "crypto", "other"], n).astype(object),
        "platform": rng.choice(["polymarket", "kalshi", "manifold"], n).astype(object),
        "created_at": created,
        "resolution_date": resolution,
        "resolved_at": pd.to_datetime(resolved_at, utc=True),
        "outcome": outcome,
        "updated_at": pd.Series(resolution).where(is_resolved, pd.Series(created)).dt.tz_convert("UTC"),
    })


def snapshots(mk: pd.DataFrame, per_market: int = 5, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = np.repeat(np.arange(len(mk)), per_market)
    step = np.tile(np.arange(per_market), len(mk))
    ts = pd.DatetimeIndex(mk["created_at"]).take(idx) + pd.to_timedelta(step + 1, unit="D")
    n = len(idx)
    return pd.DataFrame({
        "market_id": mk["market_id"].to_numpy()[idx],
        "ts": ts,
        "price": rng.uniform(0.05, 0.95, n),
        "volume_24h": rng.exponential(100.0, n),
    })


def polls(mk: pd.DataFrame, per_market: int = 2, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sub = mk[mk["event_type"] == "election"].reset_index(drop=True)
    snaps = snapshots(sub, per_market, seed)
    n = len(snaps)
    return pd.DataFrame({
        "market_id": snaps["market_id"], "ts": snaps["ts"],
        "poll_average": rng.uniform(0.3, 0.7, n), "poll_trend": rng.uniform(-0.1, 0.1, n),
        "n_polls": rng.integers(0, 20, n).astype("int64"),
    })


def training_set(n_markets: int = 60, per_market: int = 4, seed: int = 3) -> pd.DataFrame:
    """Examples of resolved markets strictly before resolution, with price and poll features."""
    mk = markets(n_markets, resolved_share=1.0, seed=seed)
    snaps = snapshots(mk, per_market, seed)
    joined = snaps.merge(mk[["market_id", "resolved_at", "outcome"]], on="market_id")
    rng = np.random.default_rng(seed)
    n = len(joined)
    joined["price_change_1d"] = rng.normal(0, 0.02, n)
    joined["price_change_7d"] = rng.normal(0, 0.05, n)
    joined["price_volatility_7d"] = rng.uniform(0, 0.1, n)
    joined["price_volatility_30d"] = rng.uniform(0, 0.1, n)
    joined["volume_mean_7d"] = rng.exponential(100.0, n)
    joined.loc[joined.index[::per_market], ["price_change_7d", "price_volatility_7d"]] = np.nan  # early rows
    return joined

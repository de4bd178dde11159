"""Small synthetic training-set frames with the FeatureService's columns, for model-side tests.

Each market has a latent true probability path; the market price is a biased, noisy reading of
it (favourite-longshot bias: prices are pulled toward 0.5, plus a per-platform yes-bias), and polls are a second noisy
reading. So a calibrated model using price and polls can beat the market price, as in the
simulator. This frame stands in for the Feast output only in tests of the model side
(pipeline, gates, registry); the data path is tested against real Feast separately.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.data import LABEL

FEATURES = ["price", "volume_24h", "price_change_1d", "price_change_7d", "price_volatility_7d",
            "price_volatility_30d", "volume_mean_7d", "poll_average", "poll_trend", "n_polls",
            "event_type", "platform", "days_to_resolution"]
EVENT_TYPES = ["election", "sports", "economics", "crypto"]
PLATFORMS = ["polymarket", "kalshi"]


def expit(x):
    return 1 / (1 + np.exp(-x))


def make_frame(n_markets: int = 160, snapshots: int = 20, seed: int = 0,
               start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC")
    rows = []
    for i in range(n_markets):
        created = t0 + pd.Timedelta(days=float(rng.uniform(0, 200)))
        life_days = float(rng.uniform(20, 60))
        resolved = created + pd.Timedelta(days=life_days)
        event_type, platform = EVENT_TYPES[i % len(EVENT_TYPES)], PLATFORMS[i % len(PLATFORMS)]
        # latent log-odds random walk; outcome drawn from the final probability
        steps = rng.normal(0, 0.1, snapshots)
        logit = rng.normal(0, 2.0) + np.cumsum(steps)
        outcome = int(rng.uniform() < expit(logit[-1]))
        has_polls = event_type == "election"
        ts = created + pd.to_timedelta(np.sort(rng.uniform(0, life_days * 0.98, snapshots)), unit="D")
        bias = 0.6 if platform == "kalshi" else -0.4  # platform yes-bias the model can learn
        price = np.clip(expit(0.6 * logit + bias + rng.normal(0, 0.3, snapshots)), 0.01, 0.99)
        poll = expit(logit + rng.normal(0, 0.3, snapshots)) if has_polls else np.full(snapshots, np.nan)
        for k in range(snapshots):
            rows.append({
                "market_id": f"m{seed}-{i:04d}", "ts": ts[k].floor("us"), LABEL: outcome,
                "created_at": created.floor("us"), "resolved_at": resolved.floor("us"),
                "resolution_date_meta": resolved.floor("us"), "price_batch_id": f"batch{i % 3}",
                "price": float(price[k]), "volume_24h": float(rng.lognormal(8, 1)),
                "price_change_1d": float(price[k] - price[k - 1]) if k else np.nan,
                "price_change_7d": float(price[k] - price[max(k - 5, 0)]) if k else np.nan,
                "price_volatility_7d": float(np.std(price[max(k - 5, 0):k + 1])),
                "price_volatility_30d": float(np.std(price[:k + 1])),
                "volume_mean_7d": float(rng.lognormal(8, 0.5)),
                "poll_average": float(poll[k]), "poll_trend": float(poll[k] - poll[max(k - 3, 0)]) if has_polls else np.nan,
                "n_polls": float(k + 1) if has_polls else np.nan,
                "event_type": event_type, "platform": platform,
                "days_to_resolution": float((resolved - ts[k]).total_seconds() / 86400),
            })
    return pd.DataFrame(rows).sort_values(["market_id", "ts"]).reset_index(drop=True)

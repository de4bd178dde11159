"""Feature-store checks through features.retrieve (Feast): online freshness, training–serving skew.

Freshness: for the markets being served, the age of the value each online feature view holds
at ``request_ts``; the *newest* of them says whether materialization / push is still running
(if even the newest value is old, the pipeline stopped). Severity is relative to the view's TTL.

Skew: for a sample of markets, what serving reads online must equal what training would get from
the offline point-in-time join at the same instant. A mismatch is either real skew (the online
path computes something else) or materialization lag (the offline store has newer rows than the
online store); the report gives the online age next to each mismatch so the two can be told apart.
Run it right after materialization to isolate real skew.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from monitoring.drift import level

if TYPE_CHECKING:
    from config.settings import Settings
    from feast import FeatureStore


@dataclass(frozen=True)
class FeatureCheckThresholds:
    # Newest online value of a view older than this fraction of the view's TTL: moderate; older than the TTL: high.
    freshness_moderate_ttl_fraction: float = 0.5
    freshness_high_ttl_fraction: float = 1.0
    # Share of sampled (market, feature) values differing between online and offline.
    skew_moderate: float = 1e-9  # any mismatch at all is worth a look
    skew_high: float = 0.05
    rtol: float = 1e-9
    atol: float = 1e-9


def _store(settings: "Settings", store: "FeatureStore | None") -> "FeatureStore":
    if store is not None:
        return store
    from features.store import get_store

    return get_store(settings)


def freshness(settings: "Settings", market_ids: Sequence[str], feature_service: str, request_ts: datetime,
              thresholds: FeatureCheckThresholds = FeatureCheckThresholds(),
              store: "FeatureStore | None" = None) -> dict[str, Any]:
    """Per online feature view: newest / median / max age of the served values, missing and expired shares."""
    from features.retrieve import online_features

    store = _store(settings, store)
    result = online_features(list(market_ids), feature_service, request_ts=request_ts, store=store)
    views, found = {}, []
    for view in [c for c in result.age_seconds.columns if c != "market_id"]:
        ages = result.age_seconds[view].to_numpy(dtype=np.float64)
        ttl = store.get_feature_view(view).ttl.total_seconds() or math.inf
        present = ages[~np.isnan(ages)]
        newest = float(present.min()) if present.size else math.inf
        severity = level(newest / ttl, thresholds.freshness_moderate_ttl_fraction,
                         thresholds.freshness_high_ttl_fraction)
        views[view] = {
            "markets": int(ages.size), "newest_age_seconds": newest,
            "median_age_seconds": float(np.median(present)) if present.size else math.inf,
            "max_age_seconds": float(present.max()) if present.size else math.inf,
            "not_found_fraction": float(np.isnan(ages).mean()),
            "expired_fraction": float((present > ttl).sum() / ages.size),
            "ttl_seconds": ttl, "severity": severity,
        }
        if severity != "none":
            found.append({"subject": view, "severity": severity,
                          "message": f"newest online value of {view} is {newest / 3600:.1f} h old "
                                     f"(TTL {ttl / 3600:.0f} h)"})
    return {"request_ts": result.request_ts.isoformat(), "feature_service": feature_service, "views": views,
            "findings": found}


def _same(a: Any, b: Any, rtol: float, atol: float) -> bool:
    a_missing = a is None or (isinstance(a, float) and math.isnan(a)) or a is pd.NaT or a is pd.NA
    b_missing = b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NaT or b is pd.NA
    if a_missing or b_missing:
        return a_missing and b_missing
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
        return bool(np.isclose(float(a), float(b), rtol=rtol, atol=atol))
    if isinstance(a, (pd.Timestamp, datetime)) or isinstance(b, (pd.Timestamp, datetime)):
        return pd.Timestamp(a) == pd.Timestamp(b)
    return a == b


def training_serving_skew(settings: "Settings", market_ids: Sequence[str], feature_service: str,
                          request_ts: datetime, sample_size: int = 50, seed: int = 0,
                          thresholds: FeatureCheckThresholds = FeatureCheckThresholds(),
                          store: "FeatureStore | None" = None) -> dict[str, Any]:
    """Online features vs offline point-in-time retrieval at ``request_ts`` for a sample of markets."""
    from features.retrieve import historical_features, online_features

    store = _store(settings, store)
    ids = sorted(set(map(str, market_ids)))
    if not ids:
        raise ValueError("training_serving_skew needs at least one market_id")
    rng = np.random.default_rng(seed)
    sample = list(rng.choice(ids, size=min(sample_size, len(ids)), replace=False))
    online = online_features(sample, feature_service, request_ts=request_ts, store=store)
    ts = pd.Timestamp(online.request_ts)
    offline = historical_features(pd.DataFrame({"market_id": sample, "ts": [ts] * len(sample)}),
                                  feature_service, store=store)
    on = online.values.set_index("market_id").loc[sample]
    off = offline.set_index("market_id").loc[sample]
    per_feature, found, total, total_bad = {}, [], 0, 0
    for feature in [c for c in on.columns]:
        bad = [m for m, a, b in zip(sample, on[feature].tolist(), off[feature].tolist())
               if not _same(a, b, thresholds.rtol, thresholds.atol)]
        frac = len(bad) / len(sample)
        severity = level(frac, thresholds.skew_moderate, thresholds.skew_high)
        per_feature[feature] = {"compared": len(sample), "mismatches": len(bad), "mismatch_fraction": frac,
                                "severity": severity,
                                "examples": [{"market_id": m, "online": _plain(on.at[m, feature]),
                                              "offline": _plain(off.at[m, feature])} for m in bad[:3]]}
        total += len(sample)
        total_bad += len(bad)
        if severity != "none":
            found.append({"subject": feature, "severity": severity,
                          "message": f"{len(bad)}/{len(sample)} sampled markets differ online vs offline "
                                     f"(e.g. {per_feature[feature]['examples'][0]})"})
    ages = online.age_seconds.set_index("market_id")
    return {"request_ts": ts.isoformat(), "feature_service": feature_service, "sampled_markets": len(sample),
            "mismatch_fraction": total_bad / total if total else 0.0, "features": per_feature,
            "online_age_seconds_median": {v: float(ages[v].median()) for v in ages.columns},
            "findings": found}


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (pd.Timestamp, datetime)):
        return v.isoformat()
    return v

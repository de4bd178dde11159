"""The adversarial offline data every feature-store test runs against (disjoint market ids per concern)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.features.offline_data import PRICE_COLUMNS, market_info_rows, publish, synthetic, utc

T0 = utc("2024-01-01")
R1, R2 = utc("2024-03-01"), utc("2024-04-01")  # pit_corr resolution_date: original, then corrected
LATE_CREATED, LATE_RESOLUTION_DATE, LATE_RESOLVED = utc("2024-01-10"), utc("2024-02-14"), utc("2024-02-15")
ONLINE_MARKETS, INCR_MARKETS = 20, 5
# Resolution markers: after pit_late (2024-02-15), so earlier windows' eviction lists stay as they are.
RES_DONE_RESOLVED, RES_LATER_RESOLVED = utc("2024-02-20"), utc("2024-03-05")
RESOLUTION_PUBLISHED, RESOLUTION_LATER_PUBLISHED = "2024-02-26", "2024-03-06"


def market(market_id: str, created, resolution_date, updated=None, resolved_at=None, outcome=None,
           event_type="election", platform="kalshi") -> dict:
    return {"market_id": market_id, "question": f"{market_id}?", "event_type": event_type, "platform": platform,
            "created_at": created, "resolution_date": resolution_date, "resolved_at": resolved_at,
            "outcome": outcome, "updated_at": updated if updated is not None else created}


def prices(market_id: str, ts, price, **overrides) -> pd.DataFrame:
    ts = pd.DatetimeIndex(pd.to_datetime(ts, utc=True))
    price = np.broadcast_to(np.asarray(price, dtype=float), (len(ts),))
    cols = {c: np.full(len(ts), overrides.get(c, 0.1)) for c in PRICE_COLUMNS if c != "price"}
    return pd.DataFrame({"market_id": market_id, "ts": ts, "price": price, **cols})


def polls(market_id: str, ts, average, trend=0.0, n=5) -> pd.DataFrame:
    ts = pd.DatetimeIndex(pd.to_datetime(ts, utc=True))
    return pd.DataFrame({"market_id": market_id, "ts": ts, "poll_average": average, "poll_trend": trend,
                         "n_polls": n})


def days(start: str, end: str) -> pd.DatetimeIndex:
    return pd.date_range(start, end, freq="D", tz="UTC")


def _markets(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["outcome"] = df["outcome"].astype("Int8")
    return df


def batch_pit() -> dict[str, pd.DataFrame]:
    """pit_leak: values after ts reveal the outcome. pit_corr v1. ttl_m: one old price and poll."""
    m = _markets([market("pit_leak", T0, R1), market("pit_corr", T0, R1), market("ttl_m", T0, R1),
                  market("push_m", T0, R1)])
    p = pd.concat([
        prices("pit_leak", days("2024-01-02", "2024-01-20"), 0.5),
        prices("pit_leak", ["2024-01-21"], 0.99),  # the outcome, visible in the price, after the example
        prices("pit_corr", days("2024-01-02", "2024-02-20"), 0.4),
        prices("ttl_m", ["2024-01-01T12:00:00"], 0.3),
        prices("push_m", days("2024-01-02", "2024-01-10"), 0.2),
    ], ignore_index=True)
    q = pd.concat([polls("pit_leak", ["2024-01-05", "2024-01-18"], 0.4), polls("pit_leak", ["2024-01-25"], 0.95),
                   polls("ttl_m", ["2024-01-01T12:00:00"], 0.6)], ignore_index=True)
    return {"markets": m, "market_info": market_info_rows(m), "price_features": p, "poll_features": q}


def batch_correction() -> dict[str, pd.DataFrame]:
    """pit_corr v2 (written 2024-02-01): resolution_date moved from R1 to R2. No new creation row:
    the earliest known version (v1) already has one."""
    m = _markets([market("pit_corr", T0, R2, updated=utc("2024-02-01"))])
    info = m.assign(event_ts=m["updated_at"])[["market_id", "event_ts", "question", "event_type", "platform",
                                                "created_at", "resolution_date"]]
    return {"markets": m, "market_info": info}


def batch_late() -> dict[str, pd.DataFrame]:
    """pit_late: sent once, after it resolved. Creation attributes count from created_at."""
    m = _markets([market("pit_late", LATE_CREATED, LATE_RESOLUTION_DATE, updated=LATE_RESOLVED,
                         resolved_at=LATE_RESOLVED, outcome=1, event_type="sports", platform="polymarket")])
    p = pd.concat([prices("pit_late", days("2024-01-11", "2024-02-14"), 0.7),
                   prices("pit_late", [LATE_RESOLVED], 1.0)], ignore_index=True)
    return {"markets": m, "market_info": market_info_rows(m), "price_features": p}


def batch_online() -> dict[str, pd.DataFrame]:
    return synthetic(ONLINE_MARKETS, start="2024-01-01", days=30, seed=1, prefix="on")


def batch_incremental(first: bool) -> dict[str, pd.DataFrame]:
    """inc markets: days 1-10 in the first batch; days 11-15 in the second (prices only, new values)."""
    data = synthetic(INCR_MARKETS, start="2024-01-01", days=15, seed=2, prefix="inc")
    cut = utc("2024-01-10T12:00:00")
    p = data["price_features"]
    if first:
        return {**data, "price_features": p[p["ts"] < cut], "poll_features": data["poll_features"].iloc[:0]}
    return {"price_features": p[p["ts"] >= cut]}


def batch_resolution() -> dict[str, pd.DataFrame]:
    """res_done: an open version, then its resolved version (2024-02-20, outcome 0). res_open and
    res_later: open (res_later resolves in batch_resolution_later)."""
    m = _markets([market("res_done", T0, RES_DONE_RESOLVED),
                  market("res_done", T0, RES_DONE_RESOLVED, updated=RES_DONE_RESOLVED,
                         resolved_at=RES_DONE_RESOLVED, outcome=0),
                  market("res_open", T0, R2), market("res_later", T0, RES_LATER_RESOLVED)])
    p = pd.concat([prices("res_done", days("2024-01-02", "2024-02-19"), 0.3),
                   prices("res_open", days("2024-01-02", "2024-02-25"), 0.6),
                   prices("res_later", days("2024-01-02", "2024-02-25"), 0.8)], ignore_index=True)
    return {"markets": m, "market_info": market_info_rows(m), "price_features": p}


def batch_resolution_later() -> dict[str, pd.DataFrame]:
    """res_later's resolved version (2024-03-05, outcome 1), published by the test that needs it."""
    m = _markets([market("res_later", T0, RES_LATER_RESOLVED, updated=RES_LATER_RESOLVED,
                         resolved_at=RES_LATER_RESOLVED, outcome=1)])
    info = m.assign(event_ts=m["updated_at"])[["market_id", "event_ts", "question", "event_type", "platform",
                                                "created_at", "resolution_date"]]
    return {"markets": m, "market_info": info}


def publish_all(offline_dir: Path) -> None:
    publish(offline_dir, batch_pit(), "2024-01-26")
    publish(offline_dir, batch_correction(), "2024-02-02")
    publish(offline_dir, batch_late(), "2024-02-16")
    publish(offline_dir, batch_online(), "2024-02-01")
    publish(offline_dir, batch_incremental(first=True), "2024-01-11")
    publish(offline_dir, batch_resolution(), RESOLUTION_PUBLISHED)

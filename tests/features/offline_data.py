"""Write test data straight into the offline store layout of docs/architecture.md.

Ingestion owns the real writer; this helper writes the same layout (table/month=YYYY-MM/<batch>.parquet,
timestamp[us, UTC], ingested_at + batch_id on every row, a commit record last) so the feature tests do
not depend on it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TIMESTAMP_COLUMNS = {
    "markets": ["created_at", "resolution_date", "resolved_at", "updated_at", "ingested_at"],
    "market_info": ["event_ts", "created_at", "resolution_date", "ingested_at"],
    "price_features": ["ts", "ingested_at"],
    "poll_features": ["ts", "ingested_at"],
}
EVENT_TS = {"markets": "updated_at", "market_info": "event_ts", "price_features": "ts", "poll_features": "ts"}
PRICE_COLUMNS = ["price", "volume_24h", "price_change_1d", "price_change_7d", "price_volatility_7d",
                 "price_volatility_30d", "volume_mean_7d"]


def utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def _typed(table: str, df: pd.DataFrame) -> pa.Table:
    df = df.copy()
    for col in TIMESTAMP_COLUMNS[table]:
        df[col] = pd.to_datetime(df[col], utc=True).astype("datetime64[us, UTC]")
    if table == "markets":
        df["outcome"] = df["outcome"].astype("Int8")
    if table == "poll_features":
        df["n_polls"] = df["n_polls"].astype("int64")
    return pa.Table.from_pandas(df, preserve_index=False)


def publish(offline_dir: Path, tables: dict[str, pd.DataFrame], ingested_at: datetime | str) -> str:
    """Publish one batch: files per (table, month of event ts), then the commit record. Returns batch_id."""
    ingested_at = pd.Timestamp(ingested_at)
    ingested_at = ingested_at.tz_localize("UTC") if ingested_at.tzinfo is None else ingested_at
    canonical = json.dumps({t: df.astype(str).sort_values(list(df.columns)).values.tolist()
                            for t, df in sorted(tables.items())}, sort_keys=True)
    batch_id = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    written = []
    for table, df in tables.items():
        if df.empty:
            continue
        df = df.assign(ingested_at=ingested_at, batch_id=batch_id)
        months = pd.to_datetime(df[EVENT_TS[table]], utc=True).dt.strftime("%Y-%m")
        for month, part in df.groupby(months):
            path = offline_dir / table / f"month={month}" / f"{batch_id}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(_typed(table, part.reset_index(drop=True)), path)
            written.append(str(path.relative_to(offline_dir)))
    record = offline_dir / "_batches" / f"{batch_id}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"batch_id": batch_id, "files": written, "published_at": ingested_at.isoformat()}))
    return batch_id


def market_info_rows(markets: pd.DataFrame) -> pd.DataFrame:
    """market_info as architecture.md defines it: a creation row per market + a row per version."""
    first = markets.sort_values("updated_at").groupby("market_id", as_index=False).first()
    creation = first.assign(event_ts=first["created_at"])
    versions = markets.assign(event_ts=markets["updated_at"])
    cols = ["market_id", "event_ts", "question", "event_type", "platform", "created_at", "resolution_date"]
    return pd.concat([creation[cols], versions[cols]], ignore_index=True)


def synthetic(n_markets: int, start: str = "2024-01-01", days: int = 30, seed: int = 0,
              snapshots_per_day: int = 1, prefix: str = "m") -> dict[str, pd.DataFrame]:
    """Open markets with daily price snapshots and (for half of them) polls every 3 days."""
    rng = np.random.default_rng(seed)
    t0 = utc(start)
    ids = [f"{prefix}{i:06d}" for i in range(n_markets)]
    markets = pd.DataFrame({
        "market_id": ids, "question": [f"Will {i} happen?" for i in ids],
        "event_type": rng.choice(["election", "sports", "crypto", "other"], n_markets),
        "platform": rng.choice(["polymarket", "kalshi"], n_markets),
        "created_at": t0, "resolution_date": t0 + pd.Timedelta(days=days + 30),
        "resolved_at": pd.NaT, "outcome": pd.array([pd.NA] * n_markets, dtype="Int8"), "updated_at": t0,
    })
    step = pd.Timedelta(days=1) / snapshots_per_day
    ts = t0 + step * np.arange(1, days * snapshots_per_day + 1)
    n = len(ts)
    prices = pd.DataFrame({
        "market_id": np.repeat(ids, n), "ts": np.tile(ts, n_markets),
        **{c: rng.random(n * n_markets) for c in PRICE_COLUMNS},
    })
    poll_ts = t0 + pd.Timedelta(days=3) * np.arange(1, days // 3 + 1)
    poll_ids = ids[::2]
    polls = pd.DataFrame({
        "market_id": np.repeat(poll_ids, len(poll_ts)), "ts": np.tile(poll_ts, len(poll_ids)),
        "poll_average": rng.random(len(poll_ids) * len(poll_ts)),
        "poll_trend": rng.uniform(-0.2, 0.2, len(poll_ids) * len(poll_ts)),
        "n_polls": rng.integers(1, 20, len(poll_ids) * len(poll_ts)),
    })
    return {"markets": markets, "market_info": market_info_rows(markets), "price_features": prices,
            "poll_features": polls}

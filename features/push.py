"""Live price ticks through the `price_ticks_push` PushSource, online and offline.

Online: Feast's `store.push`. Offline: Feast's own offline push for a FileSource rewrites the whole
source path (here a glob over ingestion's files) and would break the append-only layout, so the
offline half is published as a batch of its own through ingestion's publisher
(price_features/month=YYYY-MM/<batch_id>.parquet, then `_batches/<batch_id>.json`), under the
same lock as ingest, so recovery and readers treat it like any ingested batch.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

import pandas as pd

from config.settings import Settings, get_settings

if TYPE_CHECKING:
    from feast import FeatureStore

PUSH_SOURCE = "price_ticks_push"
TABLE = "price_features"
PRICE_COLUMNS = ["price", "volume_24h", "price_change_1d", "price_change_7d", "price_volatility_7d",
                 "price_volatility_30d", "volume_mean_7d"]
REQUIRED = ["market_id", "ts", *PRICE_COLUMNS]
NON_NEGATIVE_COLUMNS = ("volume_24h", "volume_mean_7d", "price_volatility_7d", "price_volatility_30d")


def _validate(ticks: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in ticks.columns]
    if missing:
        raise ValueError(f"price ticks are missing column(s) {missing}; a tick carries {REQUIRED} "
                         "(rolling features computed by the producer, as ingestion/rolling.py defines them)")
    if ticks.empty:
        raise ValueError("no price ticks to push")
    if not isinstance(ticks["ts"].dtype, pd.DatetimeTZDtype):
        raise ValueError(f"price ticks: `ts` must be timezone-aware UTC, got dtype {ticks['ts'].dtype}")
    for col in ("market_id", "ts", "price"):
        bad = ticks[col].isna()
        if bad.any():
            raise ValueError(f"price ticks: {int(bad.sum())} row(s) with missing {col} (e.g. index {list(ticks.index[bad][:5])})")
    out_of_range = ~ticks["price"].between(0, 1)
    if out_of_range.any():
        raise ValueError(f"price ticks: {int(out_of_range.sum())} price(s) outside [0, 1] "
                         f"(e.g. index {list(ticks.index[out_of_range][:5])})")
    # Same rules as ingested snapshots (and the training-set suite): nothing infinite, no negative volume or spread.
    for col in PRICE_COLUMNS:
        values = pd.to_numeric(ticks[col], errors="coerce").astype("float64")
        if not ticks[col].isna().equals(values.isna()):
            raise ValueError(f"price ticks: `{col}` holds values that are not numbers")
        infinite = values.abs() == float("inf")
        if infinite.any():
            raise ValueError(f"price ticks: {int(infinite.sum())} infinite value(s) in `{col}` "
                             f"(e.g. index {list(ticks.index[infinite][:5])})")
        if col in NON_NEGATIVE_COLUMNS and (values < 0).any():
            negative = values < 0
            raise ValueError(f"price ticks: {int(negative.sum())} negative value(s) in `{col}`, which is at least 0 "
                             f"(e.g. index {list(ticks.index[negative][:5])})")
    dup = ticks.duplicated(["market_id", "ts"])
    if dup.any():
        raise ValueError(f"price ticks: {int(dup.sum())} duplicate (market_id, ts) row(s)")
    frame = ticks[REQUIRED].copy()
    frame["market_id"] = frame["market_id"].astype(str)
    frame["ts"] = frame["ts"].dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    for col in PRICE_COLUMNS:
        frame[col] = frame[col].astype("float64")
    return frame.reset_index(drop=True)


def _check_times(frame: pd.DataFrame, settings: Settings, now: datetime) -> pd.DataFrame:
    """Ingestion's time rules for snapshots: not more than a day ahead, and within the market's lifetime
    (a known market, at or after created_at, not after resolved_at), by the newest published version.
    Returns those versions (market_id index)."""
    from ingestion.contract import current_versions
    from ingestion.store import read_published

    ahead = frame["ts"] > pd.Timestamp(now) + pd.Timedelta(days=1)
    if ahead.any():
        raise ValueError(f"price ticks: {int(ahead.sum())} tick(s) more than one day in the future "
                         f"(e.g. {frame.loc[ahead, ['market_id', 'ts']].head(3).to_dict('records')})")
    versions = read_published(settings.offline_store_dir, "markets", frame["market_id"].unique())
    current = current_versions(versions)
    known = frame["market_id"].isin(current.index)
    if not known.all():
        raise ValueError(f"price ticks: unknown market(s) {sorted(frame.loc[~known, 'market_id'].unique())[:5]} "
                         "(not in the offline store's markets: ingest the market first)")
    created = frame["market_id"].map(current["created_at"])
    resolved = frame["market_id"].map(current["resolved_at"])
    outside = (frame["ts"] < created) | (resolved.notna() & (frame["ts"] > resolved))
    if outside.any():
        raise ValueError(f"price ticks: {int(outside.sum())} tick(s) outside their market's lifetime (before "
                         f"created_at or after resolved_at; e.g. {frame.loc[outside, ['market_id', 'ts']].head(3).to_dict('records')})")
    return current


def _online_rows(frame: pd.DataFrame, current: pd.DataFrame, store: "FeatureStore") -> pd.DataFrame:
    """The ticks that go online: per open market its newest tick, if newer than the row the store holds.

    A resolved market keeps only its resolution marker online (serving answers 410, not a forecast),
    and Feast's SQLite store overwrites a row whatever its event time (Redis keeps the newer one),
    so a late tick would replace a newer price. Late ticks and ticks of resolved markets are still
    published offline; materialization brings the newest row of each market online.
    """
    from features.retrieve import online_event_times

    open_markets = frame[frame["market_id"].map(current["resolved_at"]).isna().to_numpy()]
    newest = open_markets.sort_values("ts", kind="stable").drop_duplicates("market_id", keep="last")
    if newest.empty:
        return newest
    stored = online_event_times(store, TABLE, newest["market_id"].tolist())
    held = newest["market_id"].map(stored)
    return newest[(held.isna() | (newest["ts"] > held)).to_numpy()].reset_index(drop=True)


def _batch_id(frame: pd.DataFrame) -> str:
    rows = frame.sort_values(["market_id", "ts"]).astype(str).values.tolist()
    return hashlib.sha256(json.dumps([TABLE, rows]).encode()).hexdigest()[:16]


def _new_observations(ticks: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Ticks minus exact repeats of published snapshots; a changed repeat is refused (the contract:
    observations never change)."""
    key = ["market_id", "ts"]
    if published.empty:
        return ticks
    published = published.assign(ts=published["ts"].astype("datetime64[us, UTC]"))
    seen = ticks.merge(published[key + ["price", "volume_24h"]].drop_duplicates(key), on=key, how="left",
                       suffixes=("", "_published"), indicator=True)
    repeated = seen["_merge"] == "both"
    changed = repeated & ((seen["price"] != seen["price_published"])
                          | (seen["volume_24h"] != seen["volume_24h_published"]))
    if changed.any():
        examples = seen.loc[changed, key + ["price", "price_published"]].head(3).to_dict("records")
        raise ValueError(f"price ticks: {int(changed.sum())} tick(s) repeat a published (market_id, ts) with a "
                         f"different price/volume; observations never change (e.g. {examples})")
    return ticks[~repeated.to_numpy()].reset_index(drop=True)


def write_offline(frame: pd.DataFrame, settings: Settings, ingested_at: datetime) -> tuple[list[str], pd.DataFrame]:
    """Append ticks to the offline store as a committed batch (ingestion's own publish protocol and
    lock: staged files, manifest, rename into place, commit record). The time rules are checked
    under the same lock, so an ingest cannot resolve a market between the check and the write.
    Returns the files written and the ticked markets' newest published versions."""
    from ingestion.publish import publish, store_lock
    from ingestion.store import is_committed, read_published

    batch_id = _batch_id(frame)
    root = settings.offline_store_dir
    with store_lock(root):
        current = _check_times(frame, settings, ingested_at)
        if is_committed(root, batch_id):  # same content already published: nothing changes
            return [], current
        frame = _new_observations(frame, read_published(root, TABLE, frame["market_id"].unique()))
        if frame.empty:
            return [], current
        rows = frame.assign(ingested_at=pd.Timestamp(ingested_at), batch_id=batch_id)
        rows["ingested_at"] = rows["ingested_at"].astype("datetime64[us, UTC]")
        record = {"batch_id": batch_id, "ingested_at": pd.Timestamp(ingested_at).isoformat(),
                  "source_dir": "features.push:" + PUSH_SOURCE, "input_rows": {TABLE: len(rows)},
                  "rows": {TABLE: len(rows)}}
        return publish(root, batch_id, {TABLE: rows}, record), current


def push_price_ticks(
    ticks: pd.DataFrame,
    to: Literal["online", "online_and_offline"] = "online_and_offline",
    *,
    settings: Settings | None = None,
    store: "FeatureStore | None" = None,
) -> int:
    """Push live ticks (market_id, ts, price, volume_24h and the rolling columns); returns the rows that
    went online (see :func:`_online_rows`: per open market its newest tick, if newer than the stored one)."""
    from feast.data_source import PushMode

    from features.store import get_store

    if to not in ("online", "online_and_offline"):
        raise ValueError(f"to must be 'online' or 'online_and_offline', got {to!r}")
    settings = settings or get_settings()
    frame = _validate(ticks)
    now = datetime.now(timezone.utc)
    store = store or get_store(settings)
    if to == "online_and_offline":
        _, current = write_offline(frame, settings, now)  # first: an online value must never lack its offline record
    else:
        current = _check_times(frame, settings, now)
    online = _online_rows(frame, current, store)
    if not online.empty:
        store.push(PUSH_SOURCE, online.assign(ingested_at=pd.Timestamp(now)), to=PushMode.ONLINE)
    return len(online)

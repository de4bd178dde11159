"""The Parquet offline store: layout, Arrow schemas, reading what is published, and a summary.

Layout (fixed in docs/architecture.md)::

    <offline>/<table>/month=YYYY-MM/<batch_id>.parquet
    <offline>/_batches/<batch_id>.json     commit record (written last)
    <offline>/_staging/<batch_id>/         in-flight files, never read

Readers here only read files whose batch has a commit record, so a batch renamed into
place but not yet committed (a crash mid-publish) is invisible until recovery commits it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from config.settings import Settings, get_settings

BATCHES_DIR = "_batches"
STAGING_DIR = "_staging"
LOCK_FILE = "_ingest.lock"

_TS = pa.timestamp("us", tz="UTC")
_STAMP = [("ingested_at", _TS), ("batch_id", pa.string())]

STORE_SCHEMAS: dict[str, pa.Schema] = {
    "markets": pa.schema([
        ("market_id", pa.string()), ("question", pa.string()), ("event_type", pa.string()),
        ("platform", pa.string()), ("created_at", _TS), ("resolution_date", _TS), ("resolved_at", _TS),
        ("outcome", pa.int8()), ("updated_at", _TS), *_STAMP]),
    "market_info": pa.schema([
        ("market_id", pa.string()), ("event_ts", _TS), ("question", pa.string()), ("event_type", pa.string()),
        ("platform", pa.string()), ("created_at", _TS), ("resolution_date", _TS), *_STAMP]),
    "price_features": pa.schema([
        ("market_id", pa.string()), ("ts", _TS), ("price", pa.float64()), ("volume_24h", pa.float64()),
        ("price_change_1d", pa.float64()), ("price_change_7d", pa.float64()),
        ("price_volatility_7d", pa.float64()), ("price_volatility_30d", pa.float64()),
        ("volume_mean_7d", pa.float64()), *_STAMP]),
    "poll_features": pa.schema([
        ("market_id", pa.string()), ("ts", _TS), ("poll_average", pa.float64()), ("poll_trend", pa.float64()),
        ("n_polls", pa.int64()), *_STAMP]),
}

# The event timestamp that decides a row's month partition.
EVENT_TS: dict[str, str] = {"markets": "updated_at", "market_info": "event_ts",
                            "price_features": "ts", "poll_features": "ts"}
STORE_TABLES: tuple[str, ...] = tuple(STORE_SCHEMAS)
# Nullable integers stay integers in pandas (instead of float64 with NaN).
_PANDAS_TYPES = {pa.int8(): pd.Int8Dtype(), pa.int64(): pd.Int64Dtype()}.get


def offline_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).offline_store_dir


def committed_batches(root: Path) -> dict[str, dict[str, Any]]:
    """batch_id -> commit record, for every published batch."""
    out: dict[str, dict[str, Any]] = {}
    bdir = root / BATCHES_DIR
    if not bdir.is_dir():
        return out
    for path in sorted(bdir.glob("*.json")):
        out[path.stem] = json.loads(path.read_text())
    return out


def is_committed(root: Path, batch_id: str) -> bool:
    return (root / BATCHES_DIR / f"{batch_id}.json").is_file()


def published_files(root: Path, table: str, committed: Iterable[str] | None = None) -> list[Path]:
    ids = set(committed_batches(root)) if committed is None else set(committed)
    return sorted(p for p in (root / table).glob("month=*/*.parquet") if p.stem in ids)


def read_published(root: Path, table: str, market_ids: Iterable[str] | None = None,
                   committed: Iterable[str] | None = None) -> pd.DataFrame:
    """Committed rows of a store table (optionally only some markets), typed as in the store."""
    schema = STORE_SCHEMAS[table]
    files = published_files(root, table, committed)
    if not files:
        return schema.empty_table().to_pandas(types_mapper=_PANDAS_TYPES)
    dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
    filt = None
    if market_ids is not None:
        filt = pc.field("market_id").isin(pa.array(sorted(set(market_ids)), type=pa.string()))
    return dataset.to_table(filter=filt).to_pandas(types_mapper=_PANDAS_TYPES)


def latest_rows(frame: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """One row per key: the one with the newest ingested_at (what Feast would serve)."""
    if frame.empty:
        return frame
    return (frame.sort_values([*key, "ingested_at"], kind="mergesort")
            .drop_duplicates(subset=key, keep="last").reset_index(drop=True))


def describe_store(limit: int = 5, settings: Settings | None = None) -> str:
    """A text summary: committed batches, per table files/rows/time range, a few rows; staged leftovers."""
    root = offline_dir(settings)
    lines = [f"offline store: {root}"]
    committed = committed_batches(root)
    lines.append(f"batches published: {len(committed)}")
    for bid, rec in sorted(committed.items(), key=lambda kv: kv[1].get("ingested_at", "")):
        rows = ", ".join(f"{t}={n}" for t, n in rec.get("rows", {}).items())
        lines.append(f"  {bid}  ingested_at={rec.get('ingested_at')}  source={rec.get('source_dir')}  {rows}")
    staging = root / STAGING_DIR
    leftovers = sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []
    if leftovers:
        lines.append(f"staged but not committed (recovered by the next ingest): {leftovers}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        for table in STORE_TABLES:
            files = published_files(root, table, committed)
            if not files:
                lines.append(f"\n[{table}] no rows")
                continue
            data = pq.ParquetDataset([str(f) for f in files], schema=STORE_SCHEMAS[table]).read()
            ts_col = data.column(EVENT_TS[table])
            months = sorted({f.parent.name for f in files})
            lines.append(f"\n[{table}] {data.num_rows} rows in {len(files)} file(s), "
                         f"{pc.count_distinct(data.column('market_id')).as_py()} markets, "
                         f"{EVENT_TS[table]} from {pc.min(ts_col).as_py()} to {pc.max(ts_col).as_py()}, "
                         f"partitions {months[0]} .. {months[-1]}")
            if limit > 0:
                head = data.slice(0, limit).to_pandas(types_mapper=_PANDAS_TYPES)
                lines.append(head.to_string(index=False))
    return "\n".join(lines)

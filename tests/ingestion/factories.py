"""Tiny, valid contract batches built in code, written as Parquet or CSV.

``valid_tables()`` gives a consistent batch (markets, price_snapshots, polls); tests break one
thing in it and write it with :func:`write_batch`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.publish import store_lock

T0 = pd.Timestamp("2024-01-01", tz="UTC")
FORMATS = ("parquet", "csv")


def markets_frame(n: int = 3, resolved: bool = True, start: pd.Timestamp = T0,
                  days: int = 30) -> pd.DataFrame:
    """n markets created at ``start + i hours``; resolved (outcome i % 2) ``days`` later if ``resolved``."""
    created = pd.Series([start + pd.Timedelta(hours=i) for i in range(n)], dtype="datetime64[us, UTC]")
    never = pd.Series([pd.NaT] * n, dtype="datetime64[us, UTC]")
    resolved_at = created + pd.Timedelta(days=days) if resolved else never
    return pd.DataFrame({
        "market_id": [f"m{i:03d}" for i in range(n)],
        "question": [f"Will thing {i} happen?" for i in range(n)],
        "event_type": ["election", "sports", "crypto", "economics", "weather", "science", "other"][:1] * n,
        "platform": ["polymarket"] * n,
        "created_at": created,
        "resolution_date": created + pd.Timedelta(days=days),
        "resolved_at": resolved_at,
        "outcome": pd.array([i % 2 for i in range(n)] if resolved else [None] * n, dtype="Int8"),
        "updated_at": resolved_at if resolved else created,
    })


def prices_frame(markets: pd.DataFrame, n_per_market: int = 10, step: pd.Timedelta = pd.Timedelta(hours=12),
                 seed: int = 0, offset: pd.Timedelta = pd.Timedelta(hours=1)) -> pd.DataFrame:
    """Snapshots every ``step`` from created_at + offset, inside each market's lifetime."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in markets.itertuples():
        for k in range(n_per_market):
            rows.append((m.market_id, m.created_at + offset + k * step))
    df = pd.DataFrame(rows, columns=["market_id", "ts"])
    df["ts"] = df["ts"].astype("datetime64[us, UTC]")
    df["price"] = rng.uniform(0.05, 0.95, len(df)).round(6)
    df["volume_24h"] = rng.uniform(0, 5000, len(df)).round(2)
    return df


def polls_frame(markets: pd.DataFrame, n_per_market: int = 3, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for m in markets.itertuples():
        for k in range(n_per_market):
            rows.append((m.market_id, m.created_at + pd.Timedelta(days=1 + k)))
    df = pd.DataFrame(rows, columns=["market_id", "ts"])
    df["ts"] = df["ts"].astype("datetime64[us, UTC]")
    df["poll_average"] = rng.uniform(0.2, 0.8, len(df)).round(4)
    df["poll_trend"] = rng.uniform(-0.1, 0.1, len(df)).round(4)
    df["n_polls"] = rng.integers(1, 20, len(df)).astype("int64")
    return df


def valid_tables(n_markets: int = 3) -> dict[str, pd.DataFrame]:
    markets = markets_frame(n_markets)
    return {"markets": markets, "price_snapshots": prices_frame(markets), "polls": polls_frame(markets)}


def write_batch(batch_dir: Path, tables: dict[str, pd.DataFrame], fmt: str = "parquet") -> Path:
    """Write each frame as ``<table>.<fmt>``. Frames may hold any dtypes (tests break them on purpose)."""
    batch_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), batch_dir / f"{name}.parquet")
        elif fmt == "csv":
            frame.to_csv(batch_dir / f"{name}.csv", index=False)
        else:
            raise ValueError(fmt)
    return batch_dir


def bad_price_batch(batch_dir: Path, text: str = "abc") -> Path:
    """A valid CSV batch whose first price cell is ``text`` (e.g. not a number: refused by the contract)."""
    write_batch(batch_dir, valid_tables(), "csv")
    path = batch_dir / "price_snapshots.csv"
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[2] = text
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return batch_dir


class LockHolder:
    """An ingest in progress, as readers see it: holds the offline store's lock in a thread until
    released, and records when it let go."""

    def __init__(self, root: Path):
        self.root, self.go, self.held = root, threading.Event(), threading.Event()
        self.released_at: pd.Timestamp | None = None
        self.thread = threading.Thread(target=self._hold, daemon=True)
        self.thread.start()
        assert self.held.wait(30)

    def _hold(self) -> None:
        with store_lock(self.root):
            self.held.set()
            self.go.wait(60)
            self.released_at = pd.Timestamp.now(tz="UTC")

    def release(self) -> None:
        self.go.set()
        self.thread.join(30)

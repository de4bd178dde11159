"""Background writer of the prediction log (schema: docs/architecture.md, "Prediction log").

Requests put rows on a bounded queue and never wait: a full queue drops the row and counts it.
One thread drains the queue and writes ``<dir>/date=YYYY-MM-DD/part-<uuid>.parquet`` files (written
under a dot-name, then renamed, so a reader never sees half a file). ``close()`` drains everything
still queued, so a graceful stop loses nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FEATURE_PREFIX = "feature__"
BASE_COLUMNS = ["logged_at", "request_id", "market_id", "model_version", "model_role", "source",
                "probability", "latency_ms", "ab_group"]


class PredictionLogWriter:
    def __init__(self, log_dir: Path, queue_size: int = 10_000, flush_interval_s: float = 2.0,
                 flush_rows: int = 5_000):
        self.log_dir = Path(log_dir)
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self.dropped = 0
        self.written = 0
        self.write_errors = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._closed = False

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def submit(self, row: dict[str, Any]) -> bool:
        """Queue one row; False (and counted) if the queue is full or the writer is closed."""
        if self._closed:
            with self._lock:
                self.dropped += 1
            return False
        try:
            self._queue.put_nowait(row)
            return True
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False

    def queued(self) -> int:
        return self._queue.qsize()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting rows, write everything queued, wait for the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)  # blocking put: the sentinel must get in after every queued row
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            log.error("prediction log writer did not finish within %.0f s; %d rows still queued",
                      timeout_s, self._queue.qsize())

    def _run(self) -> None:
        buffer: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.flush_interval_s
        while True:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                item = ...
            if item is None:
                self._flush(buffer)
                return
            if item is not ...:
                buffer.append(item)
            if len(buffer) >= self.flush_rows or time.monotonic() >= deadline:
                self._flush(buffer)
                buffer = []
                deadline = time.monotonic() + self.flush_interval_s

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            self._write(rows)
            self.written += len(rows)
        except Exception:  # noqa: BLE001 - the writer thread must survive; the failure is counted and logged
            self.write_errors += 1
            log.exception("prediction log: could not write %d rows to %s", len(rows), self.log_dir)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        frame = pd.DataFrame(rows)
        frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True).astype("datetime64[us, UTC]")
        for col in ("request_id", "market_id", "model_version", "model_role", "source", "ab_group"):
            frame[col] = frame[col].astype("string")
        for col in ("probability", "latency_ms"):
            frame[col] = frame[col].astype("float64")
        features = sorted(c for c in frame.columns if c.startswith(FEATURE_PREFIX))
        frame = frame[BASE_COLUMNS + features]
        for day, part in frame.groupby(frame["logged_at"].dt.strftime("%Y-%m-%d"), sort=True):
            directory = self.log_dir / f"date={day}"
            directory.mkdir(parents=True, exist_ok=True)
            name = f"part-{uuid.uuid4().hex}.parquet"
            tmp = directory / f".{name}.tmp"
            table = pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False)
            pq.write_table(table, tmp)
            tmp.rename(directory / name)

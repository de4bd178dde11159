"""Read a time window of the prediction log written by serving (schema in docs/architecture.md).

``<log_dir>/date=YYYY-MM-DD/part-<uuid>.parquet``, one row per prediction, feature values in
columns ``feature__<name>``. Only the date partitions overlapping the window are opened.
A file that breaks the schema is an error naming the file and the column, never skipped.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

import pandas as pd

FEATURE_PREFIX = "feature__"
REQUIRED_COLUMNS = ("logged_at", "request_id", "market_id", "model_version", "model_role", "source",
                    "probability", "latency_ms")
# What monitoring reads of each row (the other required columns are checked, not loaded).
MONITORED_COLUMNS = ("logged_at", "market_id", "model_version", "model_role", "source", "probability")
# Low-cardinality strings are read as dictionaries: pandas Categoricals count and compare fast.
DICTIONARY_COLUMNS = ("market_id", "model_version", "model_role", "source")
MODEL_ROLES = ("champion", "challenger", "challenger_shadow", "fallback")
SOURCES = ("model", "fallback_model", "market_price")
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_WINDOW = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class PredictionLogError(ValueError):
    """The prediction log breaks its schema; the message names the file and column."""


def parse_window(text: str) -> timedelta:
    """'7d', '24h', '30m', '2w' -> timedelta."""
    m = _WINDOW.match(text)
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"window {text!r}: expected a positive integer followed by m, h, d or w (e.g. 7d)")
    try:
        return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    except OverflowError:
        raise ValueError(f"window {text!r} is too long") from None


def partitions(log_dir: Path, start: datetime, end: datetime) -> list[Path]:
    """Part files of the date partitions that can hold rows with start <= logged_at < end."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise PredictionLogError(f"prediction log directory not found: {log_dir}")
    first, last = start.astimezone(timezone.utc).date(), end.astimezone(timezone.utc).date()
    files: list[Path] = []
    for d in sorted(log_dir.iterdir()):
        m = _PARTITION.match(d.name)
        if not d.is_dir() or m is None:
            continue  # e.g. serving's own temp dirs; partitions are only date=YYYY-MM-DD
        day = date.fromisoformat(m.group(1))
        if first <= day <= last:
            files.extend(sorted(d.glob("part-*.parquet")))
    return files


def _check_schema(path: Path, schema) -> None:  # schema: pyarrow.Schema
    import pyarrow as pa

    lacking = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if lacking:
        raise PredictionLogError(f"{path}: missing required column(s) {lacking}")
    ts = schema.field("logged_at").type
    if not pa.types.is_timestamp(ts) or ts.tz is None:
        raise PredictionLogError(f"{path}: column logged_at must be a timezone-aware timestamp, got {ts}")
    for col in ("probability", "latency_ms"):
        t = schema.field(col).type
        if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            raise PredictionLogError(f"{path}: column {col} must be numeric, got {t}")


def read_window(log_dir: Path, start: datetime, end: datetime,
                columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows with start <= logged_at < end (UTC): every column, or :data:`MONITORED_COLUMNS` plus ``columns``.

    With ``columns``, string columns (``market_id``, roles, and the requested columns that are
    strings, e.g. categorical features) come back as pandas Categoricals.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware (UTC)")
    tables = []
    for f in partitions(log_dir, start, end):
        try:
            schema = pq.read_schema(f)
        except (pa.ArrowException, OSError) as exc:
            raise PredictionLogError(f"{f}: not a readable Parquet file ({exc})") from None
        _check_schema(f, schema)
        wanted, dictionary = None, None
        if columns is not None:
            wanted = [*MONITORED_COLUMNS, *(c for c in columns if c in schema.names and c not in MONITORED_COLUMNS)]
            dictionary = [c for c in wanted if c in DICTIONARY_COLUMNS or pa.types.is_string(schema.field(c).type)
                          or pa.types.is_large_string(schema.field(c).type)]
        try:
            t = pq.read_table(f, columns=wanted, read_dictionary=dictionary)
        except (pa.ArrowException, OSError) as exc:
            raise PredictionLogError(f"{f}: not a readable Parquet file ({exc})") from None
        # To microseconds (serving's unit); finer units (pandas' ns) are truncated, not refused.
        t = t.set_column(t.schema.get_field_index("logged_at"), "logged_at",
                         t.column("logged_at").cast(pa.timestamp("us", tz="UTC"), safe=False))
        ts = t.column("logged_at")
        t = t.filter(pc.and_(pc.greater_equal(ts, pa.scalar(start, pa.timestamp("us", tz="UTC"))),
                             pc.less(ts, pa.scalar(end, pa.timestamp("us", tz="UTC")))))
        tables.append(t)
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (REQUIRED_COLUMNS if columns is None
                                                                   else MONITORED_COLUMNS)})
    table = pa.concat_tables(tables, promote_options="permissive")
    df = table.to_pandas()
    bad_p = ~df["probability"].between(0, 1)
    if bad_p.any():
        first = df.loc[bad_p].iloc[0]
        raise PredictionLogError(f"prediction log: {int(bad_p.sum())} row(s) with probability outside [0, 1] "
                                 f"(first: market_id {first['market_id']!r} logged_at {first['logged_at']})")
    return df


def feature_columns(df: pd.DataFrame) -> dict[str, pd.Series]:
    """``{feature name: column}`` for every ``feature__<name>`` column."""
    return {c[len(FEATURE_PREFIX):]: df[c] for c in df.columns if c.startswith(FEATURE_PREFIX)}


def write_log(df: pd.DataFrame, log_dir: Path) -> list[Path]:
    """Write rows in the serving log layout (one part file per date). Used by tests, bench and demo data."""
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = []
    ts = pd.to_datetime(df["logged_at"], utc=True)
    for day, part in df.groupby(ts.dt.strftime("%Y-%m-%d")):
        d = Path(log_dir) / f"date={day}"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"part-{uuid.uuid4().hex}.parquet"
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), path)
        paths.append(path)
    return paths

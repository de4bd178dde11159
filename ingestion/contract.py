"""The raw data contract (``../shared/DATA_CONTRACT.md``) as code: table schemas and every rule.

Reading and typing a file lives in :mod:`ingestion.reading`; this module holds the schemas,
the :class:`Violation` record and the row rules that need typed frames (ranges, keys,
referential and lifetime rules, and the cross-batch rules against what is already published).

Decisions the contract leaves open, made here:

* ``event_type`` / ``platform`` that are not lowercase (``"Election"``) are **refused** (rule
  ``not_lowercase``): the contract states lowercase as a rule, and silently lowercasing or
  mapping them to ``other`` would change what the producer said. A lowercase value outside the
  known set is kept as ``other`` with a warning, as the contract says.
* A null in a non-nullable column (including ``question``, which may be empty but not null) is
  refused as ``null_value``: null cannot become a string/number without inventing a value.
* An observation's lifetime is taken from its market's *current* state: the version with the
  newest ``updated_at`` among the published versions and this batch's. The contract defines
  lifetime per market, and the current version is the one that knows about resolution.
  When a batch changes a market's current state, already-published observations of that market
  are re-checked against the new lifetime too (otherwise a new version could make accepted
  data inconsistent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

ColumnKind = Literal["string", "timestamp", "float", "int"]

TABLES: tuple[str, ...] = ("markets", "price_snapshots", "polls")
KNOWN_EVENT_TYPES: frozenset[str] = frozenset(
    {"election", "sports", "economics", "crypto", "weather", "science", "other"})
MAX_MARKET_ID_LEN = 128
EARLIEST_TIMESTAMP = pd.Timestamp("2000-01-01", tz="UTC")
MAX_FUTURE = pd.Timedelta(days=1)
N_EXAMPLES = 3


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: ColumnKind
    nullable: bool = False


SCHEMAS: dict[str, tuple[ColumnSpec, ...]] = {
    "markets": (
        ColumnSpec("market_id", "string"),
        ColumnSpec("question", "string"),
        ColumnSpec("event_type", "string"),
        ColumnSpec("platform", "string"),
        ColumnSpec("created_at", "timestamp"),
        ColumnSpec("resolution_date", "timestamp"),
        ColumnSpec("resolved_at", "timestamp", nullable=True),
        ColumnSpec("outcome", "int", nullable=True),
        ColumnSpec("updated_at", "timestamp"),
    ),
    "price_snapshots": (
        ColumnSpec("market_id", "string"),
        ColumnSpec("ts", "timestamp"),
        ColumnSpec("price", "float"),
        ColumnSpec("volume_24h", "float"),
    ),
    "polls": (
        ColumnSpec("market_id", "string"),
        ColumnSpec("ts", "timestamp"),
        ColumnSpec("poll_average", "float"),
        ColumnSpec("poll_trend", "float"),
        ColumnSpec("n_polls", "int"),
    ),
}

KEYS: dict[str, tuple[str, str]] = {
    "markets": ("market_id", "updated_at"),
    "price_snapshots": ("market_id", "ts"),
    "polls": ("market_id", "ts"),
}

# Inclusive numeric ranges (None: unbounded on that side).
RANGES: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "markets": {"outcome": (0, 1)},
    "price_snapshots": {"price": (0.0, 1.0), "volume_24h": (0.0, None)},
    "polls": {"poll_average": (0.0, 1.0), "poll_trend": (-1.0, 1.0), "n_polls": (0, None)},
}

# pandas dtypes of a typed (contract-conformant) frame.
PANDAS_DTYPES: dict[ColumnKind, str] = {
    "string": "object", "timestamp": "datetime64[us, UTC]", "float": "float64", "int": "Int64",
}


def column_names(table: str) -> list[str]:
    return [c.name for c in SCHEMAS[table]]


@dataclass
class Violation:
    """One broken rule: which file/table/column, how many rows, a few example rows."""

    file: str
    table: str | None
    rule: str
    column: str | None
    n_rows: int
    detail: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)

    def message(self) -> str:
        where = f"{self.file}" + (f" (table {self.table})" if self.table else "")
        col = f", column {self.column!r}" if self.column else ""
        rows = f": {self.n_rows} row(s) refused" if self.n_rows else ""
        return f"{where}: rule {self.rule!r}{col}{rows}" + (f" — {self.detail}" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "table": self.table, "rule": self.rule, "column": self.column,
                "n_rows": self.n_rows, "detail": self.detail, "examples": self.examples}


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def examples_of(frame: pd.DataFrame, mask: np.ndarray | pd.Series,
                n: int = N_EXAMPLES) -> list[dict[str, Any]]:
    """A few offending rows as JSON-safe dicts; ``_row`` is the 0-based data row in the file."""
    rows = frame[np.asarray(mask, dtype=bool)].head(n)
    out = []
    for idx, row in rows.iterrows():
        rec = {"_row": _json_value(idx)}
        rec.update({str(k): _json_value(v) for k, v in row.items()})
        out.append(rec)
    return out


@dataclass
class TypedTable:
    """A table read from one file: the raw frame (for examples) and the typed frame (same index)."""

    table: str
    file: str
    raw: pd.DataFrame
    typed: pd.DataFrame


def _flag(out: list[Violation], t: TypedTable, mask: pd.Series | np.ndarray, rule: str,
          column: str | None, detail: str, examples_from: pd.DataFrame | None = None) -> None:
    mask = np.asarray(mask, dtype=bool)
    n = int(mask.sum())
    if n:
        out.append(Violation(t.file, t.table, rule, column, n, detail,
                             examples_of(t.raw if examples_from is None else examples_from, mask)))


def check_rows(t: TypedTable) -> tuple[list[Violation], list[str]]:
    """Single-table rules on a typed table (nulls/conversion are checked while reading).

    Mutates ``t.typed`` only to map unknown event types to ``other``. Returns (violations, warnings).
    """
    out: list[Violation] = []
    warnings: list[str] = []
    df = t.typed
    mid = df["market_id"]
    present = mid.notna()
    _flag(out, t, present & (mid.str.len() == 0), "empty_value", "market_id", "market_id must be non-empty")
    _flag(out, t, present & (mid.str.len() > MAX_MARKET_ID_LEN), "too_long", "market_id",
          f"market_id must be at most {MAX_MARKET_ID_LEN} characters")

    for column, (lo, hi) in RANGES[t.table].items():
        values = df[column].astype("float64")
        known = df[column].notna().to_numpy()
        finite = np.isfinite(values.to_numpy(dtype="float64", na_value=np.nan))
        ok = finite.copy()
        if lo is not None:
            ok &= (values >= lo).fillna(False).to_numpy()
        if hi is not None:
            ok &= (values <= hi).fillna(False).to_numpy()
        bounds = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        _flag(out, t, known & ~ok, "out_of_range", column, f"{column} must be a finite number in {bounds}")

    key = list(KEYS[t.table])
    complete_key = df[key].notna().all(axis=1)
    dup = df.duplicated(subset=key, keep=False) & complete_key
    _flag(out, t, dup, "duplicate_key", ",".join(key), f"({', '.join(key)}) must be unique within the table")

    if t.table == "markets":
        for column in ("event_type", "platform"):
            s = df[column]
            _flag(out, t, s.notna() & (s != s.str.lower()), "not_lowercase", column,
                  f"{column} must be lowercase")
        platform = df["platform"]
        _flag(out, t, platform.notna() & (platform.str.len() == 0), "empty_value", "platform",
              "platform must be non-empty")
        et = df["event_type"]
        unknown = et.notna() & (et == et.str.lower()) & ~et.isin(KNOWN_EVENT_TYPES)
        if unknown.any():
            values = sorted(et[unknown].unique().tolist())
            warnings.append(f"{t.file}: {int(unknown.sum())} row(s) with unknown event_type "
                            f"{values[:5]} kept as 'other'")
            df.loc[unknown, "event_type"] = "other"
        created = df["created_at"]
        _flag(out, t, (df["resolution_date"] < created).fillna(False), "before_created_at", "resolution_date",
              "resolution_date must be at or after created_at")
        _flag(out, t, (df["resolved_at"] < created).fillna(False), "before_created_at", "resolved_at",
              "resolved_at must be at or after created_at")
        # Whether the producer gave a value (raw), so an unconvertible one is not reported twice.
        resolved = t.raw["resolved_at"].notna()
        has_outcome = t.raw["outcome"].notna()
        _flag(out, t, resolved != has_outcome, "outcome_inconsistent", "outcome",
              "outcome must be null exactly when resolved_at is null")
    return out, warnings


def current_versions(versions: pd.DataFrame) -> pd.DataFrame:
    """The newest version (by updated_at) of each market, indexed by market_id."""
    newest = versions.sort_values(["market_id", "updated_at"]).drop_duplicates("market_id", keep="last")
    return newest.set_index("market_id")


def check_references_and_lifetime(
    obs: TypedTable, lifetimes: pd.DataFrame,
) -> list[Violation]:
    """market_id must be known; created_at <= ts <= resolved_at of the market's current version.

    ``lifetimes`` is indexed by market_id with columns created_at, resolved_at.
    """
    out: list[Violation] = []
    df = obs.typed
    known = df["market_id"].isin(lifetimes.index)
    _flag(out, obs, df["market_id"].notna() & ~known, "unknown_market", "market_id",
          "market_id must exist in markets (this batch or an already published one)")
    life = lifetimes.reindex(df["market_id"])
    created = life["created_at"].set_axis(df.index)
    resolved = life["resolved_at"].set_axis(df.index)
    ts = df["ts"]
    before = (ts < created).fillna(False)
    after = (ts > resolved).fillna(False)
    if (before | after).any():
        ex = obs.raw.copy()
        ex["market_created_at"] = created
        ex["market_resolved_at"] = resolved
        _flag(out, obs, before | after, "outside_lifetime", "ts",
              f"ts must be within the market's lifetime [created_at, resolved_at] of its current version "
              f"({int(before.sum())} before created_at, {int(after.sum())} after resolved_at)",
              examples_from=ex)
    return out


def check_published_within_new_lifetime(
    markets_file: str, published_obs: pd.DataFrame, table: str, lifetimes: pd.DataFrame,
) -> list[Violation]:
    """Already-published observations must stay inside a lifetime that this batch changes."""
    if published_obs.empty:
        return []
    life = lifetimes.reindex(published_obs["market_id"]).set_axis(published_obs.index)
    created, resolved = life["created_at"], life["resolved_at"]
    ts = published_obs["ts"]
    bad = ((ts < created).fillna(False) | (ts > resolved).fillna(False)).to_numpy(dtype=bool)
    if not bad.any():
        return []
    ex = published_obs[["market_id", "ts"]].reset_index(drop=True).copy()
    ex["new_created_at"] = created
    ex["new_resolved_at"] = resolved
    return [Violation(markets_file, "markets", "outside_lifetime", "resolved_at", int(bad.sum()),
                      f"this batch changes the current version of markets so that {int(bad.sum())} already "
                      f"published {table} row(s) fall outside [created_at, resolved_at]",
                      examples_of(ex, bad))]


def split_repeats(
    new: TypedTable, published: pd.DataFrame,
) -> tuple[pd.DataFrame, int, list[Violation]]:
    """Across batches: a published key repeated with identical values is skipped, with different ones refused.

    Returns (rows that are new, number of identical repeats skipped, violations).
    """
    key = list(KEYS[new.table])
    df = new.typed
    if published.empty or df.empty:
        return df, 0, []
    value_cols = [c for c in column_names(new.table) if c not in key]
    pub = published[key + value_cols].drop_duplicates(subset=key, keep="last")
    merged = df[key + value_cols].reset_index().merge(pub, on=key, how="left", suffixes=("", "__pub"),
                                                      indicator=True)
    merged = merged.set_index("index")
    repeated = (merged["_merge"] == "both").reindex(df.index).to_numpy()
    if not repeated.any():
        return df, 0, []
    differs = np.zeros(len(merged), dtype=bool)
    for c in value_cols:
        a, b = merged[c], merged[f"{c}__pub"]
        both_null = a.isna() & b.isna()
        if a.dtype.kind in "fiu" or b.dtype.kind in "fiu" or str(a.dtype).startswith("Int"):
            equal = pd.Series(a.astype("float64") == b.astype("float64"))
        else:
            equal = pd.Series(a == b).fillna(False).astype(bool)
        differs |= np.asarray(~(equal | both_null), dtype=bool)
    differs = pd.Series(differs, index=merged.index).reindex(df.index).to_numpy() & repeated
    out: list[Violation] = []
    if differs.any():
        ex = new.raw.copy()
        pub_cols = merged.reindex(df.index)[[f"{c}__pub" for c in value_cols]]
        pub_cols.columns = [f"published_{c}" for c in value_cols]
        ex = ex.join(pub_cols)
        _flag(out, new, differs, "conflicts_with_published", ",".join(key),
              f"({', '.join(key)}) was already published with different values; observations and "
              f"market versions never change", examples_from=ex)
    identical = repeated & ~differs
    return df[~identical], int(identical.sum()), out

"""Validation frames: the typed tables plus the derived columns the suites check.

Cross-column and cross-table rules become vectorized column-pair expectations on one frame:
price snapshots and polls get their market's ``_market_known``, ``_market_created_at`` and
``_market_closes_at`` (see :func:`observation_frame`); markets get null indicators for the
outcome/resolved_at rule.
Pure pandas, no Great Expectations import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from validation.suites import STRING_VALUE_COLUMNS, TIMESTAMP_COLUMNS, TRAINING_POLL_FEATURES

LIFETIME_COLUMNS = ["market_id", "created_at", "resolved_at", "updated_at"]
# Each derived column -> the contract column it is computed from; None: the market's lifetime, from
# the markets table, so a rule on an observation names only the observation's own columns.
DERIVED_FROM: dict[str, str | None] = {
    "_outcome_is_null": "outcome", "_resolved_at_is_null": "resolved_at", "_is_resolved": "resolved_at",
    "_market_known": "market_id", "_market_created_at": None, "_market_closes_at": None,
    **{f"_{column}_is_str": column for column in STRING_VALUE_COLUMNS},
}
UTC_NS = pd.DatetimeTZDtype("ns", "UTC")
RUN_PROBE = 4096  # leading values looked at to decide whether rows come grouped (runs_of_equal_strings)


def normalize(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """A shallow copy with representation-only differences removed (never values).

    pandas' string dtype becomes object and UTC timestamps of any unit become ns, so the
    suites check types by meaning (string, UTC timestamp) rather than by storage detail.
    Naive or non-UTC timestamps are left alone: the type expectation refuses them.
    """
    out = df.copy(deep=False)
    for column in out.columns:
        dtype = out[column].dtype
        if isinstance(dtype, pd.StringDtype):
            out[column] = out[column].astype(object)
    for column in TIMESTAMP_COLUMNS.get(table, ()):
        if column in out.columns:
            dtype = out[column].dtype
            if isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC" and dtype.unit != "ns":
                out[column] = out[column].astype("datetime64[ns, UTC]")
    return out


def contract_columns(columns: str | None) -> str | None:
    """An expectation's column(s) ("ts,_market_created_at") as contract columns ("ts"), for reports."""
    if not columns:
        return columns
    names: list[str] = []
    for name in columns.split(","):
        contract = DERIVED_FROM.get(name, name)
        if contract is not None and contract not in names:
            names.append(contract)
    return ",".join(names) or None


def is_str(values: np.ndarray) -> np.ndarray:
    """Per value: is it a Python ``str`` (nulls and numbers are not)? One C-level pass when all are."""
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return np.ones(len(values), dtype=bool)
    return np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))


def markets_frame(markets: pd.DataFrame) -> pd.DataFrame:
    out = normalize(markets, "markets")
    # An object column may hold numbers: GX's type check sees only the dtype, its length and regex
    # checks stringify values. These say, per row, that the value really is a string.
    for column in STRING_VALUE_COLUMNS:
        if column in out.columns:
            out[f"_{column}_is_str"] = is_str(out[column].to_numpy())
    if "outcome" in out.columns:
        out["_outcome_is_null"] = out["outcome"].isna().to_numpy()
    if "resolved_at" in out.columns:
        resolved_is_null = out["resolved_at"].isna().to_numpy()
        out["_resolved_at_is_null"] = resolved_is_null
        out["_is_resolved"] = (~resolved_is_null).astype("float64")
    return out


def _usable_lifetimes(markets: pd.DataFrame | None) -> pd.DataFrame | None:
    """Lifetime columns of a markets frame, or None if it cannot provide them (its own suite says why).

    Without a usable ``updated_at`` the rows count in their given order (the markets suite
    refuses the batch anyway), so observations are not also refused for a markets-only defect.
    """
    if markets is None or not {"market_id", "created_at", "resolved_at"} <= set(markets.columns):
        return None
    columns = [c for c in LIFETIME_COLUMNS if c in markets.columns]
    frame = normalize(markets[columns], "markets")
    for column in ("created_at", "resolved_at"):
        if not isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            return None
    if "updated_at" not in frame.columns or not isinstance(frame["updated_at"].dtype, pd.DatetimeTZDtype):
        frame = frame.assign(updated_at=pd.Timestamp.max.tz_localize("UTC"))
    return frame


def read_published_lifetimes(offline_store_dir: Path) -> pd.DataFrame | None:
    """Every accepted market version in the offline store (ingestion's layout), lifetime columns only."""
    files = sorted((offline_store_dir / "markets").glob("**/*.parquet"))
    if not files:
        return None
    return pd.concat([pd.read_parquet(f, columns=LIFETIME_COLUMNS) for f in files], ignore_index=True)


def market_lifetimes(batch_markets: pd.DataFrame | None, published: pd.DataFrame | None) -> pd.DataFrame:
    """Current state (newest updated_at) of each market: created_at, resolved_at, indexed by market_id."""
    parts = [p for p in (_usable_lifetimes(published), _usable_lifetimes(batch_markets)) if p is not None]
    if not parts:
        empty = pd.DataFrame({"created_at": pd.Series(dtype="datetime64[ns, UTC]"),
                              "resolved_at": pd.Series(dtype="datetime64[ns, UTC]")})
        return empty.rename_axis("market_id")
    versions = pd.concat(parts, ignore_index=True).sort_values(["market_id", "updated_at"], kind="stable")
    current = versions.drop_duplicates("market_id", keep="last").set_index("market_id")
    return current[["created_at", "resolved_at"]]


def observation_frame(observations: pd.DataFrame, table: str, lifetimes: pd.DataFrame) -> pd.DataFrame:
    """Snapshots or polls with their market's lifetime, as never-null columns.

    ``_market_known``: the market exists. ``_market_created_at`` / ``_market_closes_at``: its
    lifetime; an open market closes at ``pd.Timestamp.max``, and an unknown market gets the
    row's own ts for both (its lifetime cannot be checked: the ``_market_known`` rule reports
    it, once). Never-null columns let the pair expectations skip GX's ``dropna``, which copies
    the whole frame.
    """
    out = normalize(observations, table)
    if "market_id" not in out.columns:
        return out
    # One hash lookup per run of equal ids, then positional takes: far cheaper than a merge on 1M rows.
    positions = lookup_positions(lifetimes.index, out["market_id"].to_numpy())
    known = positions >= 0
    out["_market_known"] = known
    if "ts" not in out.columns or not isinstance(out["ts"].dtype, pd.DatetimeTZDtype):
        return out  # the ts type expectation refuses the batch; lifetimes cannot be compared
    ts = out["ts"].to_numpy(dtype="datetime64[ns]")
    safe_positions = np.where(known, positions, 0)
    created = lifetimes["created_at"].to_numpy(dtype="datetime64[ns]")
    resolved = lifetimes["resolved_at"].to_numpy(dtype="datetime64[ns]")
    if len(lifetimes):
        created, resolved = created[safe_positions], resolved[safe_positions]
        never = np.datetime64(pd.Timestamp.max.as_unit("ns").to_datetime64())
        resolved = np.where(np.isnat(resolved), never, resolved)
    out["_market_created_at"] = _utc(np.where(known, created, ts) if len(lifetimes) else ts)
    out["_market_closes_at"] = _utc(np.where(known, resolved, ts) if len(lifetimes) else ts)
    return out


def _utc(values: np.ndarray) -> pd.DatetimeIndex:
    """UTC instants (naive datetime64 values are UTC already) as a tz-aware index, without a copy.

    Built from the int64 epoch values: given a UTC dtype they are taken as instants as they are,
    where ``tz="UTC"`` on naive values would localize them (a pass over every value).
    """
    return pd.DatetimeIndex(values.astype("datetime64[ns]", copy=False).view("i8"), dtype=UTC_NS)


def runs_of_equal_strings(values: np.ndarray) -> np.ndarray | None:
    """Start offsets of the runs of equal adjacent values, if ``values`` holds only ``str`` (else None).

    Rows usually come grouped by market, so looking up one value per run instead of one per row
    does the same lookups ~500x less often; the answer is the same for any order (no runs: one
    lookup per row, as before). Only plain strings, whose ``==`` is the lookups' equality.
    Returns None as well when the rows are not grouped (more than one run per two rows; the first
    values are looked at before any full pass), so callers take their per-row path.
    """
    if values.dtype != object or len(values) == 0:
        return None
    probe = values[:RUN_PROBE]
    if pd.api.types.infer_dtype(probe, skipna=False) != "string" or \
            np.count_nonzero(probe[1:] != probe[:-1]) >= max(1, len(probe) // 2):
        return None
    if pd.api.types.infer_dtype(values, skipna=False) != "string":
        return None
    starts = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1))
    return None if len(starts) > len(values) // 2 else starts


def repeat_per_run(per_run: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """Expand one value per run (runs starting at ``starts``, ``n`` values in all) to one per value."""
    return np.repeat(per_run, np.diff(np.append(starts, n)))


def lookup_positions(index: pd.Index, values: np.ndarray) -> np.ndarray:
    """``index.get_indexer(values)``, looking up each run of equal adjacent strings once."""
    starts = runs_of_equal_strings(values)
    if starts is None:
        return index.get_indexer(values)
    return repeat_per_run(index.get_indexer(values[starts]), starts, len(values))


def training_frame(df: pd.DataFrame) -> pd.DataFrame:
    out = normalize(df, "training_set")
    for column in TRAINING_POLL_FEATURES:
        if column not in out.columns:
            out[column] = np.nan  # polls are optional: a training set without poll features is valid
    return out

"""Point-in-time rolling price features, computed at ingest.

Definitions, for a snapshot of market m at time ts (only m's snapshots at or before ts are used):

* ``price_change_1d`` / ``price_change_7d``: price(ts) minus the price of m's last snapshot at or
  before ``ts - 1 day`` / ``ts - 7 days``; null when there is none.
* ``price_volatility_7d`` / ``price_volatility_30d``: sample standard deviation (ddof=1) of m's
  prices with timestamp in the half-open window ``(ts - w, ts]``; null with fewer than 2 prices.
* ``volume_mean_7d``: mean of ``volume_24h`` over ``(ts - 7 days, ts]`` (never null: ts itself is in it;
  finite and accurate for finite volumes, however large or far apart: see :func:`_window_means`).

Windows are time-based, not row-based, so irregular snapshot spacing is handled.

Multi-batch delivery: ingest computes these over the market's already-published snapshots plus
the batch's, so delivering the data in several batches gives the same values as one batch.
When a late batch adds a snapshot *earlier* than published ones, the later snapshots whose
features change get a corrected row appended in the new batch's files (same ``ts``, newer
``ingested_at``); old files are never rewritten and Feast serves the newest ``ingested_at``
for equal event timestamps. :func:`changed_rows` finds them with a relative tolerance of 1e-9, so
floating-point noise from a different summation order never produces spurious corrections.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

PRICE_FEATURES: tuple[str, ...] = ("price_change_1d", "price_change_7d", "price_volatility_7d",
                                   "price_volatility_30d", "volume_mean_7d")
CHANGE_LAGS: dict[str, pd.Timedelta] = {"price_change_1d": pd.Timedelta(days=1),
                                        "price_change_7d": pd.Timedelta(days=7)}
VOLATILITY_WINDOWS: dict[str, str] = {"price_volatility_7d": "7D", "price_volatility_30d": "30D"}
VOLATILITY_MIN_PERIODS = 2
VOLATILITY_DDOF = 1


class _TimeWindowIndexer(BaseIndexer):
    """Precomputed [start, end) row bounds, so one pandas rolling pass covers every market."""

    def __init__(self, start: np.ndarray, end: np.ndarray) -> None:
        super().__init__()
        self._start, self._end = start, end

    def get_window_bounds(self, num_values: int = 0, min_periods: int | None = None,
                          center: bool | None = None, closed: str | None = None,
                          step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self._start, self._end


class _MarketClock:
    """Rows sorted by (market_id, ts) mapped to one increasing integer key, to search all markets at once.

    ``key = market_code * n_instants + rank(ts)`` where the ranks are taken over every ts and every
    ``ts - lag`` queried, so comparisons stay exact (microseconds) and the key cannot overflow
    (it is below n_markets * 5 * n_rows).
    """

    def __init__(self, market_id: pd.Series, ts: pd.Series, lags: list[pd.Timedelta]) -> None:
        self.code = pd.factorize(market_id, sort=True)[0].astype("int64")
        self.ts_us = ts.to_numpy(dtype="datetime64[us]").astype("int64")
        self.lag_us = {lag: int(lag / pd.Timedelta(microseconds=1)) for lag in lags}
        # Sorted, not deduplicated: searchsorted(side="left") gives equal instants equal ranks.
        instants = np.sort(np.concatenate([self.ts_us] + [self.ts_us - us for us in self.lag_us.values()]))
        self.width = len(instants)
        self.instants = instants
        self.key = self.code * self.width + np.searchsorted(instants, self.ts_us)

    def query(self, lag: pd.Timedelta) -> np.ndarray:
        return self.code * self.width + np.searchsorted(self.instants, self.ts_us - self.lag_us[lag])

    def last_at_or_before(self, lag: pd.Timedelta) -> np.ndarray:
        """Row index of the same market's last row with ts <= ts - lag, or -1."""
        idx = np.searchsorted(self.key, self.query(lag), side="right") - 1
        ok = idx >= 0
        ok[ok] = self.code[idx[ok]] == self.code[ok]
        return np.where(ok, idx, -1)

    def window_start(self, lag: pd.Timedelta) -> np.ndarray:
        """First row of the same market with ts > ts - lag (the half-open window (ts - lag, ts])."""
        return np.searchsorted(self.key, self.query(lag), side="right")


def compute_price_features(snapshots: pd.DataFrame) -> pd.DataFrame:
    """All snapshots (market_id, ts, price, volume_24h) with the rolling features, sorted by market_id, ts.

    ``snapshots`` must hold each market's complete history up to its newest row, with unique
    (market_id, ts). Each market's values depend only on its own rows: pandas' rolling variance
    restarts its accumulators at a window that does not overlap the previous one, which is the
    case at every market boundary, so a market computed alone or beside others gives the same bits.
    """
    df = snapshots[["market_id", "ts", "price", "volume_24h"]].sort_values(
        ["market_id", "ts"], kind="mergesort").reset_index(drop=True)
    if df.empty:
        for name in PRICE_FEATURES:
            df[name] = pd.Series(dtype="float64")
        return df
    windows = {name: pd.Timedelta(days=int(w.rstrip("D"))) for name, w in VOLATILITY_WINDOWS.items()}
    clock = _MarketClock(df["market_id"], df["ts"], [*CHANGE_LAGS.values(), *windows.values()])
    price = df["price"].to_numpy(dtype="float64")
    for name, lag in CHANGE_LAGS.items():
        ref = clock.last_at_or_before(lag)
        df[name] = np.where(ref >= 0, price - price[np.maximum(ref, 0)], np.nan)
    end = np.arange(1, len(df) + 1, dtype="int64")
    for name, lag in windows.items():
        indexer = _TimeWindowIndexer(clock.window_start(lag).astype("int64"), end)
        df[name] = df["price"].rolling(indexer, min_periods=VOLATILITY_MIN_PERIODS).std(ddof=VOLATILITY_DDOF)
    start = clock.window_start(pd.Timedelta(days=7)).astype("int64")
    df["volume_mean_7d"] = _window_means(df["volume_24h"], start, end, clock.code)
    return df


def _window_means(values: pd.Series, start: np.ndarray, end: np.ndarray,
                  market_code: np.ndarray) -> np.ndarray:
    """Mean of ``values[start[i]:end[i]]`` per row (``end[i] = i + 1``; rows sorted by market, ts).

    pandas' rolling mean keeps one running sum, adding each value as it enters the window and
    subtracting it as it leaves. For finite but extreme volumes that goes wrong, although every
    mean of finite values is finite: three volumes of 1.7e308 sum to inf, and once the window
    moves on, inf - inf leaves NaN for every later row of the market; values far apart in size
    (1e300 and 1e3) leave a rounding residue that swamps the small ones (a later mean of 0.0).
    Markets at risk of either are computed by :func:`_additive_window_sums` instead (no value is
    ever subtracted), their values first divided by a power of two so no partial sum overflows
    (exact, barring subnormals). Every other market keeps pandas' bits. Decided per market, so a
    market computed alone or beside others gives the same values.
    """
    v = values.to_numpy(dtype="float64")
    means = values.rolling(_TimeWindowIndexer(start, end), min_periods=1).mean().to_numpy(dtype="float64")
    first = np.flatnonzero(np.r_[True, market_code[1:] != market_code[:-1]])
    n_rows = np.diff(np.r_[first, len(v)])
    magnitude = np.abs(v)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        largest = np.fmax.reduceat(magnitude, first)
        smallest = np.fmin.reduceat(np.where(magnitude > 0, magnitude, np.inf), first)
        # A sum of n values below 2**e stays below 2**(e + bits(n)); keep it below 2**1020.
        exponent = np.frexp(np.where(np.isfinite(largest), largest, 0.0))[1]
        shift = np.maximum(0, exponent + np.frexp(n_rows.astype("float64"))[1] - 1020)
        # The running sum's residue is about n * eps**2 * largest (eps = 2**-52, compensated sum);
        # against the smallest value it must stay below 2**-40.
        spread = largest / smallest * n_rows > 2.0**64
    clean = np.add.reduceat(np.isnan(v), first) == 0
    for m in np.flatnonzero(((shift > 0) | spread) & clean & np.isfinite(largest)):
        rows = slice(first[m], first[m] + n_rows[m])
        local_start = start[rows] - first[m]
        sums = _additive_window_sums(np.ldexp(v[rows], -int(shift[m])).tolist(), local_start.tolist())
        counts = np.arange(1, n_rows[m] + 1) - local_start
        with np.errstate(over="ignore"):
            scaled_back = np.ldexp(np.asarray(sums) / counts, int(shift[m]))
        # A mean rounded an ulp above the largest double (all values at the maximum) is that maximum.
        means[rows] = np.fmin(scaled_back, np.finfo("float64").max)
    return means


def _additive_window_sums(v: list[float], start: list[int]) -> list[float]:
    """``sum(v[start[i]:i + 1])`` for each i (``start`` non-decreasing), adding only values inside the window.

    Two stacks: the window is an older part ``[start, boundary)``, whose sums from each position to
    ``boundary`` were computed when it was formed, and a newer part ``[boundary, i]`` with a running
    sum. When the window's start passes ``boundary``, the whole window becomes the older part. A
    value that has left the window is in no sum used afterwards, so it leaves no residue. O(n):
    each value enters one older part.
    """
    out: list[float] = []
    boundary, base, newer = 0, 0, 0.0
    older: list[float] = []
    for i, s in enumerate(start):
        if s >= boundary:
            older = [0.0] * (i + 1 - s)
            acc = 0.0
            for k in range(i, s - 1, -1):
                acc += v[k]
                older[k - s] = acc
            boundary, base, newer = i + 1, s, 0.0
            out.append(older[0])
        else:
            newer += v[i]
            out.append(older[s - base] + newer)
    return out


def changed_rows(recomputed: pd.DataFrame, stored: pd.DataFrame) -> np.ndarray:
    """Mask of ``recomputed`` rows whose features differ from the ``stored`` (newest) row of their key."""
    if stored.empty:
        return np.zeros(len(recomputed), dtype=bool)
    merged = recomputed[["market_id", "ts", *PRICE_FEATURES]].merge(
        stored[["market_id", "ts", *PRICE_FEATURES]], on=["market_id", "ts"], how="left",
        suffixes=("", "__stored"), indicator=True)
    in_store = (merged["_merge"] == "both").to_numpy()
    differs = np.zeros(len(merged), dtype=bool)
    for name in PRICE_FEATURES:
        a = merged[name].to_numpy(dtype="float64", na_value=np.nan)
        b = merged[f"{name}__stored"].to_numpy(dtype="float64", na_value=np.nan)
        same = np.isclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
        differs |= ~same
    return in_store & differs

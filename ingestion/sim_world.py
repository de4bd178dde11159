"""The simulated world behind :mod:`ingestion.simulate`: parameters and one vectorised chunk.

Everything is in epoch seconds (int64) until the Arrow tables are built. Random draws happen in
a fixed order whose sizes depend only on the markets' lifecycles (never on ``drift_start`` or
the number of batches), so drift and batching transform the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from scipy.special import expit, log_ndtr, ndtr

if TYPE_CHECKING:
    from ingestion.simulate import SimulationConfig

DAY = 86_400
HOUR = 3_600
STEP = 6 * HOUR  # simulation grid; snapshots are every 4th step, or every step near resolution
STEPS_PER_DAY = DAY // STEP
DENSE_BEFORE_RESOLUTION = 3 * DAY  # snapshots every STEP in this window before resolution_date
POLL_WINDOW = 7 * DAY  # poll_trend: change of poll_average over the preceding 7 days

EVENT_TYPES = ("election", "sports", "economics", "crypto", "weather", "science", "other")
EVENT_PROBS = np.array([0.15, 0.25, 0.15, 0.15, 0.08, 0.07, 0.15])
EVENT_MEDIAN_DAYS = np.array([90.0, 4.0, 30.0, 14.0, 3.0, 60.0, 30.0])  # market lifetime
EVENT_LIFETIME_SIGMA = np.array([0.6, 0.6, 0.5, 0.7, 0.5, 0.7, 0.8])  # of log lifetime
EVENT_PRIOR_MEAN = np.array([0.0, 0.0, 0.0, -0.2, 0.0, -0.4, -0.3])  # latent state at creation
EVENT_PRICE_BIAS = np.array([-0.3, 0.1, -0.1, 0.6, 0.0, 0.5, 0.2])  # sentiment, in price logit

PLATFORMS = ("polymarket", "kalshi", "predictit", "manifold")
PLATFORM_PROBS = np.array([0.35, 0.30, 0.10, 0.25])
PLATFORM_VOLUME_MEDIAN = np.array([40_000.0, 15_000.0, 4_000.0, 300.0])
PLATFORM_LAG_STEPS = np.array([2, 4, 8, 12])  # price reflects the truth this many STEPs ago
PLATFORM_NOISE_SD = np.array([0.3, 0.35, 0.5, 0.6])  # price logit noise at median liquidity
PLATFORM_BETA = np.array([1.20, 0.85, 0.65, 0.75])  # < 1: favourite-longshot bias; > 1: overconfident
PLATFORM_INTERCEPT = np.array([-0.15, 0.05, 0.35, 0.5])  # yes-bias, in price logit
PLATFORM_PRICE_DECIMALS = np.array([3, 2, 2, 4])  # tick size 10**-decimals

PRIOR_SD = 0.7  # spread of the latent state at creation
TOTAL_VARIANCE = 1.0  # variance of the information still to come at creation
FLOOR_DAYS = 0.25  # residual variance at resolution = TOTAL_VARIANCE * FLOOR / (lifetime + FLOOR)
CORRECTION_SHARE = 0.20  # markets whose resolution_date is corrected by a middle version
SINGLE_ROW_SHARE = 0.10  # resolved markets sent only once, after resolution
POLL_SHARE_PER_SLOPE = 0.04  # poll_average = 0.5 + slope * latent state + house + noise
POLL_NOISE_SD = 0.012
POLL_KEEP = 0.85  # share of days with a poll reading

DRIFT_PRICE_INTERCEPT = 0.4
DRIFT_PRICE_BETA_FACTOR = 0.75
DRIFT_PRICE_LAG_FACTOR = 2
DRIFT_VOLUME_FACTOR = 3.0
DRIFT_POLL_NOISE_FACTOR = 3.0
DRIFT_POLL_HOUSE_EFFECT = 0.02

_EVENT_TYPE_NAMES = pa.array(EVENT_TYPES, pa.string())
_PLATFORM_NAMES = pa.array(PLATFORMS, pa.string())

TS = pa.timestamp("us", tz="UTC")
MARKETS_SCHEMA = pa.schema([
    ("market_id", pa.string()), ("question", pa.string()), ("event_type", pa.string()),
    ("platform", pa.string()), ("created_at", TS), ("resolution_date", TS), ("resolved_at", TS),
    ("outcome", pa.int8()), ("updated_at", TS),
])
SNAPSHOTS_SCHEMA = pa.schema([("market_id", pa.string()), ("ts", TS), ("price", pa.float64()),
                              ("volume_24h", pa.float64())])
POLLS_SCHEMA = pa.schema([("market_id", pa.string()), ("ts", TS), ("poll_average", pa.float64()),
                          ("poll_trend", pa.float64()), ("n_polls", pa.int64())])
TRUTH_SCHEMA = pa.schema([("market_id", pa.string()), ("ts", TS), ("true_probability", pa.float64())])


@dataclass
class ChunkTables:
    """One chunk's rows, with the delivery batch (0-based) of every row."""

    markets: pa.Table
    price_snapshots: pa.Table
    polls: pa.Table
    truth: pa.Table
    markets_batch: np.ndarray
    price_snapshots_batch: np.ndarray
    polls_batch: np.ndarray
    n_open: int
    n_single_row: int
    n_examples: int
    brier_market_sum: float
    brier_truth_sum: float

    def batch_of(self, name: str) -> np.ndarray:
        return getattr(self, f"{name}_batch")


def _ts(seconds: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    return pa.array(seconds.astype(np.int64) * 1_000_000, type=pa.int64(), mask=null).cast(TS)


def _ceil_hour(seconds: np.ndarray) -> np.ndarray:
    return -(-seconds // HOUR) * HOUR


def simulate_chunk(cfg: "SimulationConfig", chunk: int, first: int, n: int) -> ChunkTables:
    """Simulate markets ``first .. first+n-1`` with the generator of ``chunk``."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(chunk,)))
    s0, e0, k_batches = cfg.start_s, cfg.end_s, cfg.n_batches
    drift_s = cfg.drift_s

    def batch(t: np.ndarray) -> np.ndarray:
        return ((t - s0) * k_batches // (e0 - s0)).astype(np.int32)

    # ---- market-level draws (fixed order) -------------------------------------------------
    ev = rng.choice(len(EVENT_TYPES), size=n, p=EVENT_PROBS)
    pf = rng.choice(len(PLATFORMS), size=n, p=PLATFORM_PROBS)
    created = s0 + (rng.random(n) * (e0 - s0)).astype(np.int64)
    lifetime_days = np.exp(np.log(EVENT_MEDIAN_DAYS[ev]) + EVENT_LIFETIME_SIGMA[ev] * rng.standard_normal(n))
    lifetime_days = lifetime_days.clip(0.25, 400.0)
    res_date = _ceil_hour(created + (lifetime_days * DAY).astype(np.int64))
    resolved_at = res_date + rng.exponential(4 * HOUR, n).astype(np.int64)
    corr_flag = rng.random(n) < CORRECTION_SHARE
    shift_days = rng.uniform(-10.0, 10.0, n)
    corr_frac = rng.uniform(0.2, 0.8, n)
    single_flag = rng.random(n) < SINGLE_ROW_SHARE
    publish_lag = rng.integers(0, HOUR, n)
    phase = rng.integers(0, STEP, n)
    z_init = rng.standard_normal(n)
    z_final = rng.standard_normal(n)
    liquidity = np.exp(rng.standard_normal(n))  # market volume relative to its platform median
    poll_house = rng.normal(0.0, 0.005, n)
    q_draws = rng.integers(0, 1 << 30, size=(n, 3))

    # ---- lifecycle ------------------------------------------------------------------------
    updated_res = resolved_at + publish_lag
    resolved = updated_res < e0  # resolution version delivered within the period
    single = single_flag & resolved
    sched0 = _ceil_hour(res_date + (shift_days * DAY).astype(np.int64))
    sched0 = np.maximum(sched0, _ceil_hour(created + HOUR))
    has_corr = corr_flag & ~single & (sched0 != res_date)
    first_sched = np.where(has_corr, sched0, res_date)
    corr_at = created + np.maximum(1, (corr_frac * (np.minimum(sched0, res_date) - created)).astype(np.int64))
    corr_sent = has_corr & (corr_at < e0)
    stop = np.minimum(resolved_at, e0 - 1)  # last possible observation time

    # ---- simulation grid (flat over markets) ----------------------------------------------
    g0 = created + phase
    n_grid = np.where(stop >= g0, (stop - g0) // STEP + 1, 0)
    total = int(n_grid.sum())
    seg_start = np.cumsum(n_grid) - n_grid
    mk = np.repeat(np.arange(n), n_grid)
    pos = np.arange(total)
    k = pos - seg_start[mk]
    ts = g0[mk] + k * STEP
    has_grid = n_grid > 0
    firsts = seg_start[has_grid]
    lasts = firsts + n_grid[has_grid] - 1

    # ---- latent truth: calibrated martingale ----------------------------------------------
    life = (res_date - created) / DAY
    tau = np.maximum(res_date[mk] - ts, 0) / DAY
    rv = TOTAL_VARIANCE * (tau + FLOOR_DAYS) / (life[mk] + FLOOR_DAYS)
    rv_prev = np.empty_like(rv)
    rv_prev[1:] = rv[:-1]
    rv_prev[firsts] = TOTAL_VARIANCE
    z_grid = rng.standard_normal(total)
    incr = np.sqrt(np.maximum(rv_prev - rv, 0.0)) * z_grid
    cs = np.cumsum(incr)
    s_init = EVENT_PRIOR_MEAN[ev] + PRIOR_SD * z_init
    before_first = np.zeros(n)  # cumulative sum just before each market's first grid point
    before_first[has_grid] = (cs - incr)[firsts]
    s_lat = s_init[mk] + cs - before_first[mk]
    x = s_lat / np.sqrt(rv)
    p_true = ndtr(x)
    s_last = s_init.copy()
    rv_last = np.full(n, TOTAL_VARIANCE)
    s_last[has_grid] = s_lat[lasts]
    rv_last[has_grid] = rv[lasts]
    outcome = (s_last + np.sqrt(rv_last) * z_final > 0).astype(np.int8)

    # ---- per-row draws (sizes fixed by the grid) -------------------------------------------
    z_price = rng.standard_normal(total)
    z_vol = rng.standard_normal(total)
    u_poll = rng.random(total)
    z_poll = rng.standard_normal(total)
    progress_frac = np.clip(1.0 - tau / np.maximum(life[mk], 1e-9), 0.0, 1.0)
    n_polls_all = rng.poisson(1.0 + 15.0 * progress_frac)

    drifted = ts >= drift_s if drift_s is not None else np.zeros(total, dtype=bool)

    # ---- market price: lagged, biased, noisy view of the truth -----------------------------
    pfm = pf[mk]
    lag = PLATFORM_LAG_STEPS[pfm] * np.where(drifted, DRIFT_PRICE_LAG_FACTOR, 1)
    src = np.maximum(pos - lag, seg_start[mk])
    truth_logit = np.clip(log_ndtr(x[src]) - log_ndtr(-x[src]), -8.0, 8.0)
    intercept = (PLATFORM_INTERCEPT[pfm] + EVENT_PRICE_BIAS[ev[mk]]
                 + np.where(drifted, DRIFT_PRICE_INTERCEPT, 0.0))
    beta = PLATFORM_BETA[pfm] * np.where(drifted, DRIFT_PRICE_BETA_FACTOR, 1.0)
    noise_sd = PLATFORM_NOISE_SD[pf] * np.clip(liquidity ** -0.25, 0.5, 2.0)
    price = expit(intercept + beta * truth_logit + noise_sd[mk] * z_price)
    for i, decimals in enumerate(PLATFORM_PRICE_DECIMALS.tolist()):
        sel = pfm == i
        tick = 10.0 ** -decimals
        price[sel] = np.round(np.clip(price[sel], tick, 1.0 - tick), decimals)

    volume = (PLATFORM_VOLUME_MEDIAN[pfm] * liquidity[mk]
              * (0.3 + 0.7 * progress_frac + 3.0 * np.exp(-tau / 2.0))
              * np.exp(0.35 * z_vol) * np.where(drifted, DRIFT_VOLUME_FACTOR, 1.0))
    volume = np.round(volume, 2)

    # ---- snapshots --------------------------------------------------------------------------
    snap = (k % STEPS_PER_DAY == 0) | (ts >= res_date[mk] - DENSE_BEFORE_RESOLUTION)
    obs_batch_time = np.where(single, updated_res, 0)  # single-row markets: delivered with their row
    snap_mk = mk[snap]
    snap_ts = ts[snap]
    snap_batch = batch(np.where(single[snap_mk], obs_batch_time[snap_mk], snap_ts))

    # ---- polls (elections only): a current, noisy reading of the latent state --------------
    is_election = ev == EVENT_TYPES.index("election")
    poll = is_election[mk] & (k % STEPS_PER_DAY == STEPS_PER_DAY // 2) & (u_poll < POLL_KEEP)
    poll_sd = POLL_NOISE_SD * np.where(drifted, DRIFT_POLL_NOISE_FACTOR, 1.0)
    poll_avg_all = (0.5 + POLL_SHARE_PER_SLOPE * s_lat + poll_house[mk]
                    + np.where(drifted, DRIFT_POLL_HOUSE_EFFECT, 0.0) + poll_sd * z_poll)
    poll_mk = mk[poll]
    poll_ts = ts[poll]
    poll_avg = np.round(np.clip(poll_avg_all[poll], 0.01, 0.99), 4)
    poll_trend = _poll_trend(poll_mk, poll_ts, poll_avg)
    poll_batch = batch(np.where(single[poll_mk], obs_batch_time[poll_mk], poll_ts))

    # ---- markets table (versions) -----------------------------------------------------------
    ids = pa.array([f"{PLATFORMS[p]}-{cfg.seed}-{first + i:07d}" for i, p in enumerate(pf.tolist())])
    questions = _questions(ev, first_sched, q_draws)  # worded at creation, with the first schedule
    idx_create = np.flatnonzero(~single)
    idx_corr = np.flatnonzero(corr_sent)
    idx_res = np.flatnonzero(resolved)
    v_mk = np.concatenate([idx_create, idx_corr, idx_res])
    v_upd = np.concatenate([created[idx_create], corr_at[idx_corr], updated_res[idx_res]])
    v_sched = np.concatenate([first_sched[idx_create], res_date[idx_corr], res_date[idx_res]])
    v_final = np.concatenate([np.zeros(len(idx_create) + len(idx_corr), bool), np.ones(len(idx_res), bool)])
    order = np.lexsort((v_upd, v_mk))
    v_mk, v_upd, v_sched, v_final = v_mk[order], v_upd[order], v_sched[order], v_final[order]
    markets = pa.Table.from_arrays([
        ids.take(pa.array(v_mk)),
        questions.take(pa.array(v_mk)),
        _EVENT_TYPE_NAMES.take(pa.array(ev[v_mk])),
        _PLATFORM_NAMES.take(pa.array(pf[v_mk])),
        _ts(created[v_mk]),
        _ts(v_sched),
        _ts(resolved_at[v_mk], null=~v_final),
        pa.array(outcome[v_mk], pa.int8(), mask=~v_final),
        _ts(v_upd),
    ], schema=MARKETS_SCHEMA)

    snap_ids = ids.take(pa.array(snap_mk))
    snapshots = pa.Table.from_arrays(
        [snap_ids, _ts(snap_ts), pa.array(price[snap]), pa.array(volume[snap])], schema=SNAPSHOTS_SCHEMA)
    truth = pa.Table.from_arrays([snap_ids, _ts(snap_ts), pa.array(p_true[snap])], schema=TRUTH_SCHEMA)
    polls = pa.Table.from_arrays(
        [ids.take(pa.array(poll_mk)), _ts(poll_ts), pa.array(poll_avg), pa.array(poll_trend),
         pa.array(n_polls_all[poll].astype(np.int64))], schema=POLLS_SCHEMA)

    # ---- scores over learning examples ------------------------------------------------------
    example = resolved[snap_mk] & (snap_ts < resolved_at[snap_mk])
    y = outcome[snap_mk][example].astype(np.float64)
    p_ex = p_true[snap][example]
    return ChunkTables(
        markets=markets, price_snapshots=snapshots, polls=polls, truth=truth,
        markets_batch=batch(v_upd), price_snapshots_batch=snap_batch, polls_batch=poll_batch,
        n_open=int((~resolved).sum()), n_single_row=int(single.sum()), n_examples=int(example.sum()),
        brier_market_sum=float(((price[snap][example] - y) ** 2).sum()),
        brier_truth_sum=float((p_ex * (1.0 - p_ex)).sum()),
    )


def _poll_trend(mk: np.ndarray, ts: np.ndarray, avg: np.ndarray) -> np.ndarray:
    """poll_average minus the latest reading at least 7 days earlier (else the market's first)."""
    if len(mk) == 0:
        return np.zeros(0)
    rel = ts - ts.min() + POLL_WINDOW + 1  # positive, and still positive 7 days earlier
    key = mk.astype(np.int64) * (1 << 40) + rel
    ref = np.searchsorted(key, key - POLL_WINDOW, side="right") - 1
    first_of_market = np.searchsorted(mk, mk, side="left")
    ref = np.maximum(ref, first_of_market)
    return np.round(avg - avg[ref], 4)


_NAMES = ["Alvarez", "Brooks", "Chen", "Dubois", "Eriksen", "Fontaine", "Garcia", "Haddad", "Ito", "Jensen",
          "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi", "Silva",
          "Tanaka"]
_OFFICES = ["mayoral", "gubernatorial", "senate", "presidential", "parliamentary", "city council"]
_REGIONS = ["Ohio", "Bavaria", "Ontario", "Lombardy", "Queensland", "Catalonia", "Texas", "Kyoto", "Gauteng"]
_TEAMS = ["Falcons", "Rovers", "United", "Tigers", "Comets", "Mariners", "Wolves", "Royals", "Giants",
          "Sharks"]
_INDICATORS = ["CPI inflation", "unemployment", "GDP growth", "core PCE", "retail sales growth"]
_COINS = ["BTC", "ETH", "SOL", "DOGE", "ADA", "XRP"]
_CITIES = ["Paris, France", "Lagos", "Seattle", "Mumbai", "Buenos Aires", "Oslo", "Sydney"]
_MISSIONS = ["the lunar lander", "the Mars sample return", "the new space telescope", "the fusion test shot",
             "the phase-3 vaccine trial readout", "the quantum error-correction milestone"]
_OTHER = ["the film", "the album", "the app", "the bill", "the merger", "the strike"]


def _questions(ev: np.ndarray, res_date: np.ndarray, draws: np.ndarray) -> pa.Array:
    """Readable question text per market (a Python loop over markets, never over snapshots)."""
    days = np.datetime_as_string(res_date.astype("datetime64[s]"), unit="D")
    out = []
    for e, d, (a, b, c) in zip(ev.tolist(), days.tolist(), draws.tolist()):
        kind = EVENT_TYPES[e]
        if kind == "election":
            q = (f"Will {_NAMES[a % 20]} win the {d[:4]} {_REGIONS[b % 9]} {_OFFICES[c % 6]} election?")
        elif kind == "sports":
            q = f"Will the {_TEAMS[a % 10]} beat the {_TEAMS[(a + 1 + b % 9) % 10]} on {d}?"
        elif kind == "economics":
            q = f"Will {_INDICATORS[a % 5]} reported by {d} be above {1 + (b % 40) / 10:.1f}%?"
        elif kind == "crypto":
            q = f"Will {_COINS[a % 6]} close above ${1000 + (b % 90) * 1000:,} on {d}?"
        elif kind == "weather":
            q = f"Will {_CITIES[a % 7]} record more than {5 + b % 30} mm of rain on {d}?"
        elif kind == "science":
            q = f"Will {_MISSIONS[a % 6]} succeed before {d}?"
        else:
            q = f"Will \"{_OTHER[a % 6]}\" #{b % 1000} happen by {d}?"
        out.append(q)
    return pa.array(out, pa.string())

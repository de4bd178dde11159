"""Simulated prediction markets, written in the exact raw data contract format.

``generate(cfg, out)`` writes ``OUT/batch-001/ … OUT/batch-K/`` (each a contract batch with
``markets``, ``price_snapshots`` and, where there are any, ``polls``) and ``OUT/truth.parquet``
(market_id, ts, true_probability) beside the batches, never inside them.

The world (see :mod:`ingestion.sim_world` for the numbers)
----------------------------------------------------------
* Every market has a latent state ``S`` that is a Gaussian random walk whose remaining variance
  shrinks linearly to a small floor as resolution nears; the outcome is ``1{S_final > 0}``.
  The true probability at any time is therefore exactly ``Phi(S_t / sqrt(remaining variance))``:
  a calibrated martingale, so ``mean(p(1-p))`` over truth rows is the best achievable Brier.
* Event types (election, sports, economics, crypto, weather, science, other) set lifetimes, base
  rates and a sentiment bias in prices. Only elections have polls: a noisy, current reading of
  ``S`` (vote share around 0.5), so polls carry information the lagging price does not.
* Platforms (polymarket, kalshi, predictit, manifold) differ in liquidity (volume scale), price
  lag (the price reflects the truth of 12 h to 3 days earlier), price noise (larger on thin
  markets), tick size, a slope on the truth (price logit = beta * truth logit: beta < 1, the
  favourite-longshot bias, on kalshi, predictit and manifold; beta > 1, overconfidence, on
  polymarket) and a yes-bias intercept. The market price is thus an imperfect forecast a model using
  platform, event type, rolling price statistics, polls and time to resolution can beat.
* ``volume_24h`` rises toward resolution. Snapshots are daily at a per-market hour and every
  6 hours during the last 3 days before the (final) resolution_date; polls on 85 % of days,
  12 h after the snapshot hour. ``truth.parquet`` has one row per snapshot.
* Lifecycles: created uniformly over the period; scheduled resolution after an event-type
  dependent lifetime; resolved a few hours after it. About 20 % of markets get a version that
  corrects ``resolution_date`` mid-life; about 10 % of resolved markets are sent once, after
  they resolved (a single row). Markets whose resolution version would be written after the end
  of the period stay open (no resolution version, resolved_at/outcome null).

Time period and batches
-----------------------
Timestamps lie in ``[start 00:00 UTC, end 00:00 UTC)``: nothing is at or after ``end``. The
period is cut into ``n_batches`` equal slices by delivery time: a market version goes to the
slice of its ``updated_at``, a snapshot/poll to the slice of its ``ts`` – except for markets
sent only once after resolution, whose observations all go to the batch of that single row
(the contract wants a snapshot's market in the same or an earlier batch). A slice with no rows
at all writes no directory (an empty table or batch would be refused by the contract), and a
batch without polls has no polls file.

Drift (``drift_start``)
-----------------------
From ``drift_start`` 00:00 UTC on, for observations with ``ts >= drift_start`` only:

* prices: every platform's yes-bias intercept rises by ``DRIFT_PRICE_INTERCEPT`` (+0.4 logit),
  the favourite-longshot beta is multiplied by ``DRIFT_PRICE_BETA_FACTOR`` (0.75) and the price
  lag doubles – the price–truth relationship changes;
* ``volume_24h`` is multiplied by ``DRIFT_VOLUME_FACTOR`` (3);
* polls get ``DRIFT_POLL_NOISE_FACTOR`` (3x) noise and a ``DRIFT_POLL_HOUSE_EFFECT`` (+0.02) bias.

Markets, truth and everything before ``drift_start`` are identical to the run without drift
(same random draws; drift only transforms them), which the tests check.

Determinism and scale
---------------------
Markets are simulated in fixed-size chunks, each with its own ``numpy`` generator seeded from
``SeedSequence(seed, spawn_key=(chunk,))``; the same arguments give byte-identical files.
Each chunk is vectorised over its snapshots and appended to one ParquetWriter (or CSV writer)
per (batch, table), so memory stays bounded by the chunk size, not the number of markets.
Files are written under ``OUT/.generating/`` and moved into place when complete.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingestion.sim_world import (
    DRIFT_POLL_HOUSE_EFFECT,
    DRIFT_POLL_NOISE_FACTOR,
    DRIFT_PRICE_BETA_FACTOR,
    DRIFT_PRICE_INTERCEPT,
    DRIFT_VOLUME_FACTOR,
    ChunkTables,
    simulate_chunk,
)

__all__ = [
    "SimulationConfig", "SimulationSummary", "generate", "MARKETS_PER_CHUNK",
    "DRIFT_POLL_HOUSE_EFFECT", "DRIFT_POLL_NOISE_FACTOR", "DRIFT_PRICE_BETA_FACTOR",
    "DRIFT_PRICE_INTERCEPT", "DRIFT_VOLUME_FACTOR",
]

#: Markets simulated per chunk. Part of the output definition (it fixes the RNG streams):
#: changing it changes the data, so it is a constant, not an option.
MARKETS_PER_CHUNK = 2000
TABLES = ("markets", "price_snapshots", "polls")
TRUTH_FILE = "truth.parquet"
_STAGING = ".generating"
_EARLIEST = date(2000, 1, 1)  # the contract refuses timestamps before this


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. ``end`` is exclusive: all timestamps are before ``end`` 00:00 UTC."""

    n_markets: int
    start: date
    end: date
    seed: int = 0
    n_batches: int = 1
    fmt: str = "parquet"
    drift_start: date | None = None

    def __post_init__(self) -> None:
        if self.n_markets < 1:
            raise ValueError(f"n_markets must be at least 1, got {self.n_markets}")
        if self.n_batches < 1:
            raise ValueError(f"n_batches must be at least 1, got {self.n_batches}")
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        if self.start < _EARLIEST:
            raise ValueError(f"start ({self.start}) is before {_EARLIEST}, which the data contract refuses")
        if self.fmt not in ("parquet", "csv"):
            raise ValueError(f"fmt must be 'parquet' or 'csv', got {self.fmt!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")

    @property
    def start_s(self) -> int:
        """Period start, epoch seconds (UTC midnight)."""
        return _epoch_s(self.start)

    @property
    def end_s(self) -> int:
        """Period end (exclusive), epoch seconds (UTC midnight)."""
        return _epoch_s(self.end)

    @property
    def drift_s(self) -> int | None:
        return None if self.drift_start is None else _epoch_s(self.drift_start)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_markets // MARKETS_PER_CHUNK)


@dataclass
class SimulationSummary:
    """Counts and scores of one generated data set; ``to_text()`` is what the CLI prints."""

    out: Path
    n_markets: int = 0
    n_market_versions: int = 0
    n_snapshots: int = 0
    n_polls: int = 0
    n_truth: int = 0
    n_open_markets: int = 0
    n_single_row_markets: int = 0
    batches: list[str] = field(default_factory=list)
    empty_batches: list[str] = field(default_factory=list)
    rows_per_batch: dict[str, int] = field(default_factory=dict)
    # Brier scores over learning examples (snapshots of resolved markets with ts < resolved_at)
    n_examples: int = 0
    brier_market_sum: float = 0.0
    brier_truth_sum: float = 0.0
    seconds: float = 0.0

    @property
    def brier_market(self) -> float:
        return self.brier_market_sum / self.n_examples if self.n_examples else float("nan")

    @property
    def brier_truth(self) -> float:
        """Best achievable Brier: mean p(1-p) of the true probability."""
        return self.brier_truth_sum / self.n_examples if self.n_examples else float("nan")

    def to_text(self) -> str:
        lines = [
            f"wrote {len(self.batches)} batch(es) and {TRUTH_FILE} to {self.out}",
            f"  markets: {self.n_markets} ({self.n_market_versions} versions, "
            f"{self.n_open_markets} open at end, {self.n_single_row_markets} sent once after resolution)",
            f"  price_snapshots: {self.n_snapshots}   polls: {self.n_polls}   truth rows: {self.n_truth}",
            f"  learning examples: {self.n_examples}   Brier market price: {self.brier_market:.4f}   "
            f"Brier truth (best achievable): {self.brier_truth:.4f}",
            f"  {self.seconds:.1f} s",
        ]
        if self.empty_batches:
            lines.append(f"  slices with no rows (no directory written): {', '.join(self.empty_batches)}")
        return "\n".join(lines)


def generate(cfg: SimulationConfig, out: Path, progress: bool = True) -> SimulationSummary:
    """Simulate ``cfg`` and write its batches and truth under ``out`` (must be absent or empty)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"output directory {out} exists and is not empty; refusing to mix two data sets")
    staging = out / _STAGING
    staging.mkdir(parents=True)
    summary = SimulationSummary(out=out, n_markets=cfg.n_markets)
    width = max(3, len(str(cfg.n_batches)))
    batch_names = [f"batch-{i + 1:0{width}d}" for i in range(cfg.n_batches)]
    sinks = _Sinks(staging, batch_names, cfg.fmt)
    try:
        with tqdm(total=cfg.n_markets, unit="market", desc="simulating", disable=not progress,
                  file=None, dynamic_ncols=True) as bar:
            for chunk in range(cfg.n_chunks):
                first = chunk * MARKETS_PER_CHUNK
                n = min(MARKETS_PER_CHUNK, cfg.n_markets - first)
                tables = simulate_chunk(cfg, chunk, first, n)
                _account(summary, tables)
                for name in TABLES:
                    sinks.write(name, getattr(tables, name), tables.batch_of(name))
                sinks.write_truth(tables.truth)
                bar.update(n)
        sinks.close()
    except BaseException:
        sinks.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name in batch_names:
        if (staging / name).exists():
            (staging / name).rename(out / name)
            summary.batches.append(name)
        else:
            summary.empty_batches.append(name)
    summary.rows_per_batch = sinks.rows_per_batch
    (staging / TRUTH_FILE).rename(out / TRUTH_FILE)
    staging.rmdir()
    summary.seconds = time.perf_counter() - t0
    return summary


def _account(summary: SimulationSummary, t: ChunkTables) -> None:
    summary.n_market_versions += t.markets.num_rows
    summary.n_snapshots += t.price_snapshots.num_rows
    summary.n_polls += t.polls.num_rows
    summary.n_truth += t.truth.num_rows
    summary.n_open_markets += t.n_open
    summary.n_single_row_markets += t.n_single_row
    summary.n_examples += t.n_examples
    summary.brier_market_sum += t.brier_market_sum
    summary.brier_truth_sum += t.brier_truth_sum


def _epoch_s(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())


def _for_csv(table: pa.Table) -> pa.Table:
    """Timestamps as ISO-8601 with ``Z`` (whole seconds; the simulator never uses fractions)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type):
            as_s = table.column(i).cast(pa.timestamp("s", tz="UTC"))
            table = table.set_column(i, f.name, pc.strftime(as_s, format="%Y-%m-%dT%H:%M:%SZ"))
    return table


class _Sinks:
    """One lazily opened writer per (batch, table), plus the truth writer."""

    def __init__(self, root: Path, batch_names: list[str], fmt: str) -> None:
        self.root, self.batch_names, self.fmt = root, batch_names, fmt
        self.writers: dict[tuple[int, str], pq.ParquetWriter | pacsv.CSVWriter] = {}
        self.truth: pq.ParquetWriter | None = None
        self.rows_per_batch: dict[str, int] = {}

    def write(self, name: str, table: pa.Table, batch: np.ndarray) -> None:
        if table.num_rows == 0:
            return
        order = np.argsort(batch, kind="stable")
        sorted_batch = batch[order]
        table = table.take(pa.array(order))
        bounds = np.flatnonzero(np.diff(sorted_batch)) + 1
        starts = np.concatenate(([0], bounds))
        stops = np.concatenate((bounds, [len(sorted_batch)]))
        for lo, hi in zip(starts.tolist(), stops.tolist()):
            b = int(sorted_batch[lo])
            part = table.slice(lo, hi - lo)
            self._writer(b, name, table.schema).write_table(_for_csv(part) if self.fmt == "csv" else part)
            key = self.batch_names[b]
            self.rows_per_batch[key] = self.rows_per_batch.get(key, 0) + (hi - lo)

    def _writer(self, b: int, name: str, schema: pa.Schema) -> pq.ParquetWriter | pacsv.CSVWriter:
        w = self.writers.get((b, name))
        if w is None:
            d = self.root / self.batch_names[b]
            d.mkdir(exist_ok=True)
            if self.fmt == "parquet":
                w = pq.ParquetWriter(d / f"{name}.parquet", schema)
            else:
                csv_schema = _for_csv(schema.empty_table()).schema
                w = pacsv.CSVWriter(d / f"{name}.csv", csv_schema,
                                    write_options=pacsv.WriteOptions(quoting_style="needed"))
            self.writers[(b, name)] = w
        return w

    def write_truth(self, table: pa.Table) -> None:
        if self.truth is None:
            self.truth = pq.ParquetWriter(self.root / TRUTH_FILE, table.schema)
        self.truth.write_table(table)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        if self.truth is not None:
            self.truth.close()

    def abort(self) -> None:
        for w in list(self.writers.values()) + ([self.truth] if self.truth else []):
            try:
                w.close()
            except Exception:  # noqa: BLE001 - best effort while already failing
                pass

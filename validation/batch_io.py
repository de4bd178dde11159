"""Read a Parquet batch directory for `python -m validation validate`, typed as ingestion types it.

The gate gets what `python -m ingestion ingest` would hand it: each table read and typed by
ingestion's own reader (``ingestion.reading.read_table``: whole-number doubles become integers,
aware timestamps are converted to UTC, ...), unknown event types mapped to ``other`` by
ingestion's contract step, then ``ingestion.ingest.gate_frames``. What ingestion's reader
refuses (a value that cannot be typed, a naive or out-of-range timestamp, a missing column) is a
refusal here too, reported like the gate's own; the gate does not run on such a batch.
CSV batches are for ``python -m ingestion ingest`` (which calls the same gate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from validation.suites import ERROR, TABLES

# What the gate's markets suite holds `outcome` in (as ingestion hands it over).
OUTCOME_RANGE = (-128, 127)


class BatchReadError(ValueError):
    """The directory cannot be validated at all (no Parquet table, a CSV batch)."""


@dataclass
class TypedBatch:
    """The gate's frames, or the refusals that keep the batch from reaching the gate."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    refusals: list[Any] = field(default_factory=list)  # ingestion.contract.Violation
    warnings: list[str] = field(default_factory=list)


def read_parquet_batch(batch_dir: Path, *, assume_utc: bool = False,
                       now: pd.Timestamp | None = None) -> TypedBatch:
    """Type the batch's Parquet tables as ingestion does (``now``: the future-timestamp rule's reference)."""
    from ingestion.contract import Violation, check_rows, examples_of
    from ingestion.ingest import gate_frames
    from ingestion.reading import extra_columns_warning, read_table

    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now).tz_convert("UTC")
    batch = TypedBatch()
    typed = {}
    for table in TABLES:
        parquet, csv = batch_dir / f"{table}.parquet", batch_dir / f"{table}.csv"
        if parquet.is_file():
            t, violations = read_table(parquet, table, assume_utc, now.floor("us"))
            batch.refusals.extend(violations)
            if t is not None:
                typed[table] = t
                extra = extra_columns_warning(t)
                if extra:
                    batch.warnings.append(extra)
        elif csv.is_file():
            raise BatchReadError(f"{csv}: CSV is typed by ingestion; run `python -m ingestion ingest {batch_dir}` "
                                 "(it calls this gate) or convert the batch to Parquet")
    if not typed and not batch.refusals:
        raise BatchReadError(f"{batch_dir}: no {', '.join(t + '.parquet' for t in TABLES)} found")
    if batch.refusals:
        return batch
    if "markets" in typed:
        markets = typed["markets"]
        outcome = markets.typed["outcome"]
        outside = (outcome.notna() & ~outcome.between(*OUTCOME_RANGE)).to_numpy(dtype=bool)
        if outside.any():  # ingestion refuses these (out_of_range) before its gate, which holds outcome as Int8
            batch.refusals.append(Violation(markets.file, "markets", "out_of_range", "outcome", int(outside.sum()),
                                            "outcome must be a finite number in [0, 1]",
                                            examples_of(markets.raw, outside)))
            return batch
        # Ingestion's contract step maps unknown lowercase event types to `other` (with a warning) before
        # its gate; its refusals are rules of the gate too, which reports them (with Data Docs).
        _, warnings = check_rows(markets)
        batch.warnings.extend(warnings)
    batch.frames = gate_frames(typed)
    return batch


def refusal_issues(refusals: list[Any]) -> list[dict[str, Any]]:
    """Ingestion's refusals as gate failures (``GateResult.failures`` entries), for one report."""
    return [{"table": v.table, "expectation": f"ingestion:{v.rule}", "column": v.column, "rule": v.detail,
             "severity": ERROR, "unexpected_count": v.n_rows or None, "examples": v.examples,
             "observed_value": None, "bounds": None, "docs_page": None, "file": v.file} for v in refusals]

"""Ingest one raw batch: read, type, check every contract rule, gate, and publish atomically or quarantine.

Flow of :func:`ingest_batch`, all under the offline store's lock file:

1. recover batches an interrupted ingest left in ``_staging/``;
2. find the table files and type them (:mod:`ingestion.reading`);
3. compute ``batch_id`` from the canonical typed content; an already committed id is a no-op;
4. single-table rules, then rules against the published store (unknown market, lifetime from the
   market's current version, repeated keys identical -> skipped / different -> refused);
5. the validation gate (``validation.gate.run_batch_checkpoint``, Great Expectations) on the
   typed frames of the whole batch; a failing expectation refuses like a contract violation;
6. build the store rows (markets, market_info, price_features with rolling features and
   corrections, poll_features) and publish them (:mod:`ingestion.publish`).

Any violation in 2-5 refuses the whole batch: nothing is published and the directory is copied
to quarantine with ``_reason.json``.
"""

from __future__ import annotations

import hashlib
from warnings import catch_warnings, simplefilter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from config.settings import Settings, get_settings
from ingestion.contract import (
    KEYS, SCHEMAS, TypedTable, Violation, check_published_within_new_lifetime, check_references_and_lifetime,
    check_rows, column_names, current_versions, split_repeats,
)
from ingestion.publish import publish, quarantine, recover, store_lock
from ingestion.reading import discover, extra_columns_warning, read_table
from ingestion.rolling import PRICE_FEATURES, changed_rows, compute_price_features
from ingestion.store import committed_batches, is_committed, latest_rows, read_published

OBSERVATION_STORE_TABLE = {"price_snapshots": "price_features", "polls": "poll_features"}


@dataclass
class IngestResult:
    """What one ingest did. ``accepted`` is False exactly when the batch was quarantined."""

    batch_dir: Path
    accepted: bool
    batch_id: str | None
    no_op: bool = False
    input_rows: dict[str, int] = field(default_factory=dict)
    rows_published: dict[str, int] = field(default_factory=dict)
    duplicates_skipped: dict[str, int] = field(default_factory=dict)
    feature_corrections: int = 0
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    quarantine_path: Path | None = None
    gate_docs_page: str | None = None

    @property
    def error_message(self) -> str:
        return "\n".join(v.message() for v in self.violations)

    def to_text(self) -> str:
        lines: list[str] = []
        if self.accepted and self.no_op:
            lines.append(f"ACCEPTED (no change): batch {self.batch_id} from {self.batch_dir} "
                         "was already published")
        elif self.accepted:
            lines.append(f"ACCEPTED batch {self.batch_id} from {self.batch_dir}")
            lines.append("  input rows: " + _fmt_counts(self.input_rows))
            lines.append("  published rows: " + _fmt_counts(self.rows_published))
            if any(self.duplicates_skipped.values()):
                lines.append("  already published, skipped (identical): "
                             + _fmt_counts(self.duplicates_skipped))
            if self.feature_corrections:
                lines.append(f"  corrected price_features rows appended for earlier-published snapshots: "
                             f"{self.feature_corrections}")
        else:
            lines.append(f"REFUSED batch {self.batch_id or '(no id)'} from {self.batch_dir}: "
                         f"{len(self.violations)} violation(s); nothing was published")
            lines.extend(f"  - {v.message()}" for v in self.violations)
            lines.append(f"  quarantined at {self.quarantine_path} (see _reason.json)")
        if self.gate_docs_page:
            lines.append(f"  data docs: {self.gate_docs_page}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items()) or "none"


def _column_bytes(s: pd.Series, kind: str) -> bytes:
    null = s.isna().to_numpy()
    if kind == "string":
        # Null mask, then each value's UTF-8 length, then the bytes: no separator a value could contain
        # (a separator let "a<sep>b","c" and "a","b<sep>c" hash alike). Arrow's offsets are the lengths.
        import pyarrow as pa

        arr = pa.array(s.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[:len(arr) + 1]
        data = arr.buffers()[2]
        text = data.to_pybytes()[:int(offsets[-1])] if data is not None else b""
        return null.tobytes() + offsets.tobytes() + text
    if kind == "timestamp":  # microseconds since the epoch, UTC; NaT is int64 min (and flagged in `null`)
        values = s.astype("datetime64[us, UTC]").dt.tz_localize(None).to_numpy().view("int64")
    elif kind == "int":
        values = s.fillna(0).astype("int64").to_numpy()
    else:
        values = s.fillna(0.0).astype("float64").to_numpy()
    return null.tobytes() + np.ascontiguousarray(values).tobytes()


def compute_batch_id(tables: dict[str, TypedTable]) -> str:
    """First 16 hex chars of sha256 over (table name + rows sorted by all columns), typed by the contract.

    Computed from typed values, so the same content sent as CSV or Parquet gets the same id.
    """
    digest = hashlib.sha256()
    for table in sorted(tables):
        specs = SCHEMAS[table]
        frame = tables[table].typed[[c.name for c in specs]]
        key = list(KEYS[table])
        # Sorting by the key is enough when it is unique (every batch that can be accepted);
        # otherwise sort by every column so the id still ignores row order.
        order = key if not frame.duplicated(subset=key).any() else [c.name for c in specs]
        frame = frame.sort_values(order, kind="mergesort", na_position="last")
        digest.update(f"\x1e{table}\x1e{len(frame)}\x1e".encode())
        for spec in specs:
            digest.update(spec.name.encode() + b"\x1d" + _column_bytes(frame[spec.name], spec.kind))
    return digest.hexdigest()[:16]


def _now(now: datetime | pd.Timestamp | None) -> pd.Timestamp:
    ts = pd.Timestamp(now if now is not None else datetime.now(timezone.utc))
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("us")


def ingest_batch(batch_dir: Path | str, assume_utc: bool = False, settings: Settings | None = None,
                 now: datetime | pd.Timestamp | None = None, *, run_gate: bool = True,
                 lock_timeout_s: float = 600.0) -> IngestResult:
    """Validate ``batch_dir`` against the data contract and publish it atomically, or quarantine it whole.

    ``now`` is the ingest time (future-timestamp rule, ``ingested_at``); ``run_gate=False`` skips the
    Great Expectations gate (about 3 s per batch): only for tests of the contract logic itself.
    ``lock_timeout_s``: how long to wait for another ingest holding the store's lock before raising
    ``IngestLockTimeout`` (nothing read or changed then).
    """
    settings = settings or get_settings()
    batch_dir = Path(batch_dir)
    if not batch_dir.is_dir():
        raise NotADirectoryError(f"batch directory {batch_dir} does not exist or is not a directory")
    root = settings.offline_store_dir
    with store_lock(root, lock_timeout_s):
        # The ingest time is taken once the lock is held, not before waiting for it: a training set built
        # as of a moment while this ingest waited must not count it as published by then (settle(wait=True)).
        now_ts = _now(now)
        notes = recover(root)
        result = _ingest_locked(batch_dir, assume_utc, settings, now_ts, run_gate)
    result.warnings = notes + result.warnings
    return result


def _refuse(batch_dir: Path, batch_id: str | None, settings: Settings, now: pd.Timestamp,
            violations: list[Violation], warnings: list[str], input_rows: dict[str, int],
            gate: dict[str, Any] | None = None) -> IngestResult:
    label = batch_id or now.strftime("%Y%m%dT%H%M%S%fZ")
    reason = {
        "batch_dir": str(batch_dir.resolve()), "batch_id": batch_id, "refused_at": now.isoformat(),
        "violations": [v.to_dict() for v in violations], "warnings": warnings, "gate": gate,
        "message": "\n".join(v.message() for v in violations),
    }
    path = quarantine(batch_dir, settings.quarantine_dir, label, reason)
    return IngestResult(batch_dir, False, batch_id, input_rows=input_rows, warnings=warnings,
                        violations=violations, quarantine_path=path,
                        gate_docs_page=(gate or {}).get("docs_page"))


def _ingest_locked(batch_dir: Path, assume_utc: bool, settings: Settings, now: pd.Timestamp,
                   run_gate: bool) -> IngestResult:
    root = settings.offline_store_dir
    found = discover(batch_dir)
    warnings = list(found.warnings)
    violations = list(found.violations)
    typed: dict[str, TypedTable] = {}
    for table, path in found.tables.items():
        t, v = read_table(path, table, assume_utc, now)
        violations.extend(v)
        if t is not None:
            typed[table] = t
            extra = extra_columns_warning(t)
            if extra:
                warnings.append(extra)
    input_rows = {name: len(t.typed) for name, t in typed.items()}
    complete = bool(typed) and set(typed) == set(found.tables) and not found.violations
    batch_id = compute_batch_id(typed) if complete else None
    if batch_id and not violations and is_committed(root, batch_id):
        return IngestResult(batch_dir, True, batch_id, no_op=True, input_rows=input_rows, warnings=warnings)

    for t in typed.values():
        v, w = check_rows(t)
        violations.extend(v)
        warnings.extend(w)

    committed_records = committed_batches(root)
    markets_unusable = "markets" in found.tables and "markets" not in typed
    state = _check_against_store(root, typed, list(committed_records), markets_unusable)
    violations.extend(state.violations)
    if violations:
        return _refuse(batch_dir, batch_id, settings, now, violations, warnings, input_rows)

    assert batch_id is not None  # complete is implied by the absence of violations
    gate_page = None
    if run_gate:
        gate = _run_gate(typed, batch_id, state.published_markets, settings, now)
        gate_page = gate.docs_page
        if not gate.success:
            return _refuse(batch_dir, batch_id, settings, now, _gate_violations(gate, typed), warnings,
                           input_rows, gate=gate.to_dict())
        warnings.extend(_gate_warning(w) for w in gate.warnings)

    # Strictly after every published batch, even if the clock stepped back: Feast resolves equal
    # event timestamps by the newest created timestamp, so corrections must sort last.
    last = max((pd.Timestamp(r["ingested_at"]) for r in committed_records.values()), default=None)
    ingested_at = now if last is None or now > last else last + pd.Timedelta(microseconds=1)
    frames, corrections = build_store_frames(state.new_markets, state.all_versions,
                                             state.published_obs["price_snapshots"],
                                             state.new_obs.get("price_snapshots"), state.new_obs.get("polls"),
                                             ingested_at, batch_id)
    rows = {name: len(frame) for name, frame in frames.items()}
    record = {"batch_id": batch_id, "ingested_at": ingested_at.isoformat(),
              "source_dir": str(batch_dir.resolve()),
              "input_rows": input_rows, "rows": rows, "duplicates_skipped": state.skipped,
              "feature_corrections": corrections, "warnings": warnings}
    files = publish(root, batch_id, frames, record)
    return IngestResult(batch_dir, True, batch_id, input_rows=input_rows, rows_published=rows,
                        duplicates_skipped=state.skipped, feature_corrections=corrections, files=files,
                        warnings=warnings, gate_docs_page=gate_page)


@dataclass
class _StoreState:
    """This batch seen against the published store: what is new, and what conflicts."""

    published_markets: pd.DataFrame
    new_markets: pd.DataFrame
    all_versions: pd.DataFrame
    published_obs: dict[str, pd.DataFrame]
    new_obs: dict[str, pd.DataFrame]
    skipped: dict[str, int]
    violations: list[Violation]


def _check_against_store(root: Path, typed: dict[str, TypedTable], committed: list[str],
                         markets_unusable: bool) -> _StoreState:
    """Cross-batch rules: repeats (skip identical / refuse changed), unknown market, lifetime.

    Lifetimes come from each market's current version over published versions and this batch's.
    If the markets file itself is unusable (already reported), observations are not checked
    against markets: every one of them would look unknown.
    """
    violations: list[Violation] = []
    market_ids = sorted({m for t in typed.values() for m in t.typed["market_id"].dropna().unique()})
    published_markets = read_published(root, "markets", market_ids, committed)
    published_markets["outcome"] = published_markets["outcome"].astype("Int8")
    markets_cols = column_names("markets")
    new_markets = typed["markets"].typed if "markets" in typed else pd.DataFrame(columns=markets_cols)
    skipped: dict[str, int] = {}
    if "markets" in typed:
        new_markets, skipped["markets"], v = split_repeats(typed["markets"], published_markets)
        violations.extend(v)
    parts = [f[markets_cols] for f in (published_markets, new_markets) if not f.empty]
    with catch_warnings():
        # Same dtypes on both sides, so pandas' all-NA-column deprecation cannot change the result.
        simplefilter("ignore", FutureWarning)
        all_versions = pd.concat(parts, ignore_index=True) if len(parts) > 1 else (
            parts[0].reset_index(drop=True) if parts else new_markets[markets_cols])
    all_versions = all_versions[all_versions["market_id"].notna() & all_versions["updated_at"].notna()]
    lifetimes = current_versions(all_versions)[["created_at", "resolved_at"]]

    published_obs: dict[str, pd.DataFrame] = {}
    new_obs: dict[str, pd.DataFrame] = {}
    for table, store_table in OBSERVATION_STORE_TABLE.items():
        published_obs[table] = latest_rows(read_published(root, store_table, market_ids, committed),
                                           list(KEYS[table]))
        if table in typed:
            if not markets_unusable:
                violations.extend(check_references_and_lifetime(typed[table], lifetimes))
            new_obs[table], skipped[table], v = split_repeats(typed[table], published_obs[table])
            violations.extend(v)

    if "markets" in typed and not published_markets.empty and not new_markets.empty:
        # A new current version (e.g. resolved earlier than thought) must not strand published observations.
        newest_published = published_markets.groupby("market_id")["updated_at"].max()
        newest_new = new_markets.groupby("market_id")["updated_at"].max()
        common = newest_new.index.intersection(newest_published.index)
        changed = common[(newest_new[common] > newest_published[common]).to_numpy()]
        for table in OBSERVATION_STORE_TABLE:
            pub = published_obs[table]
            violations.extend(check_published_within_new_lifetime(
                typed["markets"].file, pub[pub["market_id"].isin(changed)], table, lifetimes))
    return _StoreState(published_markets, new_markets, all_versions, published_obs, new_obs, skipped,
                       violations)


def gate_frames(typed: dict[str, TypedTable]) -> dict[str, pd.DataFrame]:
    """The batch's typed, contract-checked frames as the gate expects them (UTC, no nullable n_polls)."""
    frames = {name: t.typed[column_names(name)].copy() for name, t in typed.items()}
    if "polls" in frames:
        frames["polls"]["n_polls"] = frames["polls"]["n_polls"].astype("int64")  # no nulls after the checks
    if "markets" in frames:
        frames["markets"]["outcome"] = frames["markets"]["outcome"].astype("Int8")
    return frames


def _run_gate(typed: dict[str, TypedTable], batch_id: str, published_markets: pd.DataFrame,
              settings: Settings, now: pd.Timestamp) -> Any:
    from validation.gate import run_batch_checkpoint  # Great Expectations: heavy, imported on use

    lifetimes = published_markets[["market_id", "created_at", "resolved_at", "updated_at"]]
    # The gate's "not more than a day in the future" bound uses the ingest time, as the contract checks do.
    return run_batch_checkpoint(gate_frames(typed), batch_id, settings=settings, published_markets=lifetimes,
                                now=now.to_pydatetime())


def _gate_observation(issue: dict[str, Any]) -> str:
    """What the gate saw, against what it expected: "observed 3, expected between 1 and 2" (or "")."""
    from validation.gate import bounds_text

    parts = []
    if issue.get("observed_value") is not None:
        parts.append(f"observed {issue['observed_value']}")
    if issue.get("bounds"):
        parts.append(f"expected {bounds_text(issue['bounds'])}")
    return ", ".join(parts)


def _gate_column(issue: dict[str, Any]) -> str | None:
    """The contract column(s) an expectation is about (``_market_known`` is market_id, ...)."""
    from validation.frames import contract_columns

    return contract_columns(issue.get("column"))


def _gate_warning(issue: dict[str, Any]) -> str:
    column = _gate_column(issue)
    where = f"{issue['table']}.{column}" if column else issue["table"]
    seen = _gate_observation(issue)
    return (f"validation warning: {where}: {issue.get('rule')}" + (f" ({seen})" if seen else "")
            + (f" (Data Docs: {issue['docs_page']})" if issue.get("docs_page") else ""))


def _gate_violations(gate: Any, typed: dict[str, TypedTable]) -> list[Violation]:
    out = []
    for f in gate.failures:
        table = f.get("table")
        file = typed[table].file if table in typed else str(table)
        examples = [v if isinstance(v, dict) else {"value": v} for v in (f.get("examples") or [])[:3]]
        # A table-level expectation (row count, a mean) has no unexpected rows: it refuses the whole table.
        count = f.get("unexpected_count")
        n_rows = int(count) if count is not None else (len(typed[table].typed) if table in typed else 0)
        seen = _gate_observation(f)
        out.append(Violation(file, table, f"gate:{f.get('expectation')}", _gate_column(f), n_rows,
                             f"validation gate: {f.get('rule')}" + (f" ({seen})" if seen else "")
                             + f" (Data Docs: {f.get('docs_page') or gate.docs_page})",
                             examples))
    return out


def build_store_frames(new_markets: pd.DataFrame, all_versions: pd.DataFrame, published_prices: pd.DataFrame,
                       new_prices: pd.DataFrame | None, new_polls: pd.DataFrame | None,
                       ingested_at: pd.Timestamp, batch_id: str) -> tuple[dict[str, pd.DataFrame], int]:
    """The rows this batch adds to each store table, and how many of them are feature corrections."""
    def stamp(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.reset_index(drop=True)
        frame["ingested_at"] = pd.Series(ingested_at, index=frame.index).astype("datetime64[us, UTC]")
        frame["batch_id"] = batch_id
        return frame

    markets = stamp(new_markets[column_names("markets")].copy())
    markets["outcome"] = markets["outcome"].astype("Int8")

    info_cols = ["market_id", "event_ts", "question", "event_type", "platform", "created_at",
                 "resolution_date"]
    versions = new_markets.assign(event_ts=new_markets["updated_at"])[info_cols]
    # Creation row: the market's earliest known version, as of created_at. Only needed when that
    # earliest version is new in this batch (first delivery, or an older version arriving late).
    earliest = all_versions.sort_values(["market_id", "updated_at"], kind="mergesort").drop_duplicates(
        "market_id", keep="first")
    new_keys = pd.MultiIndex.from_frame(new_markets[["market_id", "updated_at"]])
    earliest = earliest[pd.MultiIndex.from_frame(earliest[["market_id", "updated_at"]]).isin(new_keys)]
    creation = earliest.assign(event_ts=earliest["created_at"])[info_cols]
    # A version row at the same event_ts says the same or newer, so it wins over the creation row.
    info = pd.concat([creation, versions], ignore_index=True).drop_duplicates(
        ["market_id", "event_ts"], keep="last")
    market_info = stamp(info.sort_values(["market_id", "event_ts"], kind="mergesort"))

    corrections = 0
    price_cols = ["market_id", "ts", "price", "volume_24h"]
    if new_prices is not None and not new_prices.empty:
        affected = new_prices["market_id"].unique()
        history = published_prices[published_prices["market_id"].isin(affected)]
        combined = pd.concat([history[price_cols], new_prices[price_cols]], ignore_index=True) \
            if not history.empty else new_prices[price_cols]
        featured = compute_price_features(combined)
        new_keys = pd.MultiIndex.from_frame(new_prices[["market_id", "ts"]])
        is_new = pd.MultiIndex.from_frame(featured[["market_id", "ts"]]).isin(new_keys)
        corrected = changed_rows(featured, history) & ~is_new
        corrections = int(corrected.sum())
        price_features = stamp(featured[is_new | corrected])
    else:
        price_features = stamp(pd.DataFrame({c: pd.Series(dtype=d) for c, d in [
            ("market_id", "object"), ("ts", "datetime64[us, UTC]"), ("price", "float64"),
            ("volume_24h", "float64"), *[(f, "float64") for f in PRICE_FEATURES]]}))

    poll_cols = column_names("polls")
    polls = new_polls[poll_cols] if new_polls is not None else pd.DataFrame(
        {c: pd.Series(dtype=d) for c, d in [("market_id", "object"), ("ts", "datetime64[us, UTC]"),
                                            ("poll_average", "float64"), ("poll_trend", "float64"),
                                            ("n_polls", "Int64")]})
    poll_features = stamp(polls.sort_values(["market_id", "ts"], kind="mergesort").copy())
    return {"markets": markets, "market_info": market_info, "price_features": price_features,
            "poll_features": poll_features}, corrections

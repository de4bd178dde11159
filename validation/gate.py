"""The validation gate: run the GX checkpoints on typed frames and say yes or no, and why.

- :func:`run_batch_checkpoint` — ingestion calls it after its contract checks; a failure
  quarantines the whole batch (docs/architecture.md, "Validation gate").
- :func:`run_training_set_checkpoint` — training calls it before fitting and refuses on failure.

Each table has one checkpoint (``<table>_gate``) running its ``<table>.contract`` suite; every run
updates Data Docs. An expectation's GX severity decides what its failure does: ``critical``
refuses, ``warning`` (the distribution checks) is only reported.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from config.settings import Settings, get_settings
from validation.frames import (
    market_lifetimes,
    markets_frame,
    observation_frame,
    read_published_lifetimes,
    training_frame,
)
from validation.suites import (
    ERROR,
    GX_SEVERITY,
    MAX_TIMESTAMP_PARAMETER,
    TABLES,
    TRAINING_SET,
    WARNING,
    Thresholds,
    max_timestamp,
)

# Longest run name used as a path segment (file systems allow 255 bytes per name; GX adds to it).
MAX_RUN_NAME = 100
# Batch order: markets first so snapshots/polls can be checked against it.
OBSERVATION_TABLES = ("price_snapshots", "polls")
# Copy-on-Write (pandas 3's default behaviour) while GX runs: every column metric filters the
# whole frame by that column's non-null mask (df[df[column].notnull()]), which without CoW
# deep-copies all rows even when nothing is null (~10 ms per 1M rows, a dozen times a run).
# GX only reads the frame; pandas options are process-wide, so this holds for the run's duration.
GX_RUN_PANDAS_OPTIONS = ("mode.copy_on_write", True)


@dataclass
class GateResult:
    """Verdict of a gate run. ``failures`` refuse; ``warnings`` are reported only."""

    success: bool
    failures: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    docs_page: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        lines = [f"validation {'passed' if self.success else 'FAILED'}"
                 f" ({len(self.failures)} failing, {len(self.warnings)} warning expectations)"]
        for kind, items in (("FAIL", self.failures), ("WARN", self.warnings)):
            for item in items:
                where = f"{item['table']}.{item['column']}" if item.get("column") else item["table"]
                count = item.get("unexpected_count")
                lines.append(f"  {kind} {item['expectation']} on {where}: {item['rule']}"
                             + (f" ({count} rows)" if count is not None else "")
                             + (f" examples={item['examples']}" if item.get("examples") else "")
                             + (f" observed={item['observed_value']}" if item.get("observed_value") is not None
                                else "")
                             + (f" expected {bounds_text(item['bounds'])}" if item.get("bounds") else ""))
        if self.docs_page:
            lines.append(f"  Data Docs: {self.docs_page}")
        return "\n".join(lines)


def bounds_text(bounds: dict[str, Any]) -> str:
    """``{"min_value": 1, "max_value": 2}`` as "between 1 and 2" (or "at least 1", "at most 2")."""
    low, high = bounds.get("min_value"), bounds.get("max_value")
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


class UnknownTable(ValueError):
    pass


def run_batch_checkpoint(tables: dict[str, pd.DataFrame], batch_id: str, *,
                         thresholds: Thresholds | None = None,
                         settings: Settings | None = None,
                         published_markets: pd.DataFrame | None = None,
                         now: dt.datetime | None = None) -> GateResult:
    """Validate a batch's typed tables ('markets', 'price_snapshots', 'polls'; any subset).

    Snapshots and polls are checked against the markets of this batch plus those already
    published in the offline store (read from ``settings.offline_store_dir`` unless
    ``published_markets`` — market_id, created_at, resolved_at, updated_at — is given).
    ``now`` (aware; default: the current time) is the validation time: timestamps more than
    one day after it are refused.
    """
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise UnknownTable(f"unknown table(s) {unknown}; expected a subset of {list(TABLES)}")
    if not tables:
        raise ValueError("run_batch_checkpoint needs at least one table")
    settings = settings or get_settings()
    frames: dict[str, pd.DataFrame] = {}
    if "markets" in tables:
        frames["markets"] = markets_frame(tables["markets"])
    observed = [t for t in OBSERVATION_TABLES if t in tables]
    if observed:
        # Always with the published versions too: even a market this batch carries may have a newer
        # (e.g. resolved) version in the store, which sets its lifetime.
        published = published_markets
        if published is None:
            published = read_published_lifetimes(settings.offline_store_dir)
        lifetimes = market_lifetimes(tables.get("markets"), published)
        for table in observed:
            frames[table] = observation_frame(tables[table], table, lifetimes)
    return _run(frames, run_name=f"batch-{batch_id}", thresholds=thresholds, settings=settings, now=now)


def run_training_set_checkpoint(df: pd.DataFrame, name: str, *,
                                thresholds: Thresholds | None = None,
                                settings: Settings | None = None,
                                now: dt.datetime | None = None) -> GateResult:
    """Validate a training set (market_id, ts, resolved_at, outcome, price features[, poll features])."""
    settings = settings or get_settings()
    return _run({TRAINING_SET: training_frame(df)}, run_name=f"training-{name}", thresholds=thresholds,
                settings=settings, now=now)


def expectation_parameters(thresholds: Thresholds | None, now: dt.datetime) -> dict[str, Any]:
    """Values of the suites' ``$PARAMETER`` placeholders for a validation at ``now``."""
    return {**(thresholds or Thresholds()).as_parameters(), MAX_TIMESTAMP_PARAMETER: max_timestamp(now)}


def _run(frames: dict[str, pd.DataFrame], run_name: str, thresholds: Thresholds | None,
         settings: Settings, now: dt.datetime | None = None) -> GateResult:
    from validation import speedups
    from validation.project import DOCS_SITE_NAME, get_project, import_gx

    gx = import_gx()
    project = get_project(settings)
    now = now or dt.datetime.now(dt.timezone.utc)
    thresholds = thresholds or Thresholds()
    parameters = expectation_parameters(thresholds, now)
    run_id = gx.RunIdentifier(run_name=run_name_for_docs(run_name), run_time=now)
    result = GateResult(success=True)
    # The page to look at: the first that refuses, else the first with a warning, else the first.
    first_failing_page: str | None = None
    first_warning_page: str | None = None
    first_page: str | None = None
    for table, frame in frames.items():
        # GX fingerprints the frame (a hash of every value) after its Python-level set-up:
        # start it now on the second core (validation/speedups.py; same fingerprint).
        speedups.prefetch_fingerprint(frame)
        try:
            with pd.option_context(*GX_RUN_PANDAS_OPTIONS):
                checkpoint_result = project.checkpoints[table].run(
                    batch_parameters={"dataframe": frame}, expectation_parameters=parameters, run_id=run_id)
        finally:
            speedups.discard_prefetched(frame)  # if GX did not take it (e.g. it raised first)
        for key, suite_result in checkpoint_result.run_results.items():
            page = _docs_page(project.context, key, DOCS_SITE_NAME)
            first_page = first_page or page
            issues = _failed_expectations(table, suite_result, frame, page)
            refusing = [i for i in issues if i["severity"] == ERROR]
            # Distribution checks (the warnings) say nothing about a handful of rows (the spread of
            # one price is undefined): below distribution_min_rows they are not reported.
            warned = [i for i in issues if i["severity"] != ERROR
                      and len(frame) >= thresholds.distribution_min_rows]
            result.failures.extend(refusing)
            result.warnings.extend(warned)
            if refusing and first_failing_page is None:
                first_failing_page = page
            if warned and first_warning_page is None:
                first_warning_page = page
    result.success = not result.failures
    result.docs_page = first_failing_page or first_warning_page or first_page
    return result


def run_name_for_docs(run_name: str) -> str:
    """The run name as a safe, short path segment of the stored result and its Data Docs page.

    A name that had to be changed (unsafe characters, longer than MAX_RUN_NAME) gets a digest of
    the original, so two different names never share (and overwrite) one page.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", run_name)
    if safe == run_name and len(safe) <= MAX_RUN_NAME:
        return safe
    digest = hashlib.sha256(run_name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe[:MAX_RUN_NAME - len(digest) - 1]}-{digest}"


def _docs_page(context: Any, key: Any, site_name: str) -> str | None:
    urls = context.get_docs_sites_urls(resource_identifier=key, site_names=[site_name], only_if_exists=False)
    for entry in urls:
        url = entry.get("site_url")
        if url:
            parsed = urlparse(url)
            return str(Path(unquote(parsed.path))) if parsed.scheme == "file" else url
    return None


def _severity(config: Any) -> str:
    """Our severity from GX's own field: only ``critical`` (GX's default) refuses."""
    gx_severity = getattr(config.severity, "value", config.severity) or GX_SEVERITY[ERROR]
    return ERROR if gx_severity == GX_SEVERITY[ERROR] else WARNING


def _exception_message(exception_info: Any) -> str | None:
    """The first raised exception's message (GX nests it per metric, or not, depending on where it failed)."""
    if not exception_info:
        return None
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    for info in infos:
        if isinstance(info, dict) and info.get("raised_exception"):
            return str(info.get("exception_message"))
    return None


def _failed_expectations(table: str, suite_result: Any, frame: pd.DataFrame, page: str | None
                         ) -> list[dict[str, Any]]:
    issues: list[dict[str, Any]] = []
    missing_columns = {r.expectation_config.kwargs["column"] for r in suite_result.results
                       if r.expectation_config.type == "expect_column_to_exist" and not r.success}
    mistyped_columns = {r.expectation_config.kwargs["column"] for r in suite_result.results
                        if r.expectation_config.type == "expect_column_type_to_be" and not r.success}
    for r in suite_result.results:
        if r.success:
            continue
        config = r.expectation_config
        kwargs = config.kwargs
        columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs] + \
            list(kwargs.get("column_list", []))
        exception = _exception_message(r.exception_info)
        # A missing column is reported once, by expect_column_to_exist, not by every check that
        # could not run without it (a missing key column also breaks the example-row lookup).
        if missing_columns and config.type != "expect_column_to_exist" and (
                exception is not None or set(columns) & missing_columns):
            continue
        # Likewise a wrongly typed column is reported by its type check, not by checks it broke.
        if exception is not None and set(columns) & mistyped_columns:
            continue
        details = r.result or {}
        bounds = {k: _jsonable(kwargs[k]) for k in ("min_value", "max_value") if kwargs.get(k) is not None}
        issue = {
            "table": table,
            "expectation": config.type,
            "column": ",".join(columns) or None,
            "rule": (config.meta or {}).get("rule", ""),
            "severity": _severity(config),
            "unexpected_count": details.get("unexpected_count"),
            "examples": _jsonable((details.get("partial_unexpected_index_list")
                                   or details.get("partial_unexpected_list") or [])[:5]),
            "observed_value": _jsonable(details.get("observed_value")),
            "bounds": bounds or None,
            "docs_page": page,
        }
        if exception is not None:
            issue["exception"] = exception
        issues.append(issue)
    return issues


def _jsonable(value: Any) -> Any:
    """Plain JSON types for reason files (timestamps as ISO strings, numpy scalars as Python)."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, float):  # also numpy.float64, a float subclass
        return None if value != value else float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, TypeError):
            pass
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)

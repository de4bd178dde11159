"""Materialization (offline -> online store) as library functions, in bounded time windows.

After writing, markets resolved by the end of the window are removed from the online store and
their resolution marker is written instead (features/resolved.py says why). The marker view is a
label view (tag role=label): eviction is its one writer, so it is not materialized here.

Feast's local engine loads a whole [start, end] window (Feast includes rows at `end`) of a view into memory before writing it,
so a large window is split into `chunk`-sized windows processed in time order. Online, the newest
row wins and, at the same event time, the newer correction, in Redis as in SQLite (re-running an
older window never puts older values back): features/online_corrections.py. Each window is recorded in the registry by Feast, which is what
`materialize_incremental` continues from.

Before reading, each function settles the offline store (``ingestion.publish.settle``): Feast's sources
glob every Parquet file, committed or not, so a batch whose publish crashed half-way is rolled forward
first instead of being materialized half.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from config.settings import Settings
from features.online_corrections import newest_row_wins
from features.resolved import evict_resolved, is_label_view
from features.store import OFFLINE_LOCK
from ingestion.publish import settle
from ingestion.store import EVENT_TS, committed_batches

if TYPE_CHECKING:
    from feast import FeatureStore

DEFAULT_CHUNK = timedelta(days=7)


class FeatureRepoNotApplied(ValueError):
    """The Feast registry has no feature views: the repo was never applied to it."""


@dataclass
class MaterializeReport:
    """What was materialized: per view, the windows written (start, end)."""

    windows: dict[str, list[tuple[datetime, datetime]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # view -> reason (e.g. no data published yet)
    evicted_resolved: list[str] = field(default_factory=list)  # resolved markets evicted (marker kept)
    recovered: list[str] = field(default_factory=list)  # interrupted publishes finished before reading

    def add(self, view: str, start: datetime, end: datetime) -> None:
        self.windows.setdefault(view, []).append((start, end))

    def summary(self) -> str:
        lines = [f"{view}: {len(w)} window(s) {w[0][0].isoformat()} -> {w[-1][1].isoformat()}"
                 for view, w in self.windows.items() if w]
        lines += [f"{view}: skipped, {reason}" for view, reason in self.skipped.items()]
        lines.append(f"resolved markets removed from the online store (resolution marker kept): "
                     f"{len(self.evicted_resolved)}")
        lines += [f"offline store: {note}" for note in self.recovered]
        return "\n".join(lines) or "nothing to materialize"


def parse_utc(value: str) -> datetime:
    """An ISO-8601 timestamp with an explicit offset or Z, as UTC; naive input is refused."""
    if len(value.strip()) <= 10 or value.strip()[10] not in "T t":
        # Python reads "2024-01-02Z" as a naive midnight (the offset of a bare date is dropped).
        raise ValueError(f"{value!r} needs a time and an offset, e.g. 2024-01-02T00:00:00Z")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from exc
    return _utc(value, moment)


def _utc(name: str, moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {moment!r}")
    return moment.astimezone(timezone.utc)


def split_window(start: datetime, end: datetime, chunk: timedelta) -> list[tuple[datetime, datetime]]:
    """[start, end) as consecutive windows of at most `chunk`."""
    if chunk <= timedelta(0):
        raise ValueError(f"chunk must be positive, got {chunk}")
    windows, cursor = [], start
    while cursor < end:
        windows.append((cursor, min(cursor + chunk, end)))
        cursor = windows[-1][1]
    return windows


def _views(store: "FeatureStore", views: Sequence[str] | None, report: MaterializeReport) -> list[str]:
    """The views to materialize (online, not label views); views whose source has no file yet are
    recorded as skipped."""
    from features.store import views_without_data

    online_views = [fv for fv in store.list_feature_views() if fv.online]
    if not online_views:
        raise FeatureRepoNotApplied(
            "the Feast registry (PM_FEAST_REGISTRY_URI) holds no feature views: run `python -m features apply` "
            "(or `feast apply` in feature_repo/) once before materializing")
    online = [fv.name for fv in online_views if not is_label_view(fv)]
    if views is not None:
        labels = sorted(set(views) & {fv.name for fv in online_views if is_label_view(fv)})
        if labels:
            raise ValueError(f"label view(s) {labels} are not materialized: eviction of resolved markets "
                             "writes them (features/resolved.py)")
        unknown = sorted(set(views) - set(online))
        if unknown:
            raise ValueError(f"unknown or offline-only feature view(s) {unknown}; materializable: {sorted(online)}")
        online = list(views)
    empty = views_without_data(store, online)
    for name, path in empty.items():
        report.skipped[name] = f"no published file matches {path}"
    return [name for name in online if name not in empty]


def _offline_roots(store: "FeatureStore", settings: Settings | None) -> list[Path]:
    """The offline store(s) the views' sources read: ``<root>/<table>/**/*.parquet`` (data_sources.py),
    plus ``settings.offline_store_dir`` if given. From the sources, because a caller passing only a
    FeatureStore may read another store than this process's settings name."""
    from feast import FileSource

    roots = [settings.offline_store_dir] if settings is not None else []
    for view in store.list_feature_views():
        source = view.batch_source
        if isinstance(source, FileSource) and source.path.endswith("/**/*.parquet"):
            roots.append(Path(source.path).parents[2])
    return list(dict.fromkeys(roots))


def _settle(store: "FeatureStore", settings: Settings | None, report: MaterializeReport) -> None:
    """Finish an interrupted publish before Feast reads: its glob has no commit filter."""
    for root in _offline_roots(store, settings):
        report.recovered += settle(root)


def _store(store: "FeatureStore | None", settings: Settings | None) -> "FeatureStore":
    if store is not None:
        return store
    from features.store import get_store

    return get_store(settings)


def materialize(
    start: datetime,
    end: datetime,
    views: Sequence[str] | None = None,
    *,
    chunk: timedelta = DEFAULT_CHUNK,
    settings: Settings | None = None,
    store: "FeatureStore | None" = None,
) -> MaterializeReport:
    """Materialize rows with event time in [start, end] of `views` (default: all online feature views
    except label views), then evict markets resolved by `end`, or by the latest end any view was
    materialized to if that is later (leaving their resolution marker)."""
    start, end = _utc("start", start), _utc("end", end)
    if start >= end:
        raise ValueError(f"start ({start}) must be before end ({end})")
    store = _store(store, settings)
    report = MaterializeReport()
    _settle(store, settings, report)
    names = _views(store, views, report)
    if not names:
        return report
    for window_start, window_end in split_window(start, end, chunk):
        with OFFLINE_LOCK, newest_row_wins(store):
            store.materialize(window_start, window_end, feature_views=names, disable_event_timestamp=False)
        for name in names:
            report.add(name, window_start, window_end)
    report.evicted_resolved = evict_resolved(store, _eviction_time(store, end))
    return report


def _as_utc(moment: datetime) -> datetime:
    """A registry or Parquet time as aware UTC (Feast and pyarrow may hand back naive UTC values)."""
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _eviction_time(store: "FeatureStore", end: datetime) -> datetime:
    """The time resolved markets are evicted as of: `end`, or the latest end any view was materialized to.

    A window older than the online store's state (a re-run after a late batch) rewrites rows of markets
    resolved since; evicting only those resolved by its own `end` would bring them back online.
    """
    latest = end
    for view in store.list_feature_views():
        seen = view.most_recent_end_time
        if seen is not None and not is_label_view(view):
            latest = max(latest, _as_utc(seen))
    return latest


def materialize_incremental(
    end: datetime,
    views: Sequence[str] | None = None,
    *,
    chunk: timedelta = DEFAULT_CHUNK,
    settings: Settings | None = None,
    store: "FeatureStore | None" = None,
) -> MaterializeReport:
    """Materialize each view from where its last materialization ended (or `end - ttl`) up to `end`.

    Same start rule as `feast materialize-incremental`, but in bounded windows. Then, as
    `materialize`, evicts markets resolved by `end` (leaving their resolution marker).
    """
    end = _utc("end", end)
    store = _store(store, settings)
    report = MaterializeReport()
    _settle(store, settings, report)
    _materialize_from_last_end(store, end, _views(store, views, report), chunk, {}, report)
    report.evicted_resolved = evict_resolved(store, _eviction_time(store, end))
    return report


def materialize_new_batches(
    end: datetime,
    views: Sequence[str] | None = None,
    *,
    chunk: timedelta = DEFAULT_CHUNK,
    settings: Settings | None = None,
    store: "FeatureStore | None" = None,
) -> MaterializeReport:
    """`materialize_incremental`, reaching back as far as the batches published since the last call go.

    A batch lands after its events happened, so its rows are older than where each view's last
    materialization ended, and incremental alone never reads them (the materialize DAG, triggered by
    that very batch, would leave it out of the online store). Here each view starts at the earliest
    event of the committed batches this function has not yet materialized for it, if that is earlier.
    Which batches are done, per view, is kept in ``<offline store>/_materialized_batches.json``,
    written after success.
    """
    from config.settings import get_settings

    end = _utc("end", end)
    settings = settings or get_settings()
    store = _store(store, settings)
    root = settings.offline_store_dir
    report = MaterializeReport()
    _settle(store, settings, report)  # before the commit records are read: a rolled-forward batch is new
    done = _materialized_batches(root)
    committed = committed_batches(root)
    names = _views(store, views, report)
    # Per view: a call for some views only leaves the others' new batches for a later call. A view
    # Feast never materialized (e.g. a recreated registry) counts every batch as new, whatever the file says.
    never = {name for name in names if store.get_feature_view(name).most_recent_end_time is None}
    new = {name: sorted(set(committed) - (set() if name in never else done.get(name, set()))) for name in names}
    earliest = {name: first for name in names
                if (first := _earliest_events(root, [committed[b] for b in new[name]]).get(name)) is not None}
    _materialize_from_last_end(store, end, names, chunk, earliest, report)
    report.evicted_resolved = evict_resolved(store, _eviction_time(store, end))
    _write_materialized_batches(root, {**done, **{name: done.get(name, set()) | set(new[name]) for name in names}})
    return report


def _materialize_from_last_end(store: "FeatureStore", end: datetime, names: list[str], chunk: timedelta,
                               earliest: dict[str, datetime], report: MaterializeReport) -> None:
    """Each view from its last end, or from `earliest[view]` if earlier, up to `end`. A view never
    materialized starts at `earliest[view]` if known (a new batch is read whatever its age, and a
    10-year TTL must not walk ten years of empty windows before it), else at `end - ttl`."""
    for name in names:
        view = store.get_feature_view(name)
        start = view.most_recent_end_time
        if start is None:
            if not view.ttl:
                raise ValueError(f"feature view {name} was never materialized and has no TTL: use materialize(start, end)")
            start = min(earliest[name], end) if name in earliest else _as_utc(end - view.ttl)
        else:
            start = _as_utc(start)
            if name in earliest:
                start = min(start, earliest[name])
        for window_start, window_end in split_window(start, end, chunk):
            with OFFLINE_LOCK, newest_row_wins(store):
                store.materialize(window_start, window_end, feature_views=[name])
            report.add(name, window_start, window_end)


MATERIALIZED_BATCHES_FILE = "_materialized_batches.json"


def _materialized_batches(root: Path) -> dict[str, set[str]]:
    """{feature view: ids of the committed batches materialize_new_batches has read for it}."""
    path = root / MATERIALIZED_BATCHES_FILE
    if not path.is_file():
        return {}
    return {view: set(ids) for view, ids in json.loads(path.read_text())["views"].items()}


def _write_materialized_batches(root: Path, done: dict[str, set[str]]) -> None:
    path = root / MATERIALIZED_BATCHES_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"views": {view: sorted(ids) for view, ids in sorted(done.items())}}, indent=0))
    os.replace(tmp, path)


def _earliest_events(root: Path, records: list[dict]) -> dict[str, datetime]:
    """{offline table (= feature view name): earliest event time} over the files of these commit records."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    earliest: dict[str, datetime] = {}
    for record in records:
        for file in record.get("files", []):
            table = file.split("/", 1)[0]
            column = EVENT_TS.get(table)
            if column is None or not (root / file).is_file():
                continue
            first = pc.min(pq.read_table(root / file, columns=[column]).column(column)).as_py()
            if first is not None:
                first = _as_utc(first)
                earliest[table] = min(earliest.get(table, first), first)
    return earliest

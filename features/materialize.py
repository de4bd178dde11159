"""Materialization (offline -> online store) as library functions, in bounded time windows.

After writing, markets resolved by the end of the window are removed from the online store and
their resolution marker is written instead (features/resolved.py says why). The marker view is a
label view (tag role=label): eviction is its one writer, so it is not materialized here.

Feast's local engine loads a whole [start, end) window of a view into memory before writing it,
so a large window is split into `chunk`-sized windows processed in time order (newer values
overwrite older ones online). Each window is recorded in the registry by Feast, which is what
`materialize_incremental` continues from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Sequence

from config.settings import Settings
from features.resolved import evict_resolved, is_label_view
from features.store import OFFLINE_LOCK

if TYPE_CHECKING:
    from feast import FeatureStore

DEFAULT_CHUNK = timedelta(days=7)


@dataclass
class MaterializeReport:
    """What was materialized: per view, the windows written (start, end)."""

    windows: dict[str, list[tuple[datetime, datetime]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # view -> reason (e.g. no data published yet)
    evicted_resolved: list[str] = field(default_factory=list)  # resolved markets evicted (marker kept)

    def add(self, view: str, start: datetime, end: datetime) -> None:
        self.windows.setdefault(view, []).append((start, end))

    def summary(self) -> str:
        lines = [f"{view}: {len(w)} window(s) {w[0][0].isoformat()} -> {w[-1][1].isoformat()}"
                 for view, w in self.windows.items() if w]
        lines += [f"{view}: skipped, {reason}" for view, reason in self.skipped.items()]
        lines.append(f"resolved markets removed from the online store (resolution marker kept): "
                     f"{len(self.evicted_resolved)}")
        return "\n".join(lines) or "nothing to materialize"


def parse_utc(value: str) -> datetime:
    """An ISO-8601 timestamp with an explicit offset or Z, as UTC; naive input is refused."""
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
    """Materialize rows with event time in [start, end) of `views` (default: all online feature views
    except label views), then evict markets resolved by `end` (leaving their resolution marker)."""
    start, end = _utc("start", start), _utc("end", end)
    if start >= end:
        raise ValueError(f"start ({start}) must be before end ({end})")
    store = _store(store, settings)
    report = MaterializeReport()
    names = _views(store, views, report)
    if not names:
        return report
    for window_start, window_end in split_window(start, end, chunk):
        with OFFLINE_LOCK:
            store.materialize(window_start, window_end, feature_views=names, disable_event_timestamp=False)
        for name in names:
            report.add(name, window_start, window_end)
    report.evicted_resolved = evict_resolved(store, end)
    return report


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
    for name in _views(store, views, report):
        view = store.get_feature_view(name)
        start = view.most_recent_end_time
        if start is None:
            if not view.ttl:
                raise ValueError(f"feature view {name} was never materialized and has no TTL: use materialize(start, end)")
            start = end - view.ttl
        start = start.astimezone(timezone.utc) if start.tzinfo else start.replace(tzinfo=timezone.utc)
        for window_start, window_end in split_window(start, end, chunk):
            with OFFLINE_LOCK:
                store.materialize(window_start, window_end, feature_views=[name])
            report.add(name, window_start, window_end)
    report.evicted_resolved = evict_resolved(store, end)
    return report

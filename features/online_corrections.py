"""One rule for what a materialization writes online, whatever the store: the newest row wins, and
at the same event time the newer correction wins.

Feast's two online stores disagree on both halves:
- Redis skips any row whose event time is not strictly newer than the stored one. A late price
  snapshot changes the derived features (changes, volatilities) of the snapshots after it, so
  ingestion re-publishes those rows at their own event time with a newer ``ingested_at``
  (``feature_corrections``); Feast's materialization picks that newest version, as training does,
  and Redis then drops it: stale derived values online, corrected ones in training.
- SQLite writes every row, so re-materializing an older window puts older values back online.

:func:`newest_row_wins` fixes both for the writes of *our* materialization runs: before Feast's own
write, rows older than the stored row are dropped (SQLite), and for Redis the stored event time of
entities whose row has exactly that time is moved back by one nanosecond, so Feast's check
(strictly newer) lets the correction through; a reader meanwhile sees the old values 1 ns older.
Only writes on the materializing thread are affected (a concurrent push keeps Feast's rules).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from feast import FeatureStore


@contextmanager
def newest_row_wins(store: "FeatureStore") -> Iterator[None]:
    """While inside, the materializing thread's online writes follow the newest-row rule (module doc)."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    online_store = store._get_provider().online_store
    is_redis = isinstance(online_store, RedisOnlineStore)
    if is_redis and getattr(store.config.online_store, "skip_dedup", False):
        yield  # the user chose Feast's write-everything mode
        return
    original = online_store.online_write_batch
    owner = threading.get_ident()

    def online_write_batch(config: Any, table: Any, data: list, progress: Any) -> None:
        if threading.get_ident() == owner and data:
            if is_redis:
                rewind_equal_event_times(online_store, config, table, data)  # Redis drops older rows itself
            else:
                kept = without_older_rows(online_store, config, table, data)
                if progress and len(kept) < len(data):
                    progress(len(data) - len(kept))
                data = kept
                if not data:
                    return None
        return original(config, table, data, progress)

    online_store.online_write_batch = online_write_batch
    try:
        yield
    finally:
        del online_store.online_write_batch  # back to the class's method


def without_older_rows(online_store: Any, config: Any, table: Any, data: list) -> list:
    """``data`` without the rows older than what the store holds for their entity (Feast's own read)."""
    from feast import utils

    stored = online_store.online_read(config, table, [entity_key for entity_key, _, _, _ in data],
                                      requested_features=[table.features[0].name])
    return [row for row, (stored_at, _) in zip(data, stored)
            if stored_at is None or utils.make_tzaware(row[2]) >= utils.make_tzaware(stored_at)]


def rewind_equal_event_times(online_store: Any, config: Any, table: Any, data: list) -> int:
    """Move the stored event time of each entity whose row in ``data`` has exactly that time back by
    1 ns. Returns how many were moved. Keys and fields are Feast's own (redis.py helpers)."""
    from feast import utils
    from feast.infra.online_stores.helpers import _redis_key
    from feast.infra.online_stores.redis import _versioned_fv_name
    from google.protobuf.timestamp_pb2 import Timestamp

    client = online_store._get_client(config.online_store)
    ts_key = f"_ts:{_versioned_fv_name(table, config)}"
    keys = [_redis_key(config.project, entity_key,
                       entity_key_serialization_version=config.entity_key_serialization_version)
            for entity_key, _, _, _ in data]
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key, ts_key)
        stored = pipe.execute()
    moved: dict[bytes, bytes] = {}
    stamp = Timestamp()
    for key, previous, (_, _, event_time, _) in zip(keys, stored, data):
        if not previous or key in moved:
            continue
        stamp.FromDatetime(utils.make_tzaware(event_time))
        new_nanos = stamp.seconds * 1_000_000_000 + stamp.nanos
        stamp.ParseFromString(previous)
        if stamp.seconds * 1_000_000_000 + stamp.nanos == new_nanos:
            earlier = new_nanos - 1
            moved[key] = Timestamp(seconds=earlier // 1_000_000_000, nanos=earlier % 1_000_000_000).SerializeToString()
    if moved:
        with client.pipeline(transaction=False) as pipe:
            for key, value in moved.items():
                pipe.hset(key, ts_key, value)
            pipe.execute()
    return len(moved)

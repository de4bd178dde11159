"""Resolved markets stop being served: their rows are removed from the online store.

Why remove rather than mark: a resolved market's outcome is known, so a forecast for it is
meaningless, and its last price (often ~0 or ~1 just before resolution) would be served as if
live for up to the price TTL. Removing it makes every feature NOT_FOUND online, which serving
already handles as "unknown market". Training is unaffected (the offline store keeps everything),
and `outcome` / `resolved_at` stay labels, never features (docs/architecture.md).

Feast has no per-entity delete, so this uses the SQLite / Redis online stores' own key
encodings (feast.infra.key_encoding_utils / online_stores.helpers) - the same functions Feast
writes with - and is covered by tests against both stores.
"""

from __future__ import annotations

import glob
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from feast import FeatureStore


def offline_dir_of(store: "FeatureStore") -> Path:
    """The offline store directory the registered sources read (…/<dir>/market_info/**/*.parquet)."""
    path = store.get_feature_view("market_info").batch_source.path
    marker = "/market_info/"
    if marker not in path:
        raise ValueError(f"market_info source path {path!r} is not in the offline store layout")
    return Path(path.split(marker)[0])


def resolved_market_ids(offline_dir: Path, as_of: datetime) -> list[str]:
    """Markets whose current version (newest updated_at <= as_of) has resolved_at <= as_of."""
    import duckdb

    pattern = str(offline_dir / "markets" / "**" / "*.parquet")
    if not glob.glob(pattern, recursive=True):
        return []
    query = """
        SELECT market_id FROM (
            SELECT market_id, resolved_at,
                   row_number() OVER (PARTITION BY market_id ORDER BY updated_at DESC, ingested_at DESC) AS rn
            FROM read_parquet(?, hive_partitioning = true)
            WHERE updated_at <= ?
        ) WHERE rn = 1 AND resolved_at IS NOT NULL AND resolved_at <= ?
        ORDER BY market_id
    """
    with duckdb.connect() as con:
        return [row[0] for row in con.execute(query, [pattern, as_of, as_of]).fetchall()]


def evict_resolved(store: "FeatureStore", as_of: datetime) -> list[str]:
    """Remove markets resolved at or before `as_of` from the online store; returns their ids."""
    ids = resolved_market_ids(offline_dir_of(store), as_of)
    evict_from_online(store, ids)
    return ids


def evict_from_online(store: "FeatureStore", market_ids: list[str]) -> int:
    """Delete every online row of `market_ids` from all feature views; returns markets processed."""
    if not market_ids:
        return 0
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    config = store.config
    keys = [EntityKey(join_keys=["market_id"], entity_values=[Value(string_val=m)]) for m in market_ids]
    kind = config.online_store.type
    if kind == "sqlite":
        _evict_sqlite(store, keys)
    elif kind == "redis":
        _evict_redis(store, keys)
    else:
        raise NotImplementedError(f"evicting resolved markets from a {kind!r} online store")
    return len(market_ids)


def _evict_sqlite(store: "FeatureStore", keys: list) -> None:
    import sqlite3

    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.sqlite import _table_id

    config = store.config
    blobs = [(serialize_entity_key(k, entity_key_serialization_version=config.entity_key_serialization_version),)
             for k in keys]
    with sqlite3.connect(config.online_store.path) as conn:
        existing = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for view in store.list_feature_views():
            table = _table_id(config.project, view)
            if table in existing:
                conn.executemany(f'DELETE FROM "{table}" WHERE entity_key = ?', blobs)


def _evict_redis(store: "FeatureStore", keys: list) -> None:
    from feast.infra.online_stores.helpers import _redis_key
    from feast.infra.online_stores.redis import RedisOnlineStore

    config = store.config
    client = RedisOnlineStore()._get_client(config.online_store)
    # One Redis hash per entity holds every view's features: deleting it removes the market.
    redis_keys = [_redis_key(config.project, k, entity_key_serialization_version=config.entity_key_serialization_version)
                  for k in keys]
    for start in range(0, len(redis_keys), 1000):
        client.delete(*redis_keys[start:start + 1000])

"""Resolved markets stop being served: their feature rows are removed from the online store,
and a resolution marker (feature view `market_resolution`) is written in their place.

Why remove rather than keep serving: a resolved market's outcome is known, so a forecast for it is
meaningless, and its last price (often ~0 or ~1 just before resolution) would be served as if
live for up to the price TTL. Removing it makes every feature NOT_FOUND online. The marker lets
serving still say *why* (resolved, with when and how) instead of "unknown market": it lives in a
label view that no FeatureService includes, so `outcome` / `resolved_at` stay labels, never features
(docs/architecture.md). Training is unaffected (the offline store keeps everything).

Feast has no per-entity delete, so this uses the SQLite / Redis online stores' own key
encodings (feast.infra.key_encoding_utils / online_stores.helpers) - the same functions Feast
writes with - and is covered by tests against both stores. The marker is written through Feast.
"""

from __future__ import annotations

import glob
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore
    from feast.feature_view import FeatureView

MARKER_VIEW = "market_resolution"
# feature_repo/feature_views.py tags label views (the marker view) so: they are written here, never
# materialized by features.materialize, never part of a FeatureService.
LABEL_TAG = ("role", "label")
# Rows per marker write, like materialization.online_write_batch_size in feature_store.yaml.
MARKER_WRITE_BATCH = 10_000
MARKER_COLUMNS = ["market_id", "updated_at", "resolved_at", "outcome", "ingested_at"]


def is_label_view(view: "FeatureView") -> bool:
    return view.tags.get(LABEL_TAG[0]) == LABEL_TAG[1]


def markets_path_of(store: "FeatureStore") -> str:
    """The glob of the offline `markets` table, as the registered marker view's source reads it."""
    return store.get_feature_view(MARKER_VIEW).batch_source.path


def resolved_versions(markets_path: str, as_of: datetime) -> "pd.DataFrame":
    """Current version (newest updated_at <= as_of) of each market whose resolved_at <= as_of.

    Columns MARKER_COLUMNS (timestamps UTC, outcome Int64), sorted by market_id: the marker rows.
    """
    import duckdb
    import pandas as pd
    import pyarrow as pa

    if not glob.glob(markets_path, recursive=True):
        utc = pa.timestamp("us", tz="UTC")
        table = pa.schema([("market_id", pa.string()), ("updated_at", utc), ("resolved_at", utc),
                           ("outcome", pa.int64()), ("ingested_at", utc)]).empty_table()
    else:
        query = """
            SELECT market_id, updated_at, resolved_at, CAST(outcome AS BIGINT) AS outcome, ingested_at FROM (
                SELECT *, row_number() OVER (PARTITION BY market_id
                                             ORDER BY updated_at DESC, ingested_at DESC) AS rn
                FROM read_parquet(?, hive_partitioning = true)
                WHERE updated_at <= ?
            ) WHERE rn = 1 AND resolved_at IS NOT NULL AND resolved_at <= ?
            ORDER BY market_id
        """
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            table = con.sql(query, params=[markets_path, as_of, as_of]).to_arrow_table()
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def evict_resolved(store: "FeatureStore", as_of: datetime) -> list[str]:
    """Remove markets resolved at or before `as_of` from the online store and write their
    resolution markers; returns their ids.

    Everything of the market is deleted first (an older marker too), then the marker of its current
    version is written: online, a resolved market holds its marker and nothing else.
    """
    versions = resolved_versions(markets_path_of(store), as_of)
    ids = versions["market_id"].tolist()
    evict_from_online(store, ids)
    write_markers(store, versions)
    return ids


def write_markers(store: "FeatureStore", versions: "pd.DataFrame") -> int:
    """Write resolution markers (rows with MARKER_COLUMNS) through Feast; returns rows written."""
    rows = versions[MARKER_COLUMNS]
    for start in range(0, len(rows), MARKER_WRITE_BATCH):
        store.write_to_online_store(MARKER_VIEW, rows.iloc[start:start + MARKER_WRITE_BATCH])
    return len(versions)


def resolution_markers(store: "FeatureStore",
                       market_ids: Iterable[str]) -> dict[str, tuple[datetime, int | None]]:
    """{market_id: (resolved_at, outcome)} for those of `market_ids` the online store knows as resolved.

    One Feast online read of the marker view. resolved_at is a tz-aware UTC datetime, outcome 0/1
    (None only if the data had none). A market without a marker (open, unknown, or not yet
    evicted) is absent, and so is one whose marker row has no resolved_at: a plain `feast
    materialize` of the view writes open markets' current versions with a null resolved_at.
    """
    ids = list(dict.fromkeys(str(m) for m in market_ids))
    if not ids:
        return {}
    response = store.get_online_features(
        features=[f"{MARKER_VIEW}:resolved_at", f"{MARKER_VIEW}:outcome"],
        entity_rows=[{"market_id": m} for m in ids],
    )
    data = response.to_dict()
    markers = {}
    for market_id, resolved_at, outcome in zip(ids, data["resolved_at"], data["outcome"]):
        if resolved_at is None:
            continue
        markers[market_id] = (resolved_at.astimezone(timezone.utc), None if outcome is None else int(outcome))
    return markers


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

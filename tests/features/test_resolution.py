"""Resolution markers: a resolved market keeps only its `market_resolution` row online (SQLite and real
Redis), `resolution_markers` reads it, and the label view stays out of every FeatureService."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from features.materialize import materialize, materialize_incremental
from features.resolved import MARKER_VIEW, is_label_view, resolution_markers
from features.retrieve import online_features
from features.store import OFFLINE_LOCK, get_store
from tests.features import scenario
from tests.features.offline_data import publish

pytestmark = pytest.mark.slow

SERVICE = "market_forecaster_v1"
JAN = datetime(2024, 1, 1, tzinfo=timezone.utc)
ONE_WINDOW = timedelta(days=4000)
END = scenario.utc(scenario.RESOLUTION_PUBLISHED).to_pydatetime()  # after res_done resolved, before res_later
STORED_FEATURES = ["price", "volume_24h", "price_change_1d", "price_change_7d", "price_volatility_7d",
                   "price_volatility_30d", "volume_mean_7d", "poll_average", "poll_trend", "n_polls",
                   "event_type", "platform"]


def online_views_holding(store, market_id: str) -> set[str]:
    """Feature views with a stored row for `market_id`, read from the online store itself."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    config, version = store.config, store.config.entity_key_serialization_version
    key = EntityKey(join_keys=["market_id"], entity_values=[Value(string_val=market_id)])
    if config.online_store.type == "sqlite":
        from feast.infra.online_stores.sqlite import _table_id

        blob = serialize_entity_key(key, entity_key_serialization_version=version)
        with sqlite3.connect(config.online_store.path) as conn:
            return {view.name for view in store.list_feature_views()
                    if conn.execute(f'SELECT count(*) FROM "{_table_id(config.project, view)}" '
                                    "WHERE entity_key = ?", (blob,)).fetchone()[0]}
    from feast.infra.online_stores.helpers import _redis_key
    from feast.infra.online_stores.redis import RedisOnlineStore

    client = RedisOnlineStore()._get_client(config.online_store)
    fields = client.hkeys(_redis_key(config.project, key, entity_key_serialization_version=version))
    return {f.decode().removeprefix("_ts:") for f in fields if f.startswith(b"_ts:")}


def store_for(fork, request, online: str):
    redis = request.getfixturevalue("redis_clean") if online == "redis" else None
    return get_store(fork(online, redis=redis))


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_resolved_market_keeps_only_its_marker_online(fork, request, online):
    store = store_for(fork, request, online)
    report = materialize(JAN, END, chunk=timedelta(days=60), store=store)
    assert MARKER_VIEW not in report.windows  # written by eviction, not materialized
    assert report.evicted_resolved == ["pit_late", "res_done"]

    # No FeatureService feature for a resolved market, as before the marker existed ...
    result = online_features(["res_done", "res_open"], SERVICE, request_ts=END, store=store)
    status = result.status.set_index("market_id")
    assert (status.loc["res_done", STORED_FEATURES] == "NOT_FOUND").all()
    assert status.loc["res_open", "price"] == "PRESENT"
    # ... and in the online store itself nothing but the marker.
    assert online_views_holding(store, "res_done") == {MARKER_VIEW}
    assert MARKER_VIEW not in online_views_holding(store, "res_open")

    markers = resolution_markers(store, ["res_done", "res_open", "no_such_market", "pit_late", "res_done"])
    assert markers == {"res_done": (scenario.RES_DONE_RESOLVED, 0), "pit_late": (scenario.LATE_RESOLVED, 1)}
    resolved_at, outcome = markers["res_done"]
    assert isinstance(resolved_at, datetime) and resolved_at.tzinfo == timezone.utc and type(outcome) is int
    assert resolution_markers(store, []) == {}


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_market_resolving_in_a_later_batch_gets_its_marker_at_the_next_incremental_run(
        fork, applied_repo, request, online):
    store = store_for(fork, request, online)
    # One window per view: a first incremental run of market_info starts 3650 days (its TTL) back.
    report = materialize_incremental(END, chunk=ONE_WINDOW, store=store)
    assert MARKER_VIEW not in report.windows and "res_later" not in report.evicted_resolved
    assert "res_later" not in resolution_markers(store, ["res_later"])
    status = online_features(["res_later"], SERVICE, request_ts=END, store=store).status
    assert status.loc[0, "price"] == "PRESENT"

    # Published into the session's shared offline store: res_later resolves after every other test's window.
    publish(applied_repo.settings.offline_store_dir, scenario.batch_resolution_later(),
            scenario.RESOLUTION_LATER_PUBLISHED)
    later_end = scenario.utc(scenario.RESOLUTION_LATER_PUBLISHED).to_pydatetime()
    report = materialize_incremental(later_end, chunk=ONE_WINDOW, store=store)
    assert "res_later" in report.evicted_resolved
    assert resolution_markers(store, ["res_later", "res_done", "res_open"]) == {
        "res_later": (scenario.RES_LATER_RESOLVED, 1), "res_done": (scenario.RES_DONE_RESOLVED, 0)}
    status = online_features(["res_later"], SERVICE, request_ts=later_end, store=store).status
    assert (status.loc[0, STORED_FEATURES] == "NOT_FOUND").all()
    assert online_views_holding(store, "res_later") == {MARKER_VIEW}


def test_open_markets_written_by_feast_materialize_are_not_markers(fork):
    # `feast materialize` over all views (no eviction) also writes the label view, open markets included.
    store = get_store(fork("sqlite"))
    with OFFLINE_LOCK:
        store.materialize(JAN, END, feature_views=[MARKER_VIEW])
    assert MARKER_VIEW in online_views_holding(store, "res_open")  # a row with resolved_at null
    assert resolution_markers(store, ["res_open", "res_later", "res_done", "pit_late"]) == {
        "res_done": (scenario.RES_DONE_RESOLVED, 0), "pit_late": (scenario.LATE_RESOLVED, 1)}
    # The next eviction replaces a resolved market's row by its marker and leaves open markets alone.
    materialize(JAN, END, views=["price_features"], chunk=timedelta(days=60), store=store)
    assert online_views_holding(store, "res_done") == {MARKER_VIEW}
    assert online_views_holding(store, "res_open") == {"price_features", MARKER_VIEW}


def test_label_view_is_registered_but_in_no_feature_service(applied_repo):
    store = get_store(applied_repo.settings)
    view = store.get_feature_view(MARKER_VIEW)
    assert is_label_view(view) and view.online
    assert [f.name for f in view.features] == ["resolved_at", "outcome"]
    assert view.batch_source.path.endswith("/markets/**/*.parquet")
    assert (view.batch_source.timestamp_field, view.batch_source.created_timestamp_column) == ("updated_at",
                                                                                                "ingested_at")
    labels = {v.name for v in store.list_feature_views() if is_label_view(v)}
    assert labels == {MARKER_VIEW}
    for service in store.list_feature_services():
        assert not labels & {p.name for p in service.feature_view_projections}, service.name
    with pytest.raises(ValueError, match="label view"):
        materialize(JAN, END, views=[MARKER_VIEW], store=store)


def test_re_materializing_an_older_window_keeps_resolved_markets_evicted(fork):
    """A re-run over an older range (e.g. after a late batch) rewrites res_done's rows from before it
    resolved; the online store is at END, where res_done is resolved, so it must hold only its marker."""
    store = get_store(fork("sqlite"))
    assert "res_done" in materialize(JAN, END, chunk=timedelta(days=60), store=store).evicted_resolved
    before_resolution = scenario.RES_DONE_RESOLVED.to_pydatetime() - timedelta(days=1)
    report = materialize(before_resolution - timedelta(days=9), before_resolution, store=store)
    assert "res_done" in report.evicted_resolved
    assert online_views_holding(store, "res_done") == {MARKER_VIEW}
    status = online_features(["res_done"], SERVICE, request_ts=END, store=store).status
    assert (status.loc[0, STORED_FEATURES] == "NOT_FOUND").all()
    assert resolution_markers(store, ["res_done"]) == {"res_done": (scenario.RES_DONE_RESOLVED, 0)}

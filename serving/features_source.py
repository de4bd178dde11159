"""Where serving gets features: the Feast online store, through features.retrieve.online_features.

One :class:`FeastFeatureSource` (one FeatureStore) per worker. It adds what serving needs on top of
the library: bounded Redis timeouts with no retry back-off (a dead Redis must give a fast 503, and
the next request after Redis returns reconnects by itself), a bounded SQLite lock wait (a locked
file must give a fast 503 too), per-feature ages and TTLs, unknown
market detection, and request-time price overrides recomputed through the on-demand view's own UDF.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Sequence

from config.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

PRICE_FEATURE = "price"
ENTITY_KEY = "market_id"
# Field status of a value that was +/-inf in the online store or came out of an on-demand UDF as one
# (e.g. poll / price for a denormal price): withheld (None, imputed by the model) with a warning.
NON_FINITE = "NON_FINITE"


class FeatureStoreUnavailable(RuntimeError):
    """The online store could not be read (down, timed out, misconfigured); the message says why."""


@dataclass(frozen=True)
class ServicePlan:
    """What serving needs to know about one FeatureService, computed once from the Feast registry."""

    name: str
    feature_names: list[str]
    view_of: dict[str, str]                  # feature -> (stored or on-demand) view name
    stored_views: list[str]                  # stored views of the service (ages reported per view)
    odfv_sources: dict[str, list[str]]       # on-demand view -> its stored source views
    ttl_s: dict[str, float]                  # stored view -> TTL in seconds (inf: none)

    def ttl_of(self, feature: str) -> float | None:
        ttl = self.ttl_s.get(self.view_of[feature], math.inf)
        return None if math.isinf(ttl) else ttl


@dataclass
class OnlineFeatures:
    """Feature rows for the requested markets (request order), ready for the model."""

    plan: ServicePlan
    market_ids: list[str]
    prices: list[float | None]               # request-time prices (None: none given)
    values: dict[str, list]                  # market_id + one list per feature, request order (None: no value)
    status: dict[str, list[str]]             # Feast field status per feature
    view_ages: dict[str, list[float | None]]  # stored view -> per row age in seconds (None: no stored row)
    known: list[bool]                        # per row: the store has any stored value for the market
    request_ts: datetime
    overridden: list[set[str]] = field(default_factory=list)  # per row: features replaced by request values
    non_finite: list[dict[str, str]] = field(default_factory=list)  # per row: withheld feature -> its value

    def age(self, i: int, feature: str) -> float | None:
        """Age of row i's value of `feature`: its view's age; 0 for a stored feature given in the request;
        None for an on-demand feature (computed now; its inputs carry their ages)."""
        view = self.plan.view_of[feature]
        if view not in self.view_ages:
            return None
        return 0.0 if feature in self.overridden[i] else self.view_ages[view][i]


class RegistryCachedStore:
    """A FeatureStore whose definition lookups are decoded once and kept.

    FeatureStore.get_feature_view / get_feature_service / list_on_demand_feature_views default to
    allow_cache=False (one SQL registry query per call), and even cached they decode protos and run
    typeguard on every call: features.retrieve makes five such calls per online read, which profiled
    at ~60% of a single /predict. Definitions only change with `feast apply` (a changed service gets
    a new name), so a restart picks up a redefinition. Everything else is delegated unchanged.
    """

    def __init__(self, store: "FeatureStore"):
        self._store = store
        self._kept: dict[tuple, object] = {}

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def _keep(self, key: tuple, load):
        if key not in self._kept:
            self._kept[key] = load()
        return self._kept[key]

    def get_feature_service(self, name: str, allow_cache: bool = True):
        return self._keep(("service", name), lambda: self._store.get_feature_service(name, allow_cache=True))

    def get_feature_view(self, name: str, allow_registry_cache: bool = True):
        return self._keep(("view", name), lambda: self._store.get_feature_view(name, allow_registry_cache=True))

    def list_on_demand_feature_views(self, allow_cache: bool = True, tags=None):
        return self._keep(("odfvs", str(tags)),
                          lambda: self._store.list_on_demand_feature_views(allow_cache=True, tags=tags))


class FeastFeatureSource:
    """Online features from the Feast online store configured in settings."""

    def __init__(self, settings: Settings, timeout_s: float = 0.25):
        self.settings = settings
        self.timeout_s = timeout_s
        self.store = RegistryCachedStore(self._build_store())
        self._plans: dict[str, ServicePlan] = {}
        self._lock = threading.Lock()
        self._bounded_conn = None  # the SQLite connection whose busy timeout is set

    def _build_store(self) -> "FeatureStore":
        from feast import FeatureStore

        from features.store import get_store, repo_config

        if self.settings.online_store_type != "redis":
            return get_store(self.settings)
        config = repo_config(self.settings)
        # Feast parses `key=value` pairs of the connection string into redis-py keyword arguments.
        config.online_store.connection_string += (
            f",socket_timeout={self.timeout_s},socket_connect_timeout={self.timeout_s}")
        store = FeatureStore(repo_path=str(self.settings.feature_repo_dir), config=config)
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # redis-py's default is 3 retries with exponential back-off up to 10 s: seconds of hanging
        # per request while Redis is down. One immediate retry (a pooled connection that died with a
        # restarted Redis is replaced at once), each attempt bounded by the socket timeouts above.
        client = store._get_provider().online_store._get_client(store.config.online_store)
        client.set_retry(Retry(NoBackoff(), 1))
        return store

    def _bound_sqlite_waits(self):
        """Feast's own SQLite online-store connection, its lock waits bounded by timeout_s; None for Redis.

        Feast opens it lazily (feast/infra/online_stores/sqlite.py `_get_conn`) with sqlite3's default
        5 s timeout and keeps it: while another process held a write lock, every read hung 5 s before
        failing. PRAGMA busy_timeout on that very connection bounds the wait; set once per connection."""
        if self.settings.online_store_type != "sqlite":
            return None
        conn = self.store._get_provider().online_store._get_conn(self.store.config)
        if conn is not self._bounded_conn:
            conn.execute(f"PRAGMA busy_timeout = {max(1, math.ceil(self.timeout_s * 1000))}")
            self._bounded_conn = conn
        return conn

    # ------------------------------------------------------------------ registry facts

    def plan(self, service_name: str) -> ServicePlan:
        with self._lock:
            if service_name not in self._plans:
                self._plans[service_name] = self._make_plan(service_name)
            return self._plans[service_name]

    def _make_plan(self, service_name: str) -> ServicePlan:
        from feast.errors import FeatureServiceNotFoundException

        try:
            service = self.store.get_feature_service(service_name)
        except FeatureServiceNotFoundException as exc:
            raise LookupError(f"FeatureService {service_name!r} is not in the Feast registry "
                              f"({self.settings.feast_registry_uri})") from exc
        odfvs = {v.name: v for v in self.store.list_on_demand_feature_views()}
        names, view_of, stored, sources, ttl = [], {}, [], {}, {}
        for projection in service.feature_view_projections:
            if projection.name in odfvs:
                sources[projection.name] = [s.name for s in odfvs[projection.name].source_feature_view_projections.values()]
            else:
                stored.append(projection.name)
            for f in projection.features:
                names.append(f.name)
                view_of[f.name] = projection.name
        for view in {*stored, *(v for vs in sources.values() for v in vs)}:
            seconds = self.store.get_feature_view(view).ttl.total_seconds()
            ttl[view] = seconds or math.inf
        return ServicePlan(service_name, names, view_of, stored, sources, ttl)

    # ------------------------------------------------------------------ reads

    def ping(self) -> None:
        """Raise FeatureStoreUnavailable unless the online store answers: a Redis PING, or for SQLite a
        read on the connection feature reads use (a file that exists but is locked answers no read)."""
        try:
            if self.settings.online_store_type == "redis":
                client = self.store._get_provider().online_store._get_client(self.store.config.online_store)
                client.ping()
            elif not self.settings.online_sqlite_path.exists():  # checked first: connecting would create it
                raise FileNotFoundError(f"SQLite online store {self.settings.online_sqlite_path} does not exist")
            else:
                self._bound_sqlite_waits().execute("SELECT count(*) FROM sqlite_master").fetchone()
        except Exception as exc:  # noqa: BLE001 - every failure means "not reachable", with its reason
            raise FeatureStoreUnavailable(f"online store ({self.settings.online_store_type}) unreachable: "
                                          f"{type(exc).__name__}: {exc}") from exc

    def read(self, market_ids: Sequence[str], service_name: str, request_ts: datetime,
             prices: Sequence[float | None] | None = None) -> OnlineFeatures:
        """ONE online read for all markets; `prices` (per market, None: none) override the stored price."""
        from features.retrieve import online_columns

        plan = self.plan(service_name)
        try:
            self._bound_sqlite_waits()
            result = online_columns(list(market_ids), service_name, request_ts, store=self.store)
        except Exception as exc:  # noqa: BLE001 - a failed read is a 503 with its reason, never a 500
            raise FeatureStoreUnavailable(f"online feature read failed: {type(exc).__name__}: {exc}") from exc
        n = len(market_ids)
        values = result.values  # fresh lists from Feast, ours to change (request prices); NaN or None = missing
        view_ages = {v: [None if a != a else float(a) for a in result.age_seconds[v]] for v in plan.stored_views}
        stored_status = [result.status[f] for f in plan.feature_names if plan.view_of[f] in plan.stored_views]
        known = [any(column[i] != "NOT_FOUND" for column in stored_status) for i in range(n)]
        prices = list(prices) if prices is not None else [None] * n
        out = OnlineFeatures(plan, list(market_ids), prices, values, result.status, view_ages, known,
                             result.request_ts, overridden=[set() for _ in market_ids],
                             non_finite=[{} for _ in market_ids])
        stored = [f for f in plan.feature_names if plan.view_of[f] in plan.stored_views]
        withheld = _withhold_non_finite(out, stored)
        if withheld:
            self._rerun_without(out, withheld)
        if any(p is not None for p in prices):
            self._override_prices(out, prices)
        _withhold_non_finite(out, [f for f in plan.feature_names if plan.view_of[f] in plan.odfv_sources])
        return out

    def resolutions(self, market_ids: Sequence[str]) -> dict[str, tuple[datetime, int | None]]:
        """market_id -> (resolved_at, outcome) for the markets among `market_ids` that have resolved.

        Resolved markets are evicted from the online store (features/resolved.py) and leave a
        resolution marker, so serving can tell "resolved" from "unknown". Only asked for markets
        with no stored feature. A failed read raises FeatureStoreUnavailable (503): without the
        markers a resolved market cannot be told from an unknown one, so it must not be answered 404.
        """
        from features.resolved import resolution_markers

        try:
            self._bound_sqlite_waits()
            return resolution_markers(self.store, list(market_ids))
        except Exception as exc:  # noqa: BLE001 - a failed read is a 503 with its reason, never a 404 or 500
            raise FeatureStoreUnavailable(f"online resolution-marker read failed: {type(exc).__name__}: {exc}") from exc

    def _override_prices(self, feats: OnlineFeatures, prices: Sequence[float | None]) -> None:
        """Put request-time prices in, and recompute the on-demand features that depend on price."""
        if PRICE_FEATURE not in feats.values:
            return
        values, status = feats.values, feats.status
        rows = [i for i, p in enumerate(prices) if p is not None]
        new_price = [float(prices[i]) for i in rows]
        old_price = [_none_if_nan(values[PRICE_FEATURE][i]) for i in rows]
        for i, p in zip(rows, new_price):
            values[PRICE_FEATURE][i] = p
            status[PRICE_FEATURE][i] = "PRESENT"
            feats.overridden[i].add(PRICE_FEATURE)
        self._rerun_on_demand(feats, rows, {PRICE_FEATURE: old_price}, {PRICE_FEATURE: new_price}, from_request=True)

    def _rerun_without(self, feats: OnlineFeatures, withheld: dict[int, dict[str, float]]) -> None:
        """Recompute the on-demand features of rows whose stored inputs were withheld as non-finite, with
        those inputs missing: an infinite poll_average must not leave poll - price = inf, nor an infinite
        price leave poll / price = 0, behind as if they were real values."""
        odfvs = {v.name: v for v in self.store.list_on_demand_feature_views()}
        used = {f.name for name in feats.plan.odfv_sources
                for source in odfvs[name].source_feature_view_projections.values() for f in source.features}
        inputs = used & {f for bad in withheld.values() for f in bad}
        if not inputs:
            return
        rows = sorted(i for i, bad in withheld.items() if inputs & set(bad))
        before = {f: [withheld[i].get(f, feats.values[f][i]) for i in rows] for f in inputs}
        after = {f: [feats.values[f][i] for i in rows] for f in inputs}
        try:
            self._rerun_on_demand(feats, rows, before, after, from_request=False)
        except Exception as exc:  # noqa: BLE001 - a UDF that cannot take a missing input: withhold its outputs
            log.warning("on-demand features of %d row(s) with non-finite inputs not recomputable (%s): withheld",
                        len(rows), exc)
            for f in (n for n in feats.plan.feature_names if feats.plan.view_of[n] in feats.plan.odfv_sources):
                for i in rows:
                    feats.values[f][i], feats.status[f][i] = None, "NULL_VALUE"

    def _rerun_on_demand(self, feats: OnlineFeatures, rows: list[int], before: dict[str, list],
                         after: dict[str, list], from_request: bool) -> None:
        """Run each on-demand view's own UDF (the code training ran) on `rows` twice: with the `before`
        values of the given stored inputs, then with the `after` values, all other inputs as read. The
        outputs that change are the ones that depend on those inputs and take the recomputed value.
        Inputs the service does not return (e.g. resolution_date) are passed as null, which only affects
        outputs that do not depend on the replaced inputs and are therefore kept as read.
        `from_request`: the new values come from the request (status REQUEST in the response)."""
        plan, values, status = feats.plan, feats.values, feats.status
        odfvs = {v.name: v for v in self.store.list_on_demand_feature_views()}
        for view_name in plan.odfv_sources:
            odfv = odfvs[view_name]

            def inputs(replaced: dict[str, list]) -> dict[str, list]:
                data: dict[str, list] = {"request_ts": [feats.request_ts] * len(rows)}
                for source in odfv.source_feature_view_projections.values():
                    for f in source.features:
                        if f.name in replaced:
                            column = replaced[f.name]
                        elif f.name in values:
                            column = [_none_if_nan(values[f.name][i]) for i in rows]
                        else:
                            column = [None] * len(rows)
                        data[f"{source.name}__{f.name}"] = column
                return data

            old = odfv.transform_dict(inputs(before))
            new = odfv.transform_dict(inputs(after))
            for f in (n for n in plan.feature_names if plan.view_of[n] == view_name):
                for k, i in enumerate(rows):
                    if not _same(old[f][k], new[f][k]):
                        value = _none_if_nan(new[f][k])
                        values[f][i] = value
                        status[f][i] = "PRESENT" if value is not None else "NULL_VALUE"
                        if from_request:
                            feats.overridden[i].add(f)


def _withhold_non_finite(feats: OnlineFeatures, names: Sequence[str]) -> dict[int, dict[str, float]]:
    """Replace non-finite float values of `names` by None, in place: NaN is a missing value (status
    NULL_VALUE), +/-inf an invalid one (status NON_FINITE, recorded in feats.non_finite for the
    warning). Returns row -> {feature: the withheld infinite value}."""
    withheld: dict[int, dict[str, float]] = {}
    for f in names:
        column, statuses = feats.values[f], feats.status[f]
        for i, v in enumerate(column):
            if isinstance(v, float) and not math.isfinite(v):  # numpy floats are floats too
                column[i] = None
                if v != v:
                    if statuses[i] == "PRESENT":
                        statuses[i] = "NULL_VALUE"
                    continue
                statuses[i] = NON_FINITE
                feats.overridden[i].discard(f)  # NON_FINITE, not REQUEST, even if computed from a request price
                feats.non_finite[i][f] = repr(v)
                withheld.setdefault(i, {})[f] = v
    return withheld


def _none_if_nan(value):
    if value is None:
        return None
    try:
        return None if value != value else value
    except (TypeError, ValueError):
        return value


def _same(a, b) -> bool:
    a, b = _none_if_nan(a), _none_if_nan(b)
    return a == b

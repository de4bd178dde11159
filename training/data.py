"""The training set: one example per price snapshot of a resolved market, features as of its ts.

Labels come from the ``markets`` table of the offline store (outcome and resolved_at of the
market's current version *as known at ``as_of``*); entity rows are the ``price_features`` rows
of those markets with ``ts < resolved_at``. Features are joined point-in-time by Feast through
the FeatureService (``features.retrieve.historical_features``).

``as_of`` rebuilds the set as it could have been built on that date: only market versions with
``updated_at`` and ``ingested_at`` at or before ``as_of``, only markets resolved by then, only
snapshots with ``ts`` and ``ingested_at`` at or before ``as_of``. Feast joins features on event
time only, so when a row of a market in the set was published after ``as_of`` with an event time
before it (:func:`late_rows`), features are retrieved from the publication-time view of the
offline store instead (training/asof_view.py): only rows with ``ingested_at <= as_of``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from ingestion.publish import settle
from training import FEATURE_SERVICE

if TYPE_CHECKING:
    from feast import FeatureStore

    from config.settings import Settings

ENTITY_COLUMNS = ["market_id", "ts"]
LABEL = "label"
# Carried beside the features for splitting, slicing and lineage; never model input.
META_COLUMNS = ["market_id", "ts", LABEL, "created_at", "resolved_at", "resolution_date_meta",
                "price_batch_id"]

# A stand-in for Feast (entity_df, feature_service, settings) -> entity_df + features. A custom one
# gets no publication-time view: late rows then leave the set marked as_of_exact=False.
Retriever = Callable[[pd.DataFrame, str, "Settings"], pd.DataFrame]


class TrainingSetError(ValueError):
    """The training set could not be built or failed validation (message says what and where)."""


@dataclass
class TrainingSet:
    frame: pd.DataFrame                # META_COLUMNS + feature columns, sorted by (market_id, ts)
    feature_names: list[str]
    feature_service: str
    as_of: pd.Timestamp
    content_hash: str                  # sha256 of the canonical frame (see content_hash)
    raw_data_hash: str                 # sha256 of the sorted batch ids the rows come from
    batch_ids: list[str]
    validation: dict = field(default_factory=dict)

    @property
    def features(self) -> pd.DataFrame:
        return self.frame[self.feature_names]

    @property
    def labels(self) -> np.ndarray:
        return self.frame[LABEL].to_numpy(dtype=np.int64)

    def summary(self) -> dict:
        f = self.frame
        return {
            "rows": int(len(f)), "markets": int(f["market_id"].nunique()),
            "positive_rate": float(f[LABEL].mean()) if len(f) else None,
            "ts_min": str(f["ts"].min()), "ts_max": str(f["ts"].max()),
            "resolved_at_max": str(f["resolved_at"].max()),
            "as_of": str(self.as_of), "feature_service": self.feature_service,
            "feature_names": self.feature_names, "content_hash": self.content_hash,
            "raw_data_hash": self.raw_data_hash, "n_batches": len(self.batch_ids),
            "missing_fraction": {c: float(f[c].isna().mean()) for c in self.feature_names},
            "validation": self.validation,
        }


# ---------------------------------------------------------------- offline store reading

def read_offline_table(offline_dir: Path, table: str) -> pd.DataFrame:
    """All committed rows of one offline-store table (``<dir>/<table>/month=*/<batch>.parquet``).

    Only files of batches with a commit record in ``_batches/`` are read: a file without one
    is in-flight publishing and must never be read (architecture.md, "Publishing").
    """
    table_dir = Path(offline_dir) / table
    committed = {p.stem for p in (Path(offline_dir) / "_batches").glob("*.json")}
    files = sorted(p for p in table_dir.glob("month=*/*.parquet") if p.stem in committed)
    if not files:
        raise TrainingSetError(f"offline store {offline_dir}: no committed files for table '{table}' "
                               f"(looked in {table_dir}/month=*/ for batches listed in _batches/)")
    return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)


def markets_as_of(markets: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The current version of each market as known at ``as_of`` (newest updated_at, then ingested_at)."""
    known = markets[(markets["updated_at"] <= as_of) & (markets["ingested_at"] <= as_of)]
    known = known.sort_values(["market_id", "updated_at", "ingested_at"], kind="mergesort")
    return known.drop_duplicates("market_id", keep="last").reset_index(drop=True)


def first_resolution_date(markets: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """resolution_date of each market's earliest known version (known from created_at on)."""
    known = markets[markets["ingested_at"] <= as_of].sort_values(["market_id", "updated_at"], kind="mergesort")
    return known.drop_duplicates("market_id", keep="first").set_index("market_id")["resolution_date"]


def build_entity_frame(markets: pd.DataFrame, price_features: pd.DataFrame,
                       as_of: pd.Timestamp) -> pd.DataFrame:
    """Entity rows (market_id, ts) with label and meta, exactly as buildable at ``as_of``."""
    current = markets_as_of(markets, as_of)
    resolved = current[current["resolved_at"].notna() & (current["resolved_at"] <= as_of)
                       & current["outcome"].notna()]
    labels = resolved[["market_id", "outcome", "created_at", "resolved_at"]].rename(columns={"outcome": LABEL})
    snaps = price_features[(price_features["ts"] <= as_of) & (price_features["ingested_at"] <= as_of)]
    # One example per snapshot: a late earlier snapshot makes ingestion append corrected rows with the
    # same (market_id, ts); the newest published by as_of is the one Feast joins (its batch is the lineage).
    snaps = snaps.sort_values(["market_id", "ts", "ingested_at"], kind="mergesort")
    snaps = snaps.drop_duplicates(["market_id", "ts"], keep="last")
    snaps = snaps[["market_id", "ts", "batch_id"]].rename(columns={"batch_id": "price_batch_id"})
    entities = snaps.merge(labels, on="market_id", how="inner", validate="many_to_one")
    entities = entities[entities["ts"] < entities["resolved_at"]].copy()
    entities[LABEL] = entities[LABEL].astype(np.int64)
    entities["resolution_date_meta"] = entities["market_id"].map(first_resolution_date(markets, as_of))
    return entities.sort_values(ENTITY_COLUMNS, kind="mergesort").reset_index(drop=True)


# Offline tables Feast joins features from, with their event-time column.
FEATURE_TABLES = {"price_features": "ts", "poll_features": "ts", "market_info": "event_ts"}
# The ones joined to the entity rows beside price_features (whose batch is each row's price_batch_id).
JOINED_TABLES = ("poll_features", "market_info")


def read_feature_tables(offline_dir: Path, tables=tuple(FEATURE_TABLES)) -> dict[str, pd.DataFrame]:
    """The committed rows of each feature table that has any (a store may have no polls)."""
    out = {}
    for table in tables:
        try:
            out[table] = read_offline_table(offline_dir, table)
        except TrainingSetError:
            continue
    return out


def joined_batch_ids(table: pd.DataFrame, ts_col: str, entities: pd.DataFrame, as_of: pd.Timestamp) -> set[str]:
    """Batch ids of the rows of ``table`` a point-in-time join gives the entity rows: per
    (market_id, ts) the newest row with event time <= ts (newest ingested_at on ties) published by
    ``as_of``. The feature view's TTL is not applied, so a batch whose row was too old to be joined
    may be listed: lineage errs on the side of more batches, never fewer."""
    rows = table[(table["ingested_at"] <= as_of) & table["market_id"].isin(entities["market_id"].unique())]
    if rows.empty:
        return set()
    right = (rows[["market_id", ts_col, "ingested_at", "batch_id"]].rename(columns={ts_col: "ts"})
             .astype({"ts": "datetime64[ns, UTC]"}).sort_values(["ts", "ingested_at"], kind="mergesort"))
    left = (entities[["market_id", "ts"]].astype({"ts": "datetime64[ns, UTC]"})
            .sort_values("ts", kind="mergesort"))
    # backward merge_asof takes the last right row with ts <= the entity ts: the newest ingested_at.
    joined = pd.merge_asof(left, right[["market_id", "ts", "batch_id"]], on="ts", by="market_id",
                           direction="backward")
    return set(joined["batch_id"].dropna().astype(str))


def raw_batch_ids(markets: pd.DataFrame, price_features: pd.DataFrame, entities: pd.DataFrame,
                  as_of: pd.Timestamp, joined_tables: dict[str, pd.DataFrame] | None = None) -> list[str]:
    """Batch ids that the training set's labels, entity rows and (given ``joined_tables``, e.g.
    poll_features / market_info) joined feature rows were read from."""
    current = markets_as_of(markets, as_of)
    used = set(current.loc[current["market_id"].isin(entities["market_id"].unique()), "batch_id"])
    used |= set(entities["price_batch_id"].unique())
    for table, frame in (joined_tables or {}).items():
        used |= joined_batch_ids(frame, FEATURE_TABLES[table], entities, as_of)
    return sorted(str(b) for b in used)


def late_rows(offline_dir: Path, market_ids: set, as_of: pd.Timestamp,
              tables: dict[str, pd.DataFrame] | None = None) -> dict[str, int]:
    """Rows of these markets that Feast's point-in-time join could use for an ``as_of`` rebuild
    although they were published after ``as_of`` (event time <= as_of < ingested_at).

    Feast joins on event time only; when this is non-zero, features are retrieved from the
    publication-time view (training/asof_view.py), which leaves these rows out. ``tables``:
    already-read feature tables (read_feature_tables), else they are read here.
    """
    counts = {}
    tables = read_feature_tables(offline_dir) if tables is None else tables
    for table, ts_col in FEATURE_TABLES.items():
        if table not in tables:
            continue
        frame = tables[table]
        late = frame["market_id"].isin(market_ids) & (frame[ts_col] <= as_of) & (frame["ingested_at"] > as_of)
        counts[table] = int(late.sum())
    return counts


# ---------------------------------------------------------------- validation

def explicit_checks(frame: pd.DataFrame) -> list[dict]:
    """Cheap first-line checks that hold for any training set; each failure names rule and rows."""
    failures: list[dict] = []

    def fail(rule: str, column: str, bad: pd.DataFrame) -> None:
        failures.append({"rule": rule, "column": column, "unexpected_count": int(len(bad)),
                         "examples": bad.head(3).astype(str).to_dict(orient="records")})

    leak = frame[frame["ts"] >= frame["resolved_at"]]
    if len(leak):
        fail("ts < resolved_at (no snapshot at or after resolution)", "ts", leak[["market_id", "ts", "resolved_at"]])
    dup = frame[frame.duplicated(ENTITY_COLUMNS, keep=False)]
    if len(dup):
        fail("(market_id, ts) unique", "market_id,ts", dup[ENTITY_COLUMNS])
    bad_label = frame[~frame[LABEL].isin([0, 1])]
    if len(bad_label):
        fail("label in {0, 1}", LABEL, bad_label[["market_id", LABEL]])
    if "price" in frame.columns:
        bad_price = frame[frame["price"].isna() | (frame["price"] < 0) | (frame["price"] > 1)]
        if len(bad_price):
            fail("price present and in [0, 1]", "price", bad_price[["market_id", "ts", "price"]])
    if frame[LABEL].nunique() < 2:
        failures.append({"rule": "both classes present", "column": LABEL, "unexpected_count": int(len(frame)),
                         "examples": []})
    return failures


def validate_training_set(frame: pd.DataFrame, name: str = "training_set", run_gx: bool = True,
                          settings: "Settings | None" = None) -> dict:
    """Explicit checks, then the GX training-set checkpoint (validation.gate). Raises on failure.

    ``run_gx=False`` skips GX (slow to import) and says so in the result, which is logged
    with the run; the explicit checks always run.
    """
    failures = explicit_checks(frame)
    result: dict = {"explicit_checks": "pass" if not failures else "fail"}
    if failures:
        raise TrainingSetError(f"{name}: training set failed explicit checks: {json.dumps(failures, default=str)}")
    if not run_gx:
        result["gx_checkpoint"] = "skipped (run_gx=False)"
        return result
    from validation.gate import run_training_set_checkpoint  # GX is slow to import: only here

    # The GX suite names the label by its source column, `outcome`.
    gx_frame = frame.rename(columns={LABEL: "outcome"}).astype({"outcome": "Int8"})  # the markets dtype
    gate = run_training_set_checkpoint(gx_frame, name, settings=settings)
    result["gx_checkpoint"] = "pass" if gate.success else "fail"
    result["gx_docs_page"] = getattr(gate, "docs_page", None)
    if not gate.success:
        raise TrainingSetError(f"{name}: GX training-set checkpoint failed: {json.dumps(gate.failures, default=str)}")
    return result


# ---------------------------------------------------------------- hashing

def content_hash(frame: pd.DataFrame) -> str:
    """Deterministic sha256 of a frame: sorted rows, sorted columns, names + dtypes + row hashes."""
    canon = frame.sort_values(ENTITY_COLUMNS, kind="mergesort").reset_index(drop=True)
    canon = canon[sorted(canon.columns)]
    h = hashlib.sha256()
    h.update(json.dumps([[c, str(canon[c].dtype)] for c in canon.columns]).encode())
    h.update(pd.util.hash_pandas_object(canon, index=False).to_numpy().tobytes())
    return h.hexdigest()


def hash_batch_ids(batch_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(batch_ids)).encode()).hexdigest()


# ---------------------------------------------------------------- assembly

def feast_retriever(entity_df: pd.DataFrame, feature_service: str, settings: "Settings",
                    store: "FeatureStore | None" = None) -> pd.DataFrame:
    """Point-in-time features through Feast (features library; row count and order preserved).

    ``store``: a FeatureStore to read instead of the one of ``settings`` (the publication-time view).
    """
    from feast.errors import FeatureServiceNotFoundException

    from features.retrieve import historical_features

    try:
        return historical_features(entity_df, feature_service, settings=settings, store=store)
    except FeatureServiceNotFoundException as exc:
        raise TrainingSetError(f"FeatureService {feature_service!r} is not in the Feast registry "
                               f"({settings.feast_registry_uri}): {exc}. Apply the feature repo that "
                               "defines it (python -m features apply)") from exc


def retrieve_as_of(entity_df: pd.DataFrame, feature_service: str, settings: "Settings", as_of: pd.Timestamp,
                   late: dict[str, int], retriever: Retriever | None = None) -> tuple[pd.DataFrame, dict]:
    """Features for the entity rows as Feast served them at ``as_of``, and how that was ensured.

    With no late row (``late_rows``) the live store gives the same join; otherwise Feast reads the
    publication-time view, which holds only rows with ``ingested_at <= as_of``.
    """
    n_late = sum(late.values())
    if retriever is not None:
        return retriever(entity_df, feature_service, settings), {
            "used": False, "reason": "custom retriever", "late_rows_excluded": 0}
    if not n_late:
        return feast_retriever(entity_df, feature_service, settings), {
            "used": False, "reason": "no late rows", "late_rows_excluded": 0}
    from training.asof_view import publication_time_store

    with publication_time_store(settings, as_of) as (store, view):
        retrieved = feast_retriever(entity_df, feature_service, settings, store=store)
    return retrieved, {"used": True, "late_rows_excluded": n_late, **view.summary()}


def assemble(entities: pd.DataFrame, features: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Join retrieved features back to entity rows (same order and count, checked)."""
    if len(features) != len(entities):
        raise TrainingSetError(f"feature retrieval returned {len(features)} rows for {len(entities)} entity rows")
    feats = features.reset_index(drop=True)
    same_keys = (feats["market_id"].astype(str).to_numpy() == entities["market_id"].astype(str).to_numpy()).all()
    if not same_keys:
        raise TrainingSetError("feature retrieval changed the order of entity rows (market_id mismatch)")
    feature_names = [c for c in feats.columns if c not in ENTITY_COLUMNS and c != "event_timestamp"]
    clash = [c for c in feature_names if c in META_COLUMNS]
    if clash:
        raise TrainingSetError(f"feature names clash with training-set meta columns: {clash}")
    frame = pd.concat([entities.reset_index(drop=True), feats[feature_names]], axis=1)
    return frame, feature_names


def to_utc(value: str | pd.Timestamp | None) -> pd.Timestamp:
    if value is None:
        return pd.Timestamp.now(tz="UTC").floor("us")
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def check_as_of_not_future(as_of: pd.Timestamp, now: pd.Timestamp | None = None) -> None:
    """Refuse an ``as_of`` after now: data ingested later with publication time <= as_of would
    change the set, so a model tagged with it (and ``as_of_exact``) could never be reproduced."""
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    if as_of > now:
        raise TrainingSetError(f"as_of {as_of.isoformat()} is later than now ({now.isoformat()}): a training set "
                               "as of a future time cannot be rebuilt once more data is ingested; "
                               "omit --as-of for now, or give a past time")


def build_training_set(settings: "Settings", as_of: str | pd.Timestamp | None = None,
                       feature_service: str = FEATURE_SERVICE,
                       retriever: Retriever | None = None, run_gx: bool = True) -> TrainingSet:
    """Build, validate and hash the training set from the offline store through the FeatureService."""
    as_of_ts = to_utc(as_of)
    check_as_of_not_future(as_of_ts)
    # Feast's point-in-time join reads every Parquet file, committed or not: a publish that crashed
    # half-way is rolled forward first, so labels and features come from the same, whole batches; and
    # an ingest in progress finishes first, so a rebuild as of the same time reads the same batches.
    settle(settings.offline_store_dir, wait=True)
    markets = read_offline_table(settings.offline_store_dir, "markets")
    prices = read_offline_table(settings.offline_store_dir, "price_features")
    entities = build_entity_frame(markets, prices, as_of_ts)
    if entities.empty:
        raise TrainingSetError(f"no training examples as of {as_of_ts}: no resolved market with snapshots "
                               f"before its resolution in {settings.offline_store_dir}")
    tables = {"price_features": prices, **read_feature_tables(settings.offline_store_dir, JOINED_TABLES)}
    late = late_rows(settings.offline_store_dir, set(entities["market_id"]), as_of_ts, tables)
    retrieved, view = retrieve_as_of(entities[ENTITY_COLUMNS].copy(), feature_service, settings, as_of_ts,
                                     late, retriever)
    frame, feature_names = assemble(entities, retrieved)
    validation = validate_training_set(frame, f"training_set@{as_of_ts.isoformat()}", run_gx=run_gx,
                                       settings=settings)
    batch_ids = raw_batch_ids(markets, prices, entities, as_of_ts,
                              {t: tables[t] for t in JOINED_TABLES if t in tables})
    validation["late_rows_after_as_of"] = late
    validation["publication_time_view"] = view
    validation["as_of_exact"] = view["used"] or not any(late.values())
    return TrainingSet(frame=frame, feature_names=feature_names, feature_service=feature_service,
                       as_of=as_of_ts, content_hash=content_hash(frame),
                       raw_data_hash=hash_batch_ids(batch_ids), batch_ids=batch_ids, validation=validation)


def training_set_from_frame(frame: pd.DataFrame, feature_names: list[str], as_of: str | pd.Timestamp,
                            feature_service: str = FEATURE_SERVICE, run_gx: bool = True,
                            settings: "Settings | None" = None) -> TrainingSet:
    """A validated TrainingSet from an already-assembled frame (backtest slices, tests)."""
    frame = frame.sort_values(ENTITY_COLUMNS, kind="mergesort").reset_index(drop=True)
    validation = validate_training_set(frame, run_gx=run_gx, settings=settings)
    batch_ids = sorted(frame["price_batch_id"].astype(str).unique()) if "price_batch_id" in frame else []
    return TrainingSet(frame=frame, feature_names=list(feature_names), feature_service=feature_service,
                       as_of=to_utc(as_of), content_hash=content_hash(frame),
                       raw_data_hash=hash_batch_ids(batch_ids), batch_ids=batch_ids, validation=validation)

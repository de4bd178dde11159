"""Scoring: one online read and one model call for a whole request, then the degradation chain.

champion -> fallback model (previous champion) -> market price passed through -> 503 with the reason.
In an A/B split (ServingOptions.ab_share), markets of group B try the challenger before that chain.
Never a made-up probability: a market with no model output and no price is an error, not 0.5.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from time import perf_counter
from typing import Any, Sequence

import numpy as np
import pandas as pd

from serving.features_source import NON_FINITE, PRICE_FEATURE, FeastFeatureSource, OnlineFeatures
from serving.metrics import ServingMetrics
from serving.models import ModelManager, ModelState
from serving.options import ServingOptions
from serving.prediction_log import FEATURE_PREFIX, PredictionLogWriter
from serving.schemas import PredictRequest

log = logging.getLogger(__name__)

DAYS_TO_RESOLUTION = "days_to_resolution"
LOGGED_FIELDS = ("request_id", "market_id", "model_version", "model_role", "source", "probability", "latency_ms",
                 "ab_group")


def ab_group(market_id: str, share: float, salt: str) -> str:
    """"B" for a `share` of markets, else "A". A hash of (salt, market_id): the same market gets the same
    group on every request, in every worker and after restarts, so its forecasts come from one model."""
    digest = hashlib.sha256(f"{salt}:{market_id}".encode()).digest()
    return "B" if int.from_bytes(digest[:8], "big") < share * 2.0**64 else "A"


def _outcome_text(outcome: int | None) -> str:
    return "" if outcome is None else f" with outcome {'YES' if outcome == 1 else 'NO'} ({outcome})"


class ServiceUnavailable(RuntimeError):
    """The whole request cannot be served (no model, online store down); message says why."""


@dataclass
class ItemError:
    index: int
    market_id: str
    status_code: int
    detail: str


@dataclass
class Scored:
    predictions: list[tuple[int, dict[str, Any]]]  # (request index, Prediction body)
    errors: list[ItemError]
    # For Predictor.commit (log rows, metrics, shadow scoring) once the response has been built.
    feats: OnlineFeatures | None = None
    state: ModelState | None = None
    answered_by_champion: list[int] = field(default_factory=list)
    committed: bool = False


def _rows(columns: dict[str, list], rows: list[int], n: int) -> dict[str, list]:
    """The given rows of column lists (the columns themselves when that is every row)."""
    if len(rows) == n:
        return columns
    return {name: [column[i] for i in rows] for name, column in columns.items()}


def _try_model(model, columns: dict[str, list], n: int) -> tuple[np.ndarray, str | None]:
    """Per-row probabilities (NaN where invalid) and an error text if the call failed or some rows are invalid."""
    try:
        p = np.asarray(model.predict(columns), dtype=float).reshape(-1)
        if p.shape[0] != n:
            raise ValueError(f"returned {p.shape[0]} values for {n} rows")
    except Exception as exc:  # noqa: BLE001 - any model failure moves down the chain, with its reason
        log.warning("model v%s failed: %s", model.version, exc)
        return np.full(n, np.nan), f"model v{model.version} failed: {type(exc).__name__}: {exc}"
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        p = np.where(bad, np.nan, p)
        return p, f"model v{model.version} returned {int(bad.sum())} invalid probability(ies)"
    return p, None


def _py(value: Any) -> Any:
    """A JSON-safe Python value: None for missing, NaN and +/-inf (features_source reports a withheld
    non-finite value as NON_FINITE; this is the last guard so no response can fail to encode)."""
    if value is None:
        return None
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return None if pd.isna(value) else value.isoformat()
    return value


class Predictor:
    def __init__(self, features: FeastFeatureSource, models: ModelManager, metrics: ServingMetrics,
                 log_writer: PredictionLogWriter, options: ServingOptions):
        self.features = features
        self.models = models
        self.metrics = metrics
        self.log_writer = log_writer
        self.options = options
        self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._children: dict[tuple[int, str], Any] = {}

    def close(self) -> None:
        self._shadow_pool.shutdown(wait=True)

    def score(self, items: Sequence[PredictRequest]) -> Scored:
        started = perf_counter()
        state: ModelState = self.models.state  # read once: a swap mid-request cannot affect this request
        champion = state.champion
        if champion is None:
            raise ServiceUnavailable("no champion model is loaded"
                                     + (f": {state.last_error}" if state.last_error else ""))
        ids = [item.market_id for item in items]
        prices = [item.market_price for item in items]
        now = datetime.now(timezone.utc)
        try:
            feats = self.features.read(ids, champion.feature_service, now, prices)
            unknown = [i for i in range(len(items)) if not feats.known[i]]
            resolved = self.features.resolutions([ids[i] for i in unknown]) if unknown else {}
        except Exception:
            self.metrics.online_errors.inc()
            raise
        n = len(items)
        errors: list[ItemError] = []
        known = [i for i in range(n) if feats.known[i]]
        for i in unknown:
            if ids[i] in resolved:
                resolved_at, outcome = resolved[ids[i]]
                errors.append(ItemError(i, ids[i], 410, f"market {ids[i]!r} resolved at {resolved_at.isoformat()}"
                                                        f"{_outcome_text(outcome)}: resolved markets get no forecast"))
            else:
                errors.append(ItemError(i, ids[i], 404, f"market {ids[i]!r} is unknown to the online feature store "
                                                        f"(no stored feature of FeatureService "
                                                        f"{champion.feature_service!r})"))
        probability = np.full(n, np.nan)
        source: list[str | None] = [None] * n
        used_model: list[Any] = [None] * n
        reasons: list[list[str]] = [[] for _ in range(n)]
        # A/B split only while a challenger is loaded; group B tries the challenger first, then the chain.
        challenger = state.challenger if self.options.ab_share > 0 else None
        groups = [ab_group(m, self.options.ab_share, self.options.ab_salt) if challenger is not None else None
                  for m in ids]
        if known:
            outputs = (feats, probability, source, used_model, reasons)
            group_b = [i for i in known if groups[i] == "B"]
            if group_b:
                self._score_rows(challenger, "model", group_b, *outputs)
            pending = [i for i in known if source[i] is None]
            if pending:
                err = self._score_rows(champion, "model", pending, *outputs)
                if err is None:
                    self.models.sample_columns = _rows(feats.values, pending[:5], n)
            self._fallback_model(state, feats, known, probability, source, used_model, reasons)
            self._market_price(feats, known, probability, source, reasons)
        latency_ms = (perf_counter() - started) * 1000.0
        predictions: list[tuple[int, dict[str, Any]]] = []
        # Column lists once per request: per-cell DataFrame access dominated a 100-market batch.
        columns = {f: [_py(v) for v in feats.values[f]] for f in feats.plan.feature_names}
        statuses = feats.status
        ttls = {f: feats.plan.ttl_of(f) for f in feats.plan.feature_names}
        for i in known:
            if source[i] is None:
                detail = "; ".join(reasons[i]) + f"; and market {ids[i]!r} has no market price to pass through"
                errors.append(ItemError(i, ids[i], 503, detail))
                continue
            role = ("champion" if used_model[i] is champion else
                    "challenger" if used_model[i] is not None and used_model[i] is challenger else "fallback")
            predictions.append((i, self._prediction(i, ids[i], float(probability[i]), source[i], used_model[i], role,
                                                    groups[i], champion.feature_service, feats, columns, statuses,
                                                    ttls, reasons[i], latency_ms)))
        errors.sort(key=lambda e: e.index)
        answered_by_champion = [i for i in known if used_model[i] is champion]
        return Scored(predictions, errors, feats, state, answered_by_champion)

    def commit(self, scored: Scored) -> None:
        """Log and count what was answered, and run the shadow challenger: called once the response
        body exists, so the prediction log never holds a prediction no client received."""
        if scored.committed or scored.feats is None:
            return
        scored.committed = True
        feats, state = scored.feats, scored.state
        self._record(scored.predictions, feats)
        n_non_finite = {}
        for row in feats.non_finite:
            for name in row:
                n_non_finite[name] = n_non_finite.get(name, 0) + 1
        for name, n in n_non_finite.items():
            self._child(self.metrics.non_finite_features, name).inc(n)
        if state.challenger is not None and scored.answered_by_champion and self.options.shadow_share > 0:
            self._shadow(state, feats, scored.answered_by_champion, feats.market_ids)

    # ------------------------------------------------------------------ degradation chain

    @staticmethod
    def _assign(rows, p, label, model, probability, source, used_model, reasons, err) -> None:
        for k, i in enumerate(rows):
            if not math.isnan(p[k]):
                probability[i], source[i], used_model[i] = p[k], label, model
            elif err:
                reasons[i].append(err)

    def _score_rows(self, model, label: str, rows: list[int], feats: OnlineFeatures, probability, source,
                    used_model, reasons) -> str | None:
        """Score `rows` with `model` (one call); a model trained on another FeatureService gets its own read."""
        if model.feature_service == feats.plan.name:
            columns = _rows(feats.values, rows, len(feats.market_ids))
        else:
            try:
                other = self.features.read([feats.market_ids[i] for i in rows], model.feature_service,
                                           feats.request_ts, [feats.prices[i] for i in rows])
                columns = other.values
            except Exception as exc:  # noqa: BLE001
                err = f"model v{model.version} features unavailable: {exc}"
                for i in rows:
                    reasons[i].append(err)
                return err
        p, err = _try_model(model, columns, len(rows))
        self._assign(rows, p, label, model, probability, source, used_model, reasons, err)
        return err

    def _fallback_model(self, state: ModelState, feats: OnlineFeatures, known, probability, source, used_model,
                        reasons) -> None:
        rows = [i for i in known if source[i] is None]
        if not rows:
            return
        fallback = state.fallback
        if fallback is None:
            for i in rows:
                reasons[i].append("no fallback model is loaded")
            return
        self._score_rows(fallback, "fallback_model", rows, feats, probability, source, used_model, reasons)
        for i in rows:
            if source[i] == "fallback_model":
                self.metrics.fallbacks.labels(source="fallback_model", reason="champion_failed").inc()

    def _market_price(self, feats: OnlineFeatures, known, probability, source, reasons) -> None:
        if PRICE_FEATURE not in feats.values:
            return
        for i in known:
            if source[i] is not None:
                continue
            price = _py(feats.values[PRICE_FEATURE][i])
            if price is not None and 0.0 <= float(price) <= 1.0:
                probability[i], source[i] = float(price), "market_price"
                self.metrics.fallbacks.labels(source="market_price", reason="models_failed").inc()

    # ------------------------------------------------------------------ response, metrics, log

    def _prediction(self, i: int, market_id: str, p: float, source: str, model, role: str, group: str | None,
                    feature_service: str, feats: OnlineFeatures, columns: dict[str, list], statuses: dict[str, list],
                    ttls: dict[str, float | None], reasons: list[str], latency_ms: float) -> dict[str, Any]:
        """One `Prediction` (serving/schemas.py) as a plain dict: building 17 pydantic FeatureInfo objects
        per market profiled at ~20% of a 100-market batch. The schema tests validate these bodies."""
        warnings, infos, overridden = [], {}, feats.overridden[i]
        for f in feats.plan.feature_names:
            status = "REQUEST" if f in overridden else statuses[f][i]
            ttl = ttls[f]
            infos[f] = {"value": columns[f][i], "status": status, "age_seconds": feats.age(i, f), "ttl_seconds": ttl}
            if status == "OUTSIDE_MAX_AGE":
                warnings.append(f"feature {f!r} is older than its TTL ({ttl:.0f} s) at request time: "
                                f"value withheld, imputed by the model")
            elif status == NON_FINITE:
                warnings.append(f"feature {f!r} is not a finite number ({feats.non_finite[i].get(f, 'inf')}): "
                                f"value withheld, imputed by the model")
        days = columns[DAYS_TO_RESOLUTION][i] if DAYS_TO_RESOLUTION in columns else None
        market_status = "open"
        if days is None:  # no (fresh) resolution date: "open" would be a claim nothing supports
            market_status = "unknown"
            warnings.append(f"market {market_id!r} has no {DAYS_TO_RESOLUTION!r} value: whether it is past its "
                            "scheduled resolution date is unknown")
        elif float(days) <= 0.0:
            market_status = "past_resolution_date"
            warnings.append(f"market {market_id!r} is past its scheduled resolution date: it may already be "
                            "resolved, and the outcome, not this forecast, then decides")
        if reasons:  # something earlier in the chain failed (e.g. the challenger of A/B group B)
            warnings.append(f"served by {source} ({role}): " + "; ".join(reasons))
        return {"request_id": uuid.uuid4().hex, "market_id": market_id, "probability": p, "source": source,
                "model_version": model.version if model is not None else None,
                "model_role": role, "feature_service": feature_service, "ab_group": group,
                "market_status": market_status,
                "features": infos, "warnings": warnings, "latency_ms": round(latency_ms, 3)}

    def _record(self, predictions: list[tuple[int, dict[str, Any]]], feats: OnlineFeatures) -> None:
        now = datetime.now(timezone.utc)
        by_source: dict[str, int] = {}
        for i, pred in predictions:
            by_source[pred["source"]] = by_source.get(pred["source"], 0) + 1
            row = {"logged_at": now, **{k: pred[k] for k in LOGGED_FIELDS}}
            for view, ages in feats.view_ages.items():
                if ages[i] is not None:
                    self._child(self.metrics.feature_age, view).observe(ages[i])
            for name, info in pred["features"].items():
                row[FEATURE_PREFIX + name] = info["value"]
                if info["status"] == "OUTSIDE_MAX_AGE":
                    self._child(self.metrics.stale_features, name).inc()
            self.log_writer.submit(row)
            if pred["ab_group"] is not None:
                self.metrics.ab_predictions.labels(group=pred["ab_group"], source=pred["source"]).inc()
        for source, n in by_source.items():
            self.metrics.predictions.labels(source=source).inc(n)

    def _child(self, metric, label: str):
        # labels() takes a lock and builds a key on every call: hundreds per 100-market batch. Keep the children.
        key = (id(metric), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(label)
        return child

    def _shadow(self, state: ModelState, feats: OnlineFeatures, known: list[int], ids: list[str]) -> None:
        challenger = state.challenger
        if random.random() >= self.options.shadow_share:
            return
        if challenger.feature_service != feats.plan.name:
            self.metrics.shadow.labels(outcome="skipped_other_feature_service").inc()
            return
        columns = _rows(feats.values, known, len(ids))
        market_ids = [ids[i] for i in known]

        def run() -> None:
            started = perf_counter()
            p, err = _try_model(challenger, columns, len(market_ids))
            latency_ms = (perf_counter() - started) * 1000.0
            now = datetime.now(timezone.utc)
            for k, market_id in enumerate(market_ids):
                if math.isnan(p[k]):
                    self.metrics.shadow.labels(outcome="failed").inc()
                    continue
                row = {"logged_at": now, "request_id": uuid.uuid4().hex, "market_id": market_id,
                       "model_version": challenger.version, "model_role": "challenger_shadow", "source": "model",
                       "probability": float(p[k]), "latency_ms": latency_ms, "ab_group": None}
                for name in feats.plan.feature_names:
                    row[FEATURE_PREFIX + name] = _py(columns[name][k])
                self.log_writer.submit(row)
                self.metrics.shadow.labels(outcome="logged").inc()

        self._shadow_pool.submit(run)

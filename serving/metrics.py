"""Prometheus metrics of one app instance (own registry, so several apps in one process don't collide)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
AGE_BUCKETS = (60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 21 * 86400, 90 * 86400, 365 * 86400)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pm_serving_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("pm_serving_request_latency_seconds", "Request latency by endpoint.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("pm_serving_predictions", "Predictions returned, by source.", ["source"],
                                   registry=r)
        self.fallbacks = Counter("pm_serving_fallbacks", "Predictions not made by the champion, by reason.",
                                 ["source", "reason"], registry=r)
        # Per stored view, not per feature: a view's features share one event time, and 17 observations
        # per prediction were the largest cost of a 100-market batch after Feast's read.
        self.feature_age = Histogram("pm_serving_feature_age_seconds",
                                     "Age of served feature values, per stored feature view.",
                                     ["view"], buckets=AGE_BUCKETS, registry=r)
        self.stale_features = Counter("pm_serving_stale_features", "Feature values older than their TTL.",
                                      ["feature"], registry=r)
        self.non_finite_features = Counter("pm_serving_non_finite_features",
                                           "Feature values withheld as +/-infinity (stored, or computed on demand).",
                                           ["feature"], registry=r)
        self.ab_predictions = Counter("pm_serving_ab_predictions", "Predictions of markets in an A/B split, by group "
                                      "(A: champion, B: challenger) and the source that answered.",
                                      ["group", "source"], registry=r)
        self.online_errors = Counter("pm_serving_online_store_errors", "Failed online-store reads.", registry=r)
        self.shadow = Counter("pm_serving_shadow_predictions", "Challenger shadow predictions, by outcome.",
                              ["outcome"], registry=r)
        self.model_info = Gauge("pm_serving_model_info", "1 for each served model version, by role.",
                                ["role", "version", "feature_service"], registry=r)
        self.champion_refused = Gauge("pm_serving_champion_refused",
                                      "1 while the registry's champion version is refused (artifact sha256 or "
                                      "checks failed) and the previous models keep serving; absent otherwise.",
                                      ["version"], registry=r)

    def add_log_gauges(self, dropped: Callable[[], int], queued: Callable[[], int],
                       write_errors: Callable[[], int]) -> None:
        self.registry.register(_CallbackCollector({
            "pm_serving_prediction_log_dropped_rows": ("Prediction log rows dropped (queue full).", dropped),
            "pm_serving_prediction_log_queued_rows": ("Prediction log rows waiting to be written.", queued),
            "pm_serving_prediction_log_write_errors": ("Failed prediction log file writes.", write_errors),
        }))

    def set_models(self, roles: dict[str, tuple[str, str] | None]) -> None:
        self.model_info.clear()
        for role, model in roles.items():
            if model is not None:
                self.model_info.labels(role=role, version=model[0], feature_service=model[1]).set(1)

    def set_champion_refused(self, version: str | None) -> None:
        self.champion_refused.clear()
        if version is not None:
            self.champion_refused.labels(version=version).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _CallbackCollector:
    def __init__(self, gauges: dict[str, tuple[str, Callable[[], int]]]):
        self.gauges = gauges

    def collect(self):
        for name, (doc, fn) in self.gauges.items():
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], float(fn()))
            yield family

"""Rebuild a registered model from its lineage and check it predicts the same.

The training set is rebuilt with the version's ``as_of`` and FeatureService and must hash to
the recorded ``training_set_hash``; the model is refit with the recorded training config and
seed. HistGradientBoosting with a fixed ``random_state`` and the same rows in the same order is
deterministic, so predictions are expected bit-equal; the check allows ``atol`` (1e-12) only
for floating-point summation order across thread counts, and reports which one held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from training.data import TrainingSet

if TYPE_CHECKING:
    from config.settings import Settings

ATOL = 1e-12


class ReproduceError(RuntimeError):
    """The model could not be reproduced (message says which lineage fact differed)."""


@dataclass
class ReproduceResult:
    version: str
    training_set_hash: str
    rows_compared: int
    max_abs_diff: float
    bit_equal: bool
    run_id: str

    @property
    def reproduced(self) -> bool:
        return self.max_abs_diff <= ATOL

    def to_text(self) -> str:
        verdict = ("bit-equal" if self.bit_equal else f"within {ATOL}") if self.reproduced else "DIFFERENT"
        return (f"model v{self.version}: training set {self.training_set_hash[:16]} rebuilt identically; "
                f"predictions on {self.rows_compared} rows {verdict} (max |diff| = {self.max_abs_diff:.3g}); "
                f"run {self.run_id}")


def reproduce(settings: "Settings", version: str | int, name: str | None = None,
              training_set: TrainingSet | None = None, run_gx: bool = True) -> ReproduceResult:
    """Rebuild training set + model of ``version``; compare predictions with the registered model."""
    import mlflow

    from training.data import build_training_set
    from training.pipeline import fit_model, predict_proba
    from training.registry import load_verified_model, resolve_version
    from training.split import split_by_resolution
    from training.tracking import configure_mlflow
    from training.train import TrainConfig

    name = name or settings.model_name
    tags = dict(resolve_version(settings, name, version).tags)
    for key in ("as_of", "feature_service", "training_set_hash", "training_config"):
        if key not in tags:
            raise ReproduceError(f"model '{name}' v{version}: lineage tag '{key}' missing; cannot reproduce")
    config = TrainConfig.from_json(tags["training_config"])
    registered = load_verified_model(name, version, settings)
    configure_mlflow(settings)
    with mlflow.start_run(run_name=f"reproduce-v{version}") as run:
        mlflow.set_tags({"pm.kind": "reproduce", "pm.reproduces_version": str(version)})
        ts = training_set or build_training_set(settings, tags["as_of"], tags["feature_service"], run_gx=run_gx)
        if ts.content_hash != tags["training_set_hash"]:
            raise ReproduceError(
                f"model '{name}' v{version}: rebuilt training set hashes to {ts.content_hash}, registered "
                f"training_set_hash is {tags['training_set_hash']} (as_of {tags['as_of']}): the offline store "
                "no longer holds the same data as of that date")
        split = split_by_resolution(ts.frame, config.valid_fraction)
        model = fit_model(config.spec, split.train, ts.feature_names)
        rebuilt = predict_proba(model, ts.frame, ts.feature_names)
        original = registered.predict(ts.frame)
        diff = float(np.max(np.abs(rebuilt - original))) if len(rebuilt) else 0.0
        result = ReproduceResult(version=str(version), training_set_hash=ts.content_hash,
                                 rows_compared=len(rebuilt), max_abs_diff=diff,
                                 bit_equal=bool(np.array_equal(rebuilt, original)), run_id=run.info.run_id)
        mlflow.log_metrics({"max_abs_diff": diff, "bit_equal": float(result.bit_equal),
                            "rows_compared": float(len(rebuilt))})
        if not result.reproduced:  # raised inside the run, so it ends FAILED like a hash mismatch
            raise ReproduceError(
                f"model '{name}' v{version}: retrained predictions differ by up to {diff:.3g} (> {ATOL})")
    return result

"""Hyperparameter search: grid or random over a configurable space, scored by market-grouped CV.

Runs inside the caller's MLflow run (the parent) and opens one nested child run per trial with
its params and CV metrics. Scoring uses only the training part of the resolution-time split
(folds grouped by market), so the validation markets stay unseen until the final evaluation.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.pipeline import ModelSpec

if TYPE_CHECKING:
    from training.data import TrainingSet
    from training.train import TrainConfig

DEFAULT_SPACE: dict[str, list] = {
    "learning_rate": [0.03, 0.1],
    "max_leaf_nodes": [7, 15],
    "min_samples_leaf": [50, 150],
}


def load_space(path: Path | None) -> dict[str, list]:
    """A search space from a JSON file ``{"param": [values, ...]}``, or the default."""
    if path is None:
        return DEFAULT_SPACE
    space = json.loads(Path(path).read_text())
    if not isinstance(space, dict) or not all(isinstance(v, list) and v for v in space.values()):
        raise ValueError(f"{path}: a search space is a JSON object of non-empty lists, got {space!r}")
    return space


def check_space(space: dict[str, list], spec: ModelSpec) -> None:
    """Refuse a space naming a param the spec's classifier does not have, before any fitting
    (sklearn would only fail in the first trial's fit, after the training set was built)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    classifiers = {"hgb": HistGradientBoostingClassifier, "logreg": LogisticRegression}
    if spec.kind not in classifiers:
        raise ValueError(f"unknown model kind {spec.kind!r} (hgb | logreg)")
    allowed = set(classifiers[spec.kind]().get_params())
    if spec.kind == "hgb":
        allowed.discard("random_state")  # set from the spec's seed
    unknown = sorted(set(space) - allowed)
    if unknown:
        raise ValueError(f"search space: unknown {spec.kind} hyperparameter(s) {unknown}; "
                         f"allowed: {sorted(allowed)}")


def candidates(space: dict[str, list], strategy: str, n_trials: int, seed: int) -> list[dict]:
    grid = [dict(zip(space, values)) for values in itertools.product(*space.values())]
    if strategy == "grid":
        return grid
    if strategy == "random":
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(grid), size=min(n_trials, len(grid)), replace=False)
        return [grid[i] for i in sorted(picks)]
    raise ValueError(f"unknown tuning strategy {strategy!r} (grid | random)")


def cv_score(spec: ModelSpec, frame, feature_names: list[str], n_folds: int) -> dict[str, float]:
    """Mean Brier / ECE over market-grouped folds."""
    from training.evaluate import brier, ece
    from training.pipeline import fit_model, predict_proba
    from training.split import market_group_folds

    briers, eces = [], []
    for train_idx, test_idx in market_group_folds(frame, n_folds, spec.seed):
        train, test = frame.iloc[train_idx], frame.iloc[test_idx]
        model = fit_model(spec, train, feature_names)
        p = predict_proba(model, test, feature_names)
        briers.append(brier(test["label"].to_numpy(), p))
        eces.append(ece(test["label"].to_numpy(), p))
    return {"cv_brier": float(np.mean(briers)), "cv_brier_std": float(np.std(briers)), "cv_ece": float(np.mean(eces))}


def tune(ts: "TrainingSet", config: "TrainConfig", strategy: str = "grid", n_trials: int = 6, seed: int = 0,
         space: dict[str, list] | None = None, n_folds: int = 3) -> "TrainConfig":
    """Best config by CV Brier; one nested MLflow run per trial. Must be called inside a run."""
    import mlflow

    from training.split import split_by_resolution

    if mlflow.active_run() is None:
        raise RuntimeError("tune() logs nested trial runs and must run inside an MLflow parent run")
    space = space or DEFAULT_SPACE
    check_space(space, config.spec)
    train = split_by_resolution(ts.frame, config.valid_fraction).train
    results = []
    for i, params in enumerate(candidates(space, strategy, n_trials, seed)):
        spec = replace(config.spec, params={**config.spec.params, **params})
        with mlflow.start_run(run_name=f"trial-{i:03d}", nested=True):
            mlflow.set_tags({"pm.kind": "tuning_trial", "pm.strategy": strategy})
            mlflow.log_params(spec.as_params())
            scores = cv_score(spec, train, ts.feature_names, n_folds)
            mlflow.log_metrics(scores)
        results.append((scores["cv_brier"], i, spec))
    best_brier, best_i, best_spec = min(results, key=lambda r: (r[0], r[1]))
    mlflow.log_metrics({"tune_best_cv_brier": best_brier, "tune_trials": float(len(results))})
    mlflow.set_tag("pm.tune_best_trial", f"trial-{best_i:03d}")
    return replace(config, spec=best_spec)

"""Model pipelines: preprocessing + classifier (+ calibration), and the baselines.

Input is the FeatureService frame (feature names as columns). Numeric columns are imputed and
scaled, the low-cardinality categoricals one-hot encoded; text and timestamps are dropped.
The only domain transformer is ``training.transformers.PriceLogOdds`` (log-odds of the market
price and its gap to the poll average), which is not computed upstream.

Models are saved with skops: every class here must be listed in :data:`SKOPS_TRUSTED_TYPES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

CATEGORICAL = ["event_type", "platform"]
SKOPS_TRUSTED_TYPES = ["training.transformers.PriceLogOdds"]


@dataclass
class ModelSpec:
    """What to fit. ``params`` go to the classifier (HistGradientBoosting or LogisticRegression)."""

    kind: str = "hgb"                     # hgb | logreg
    params: dict = field(default_factory=dict)
    calibration: str | None = "isotonic"  # isotonic | sigmoid | None
    calibration_folds: int = 3
    seed: int = 0
    # Weight rows 1 / (snapshots of their market): one long market must not outweigh many short
    # ones, since all its rows share one outcome (the effective sample size is the market count).
    market_weighting: bool = True
    # Fit on at most this many evenly spaced snapshots per market (None: all). Long markets
    # have hundreds of near-duplicate rows that let trees isolate one market and learn its outcome.
    max_rows_per_market: int | None = 10
    # Put the code's default classifier params (DEFAULT_PARAMS) under ``params``. A spec read back
    # from a recorded training config has False: its params are already the complete effective
    # set, so a later change of the code defaults cannot change a reproduced model.
    merge_defaults: bool = True

    def effective_params(self) -> dict:
        """The classifier's keyword arguments: the code defaults of ``kind`` overridden by ``params``."""
        if self.kind not in DEFAULT_PARAMS:
            raise ValueError(f"unknown model kind {self.kind!r} (hgb | logreg)")
        return {**(DEFAULT_PARAMS[self.kind] if self.merge_defaults else {}), **self.params}

    def as_params(self) -> dict:
        out = {"model.kind": self.kind, "model.calibration": str(self.calibration),
               "model.calibration_folds": self.calibration_folds, "seed": self.seed,
               "model.market_weighting": self.market_weighting,
               "model.max_rows_per_market": str(self.max_rows_per_market)}
        # The effective params, not only the overrides: the run must say what was fitted.
        out.update({f"model.{k}": v for k, v in sorted(self.effective_params().items())})
        return out


# Strongly regularised: snapshots of one market share one outcome, so the effective sample size
# is the number of markets, not rows.
DEFAULT_HGB_PARAMS = {"max_iter": 100, "learning_rate": 0.05, "max_leaf_nodes": 7,
                      "min_samples_leaf": 100, "l2_regularization": 1.0}
DEFAULT_LOGREG_PARAMS = {"C": 1.0, "max_iter": 1000}
DEFAULT_PARAMS = {"hgb": DEFAULT_HGB_PARAMS, "logreg": DEFAULT_LOGREG_PARAMS}


def split_columns(feature_names: list[str], frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, categorical) model inputs among the FeatureService features."""
    categorical = [c for c in feature_names if c in CATEGORICAL]
    numeric = [c for c in feature_names if c not in categorical and pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c])]
    if "price" not in numeric:
        raise ValueError(f"the feature set must contain a numeric 'price' column; got {feature_names}")
    return numeric, categorical


def build_estimator(spec: ModelSpec, numeric: list[str], categorical: list[str], cv=None):
    """Unfitted sklearn Pipeline: PriceLogOdds -> ColumnTransformer -> classifier [-> calibration]."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from training.transformers import DERIVED, PriceLogOdds

    numeric_all = numeric + DERIVED
    numeric_steps = Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True,
                                                       keep_empty_features=True)),
                              ("scale", StandardScaler())])
    categorical_steps = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                                  ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))])
    preprocess = ColumnTransformer([("numeric", numeric_steps, numeric_all),
                                    ("categorical", categorical_steps, categorical)],
                                   remainder="drop", verbose_feature_names_out=False)
    params = spec.effective_params()  # raises on an unknown kind
    if spec.kind == "hgb":
        classifier = HistGradientBoostingClassifier(random_state=spec.seed, **params)
    else:
        classifier = LogisticRegression(**params)
    if spec.calibration:
        classifier = CalibratedClassifierCV(classifier, method=spec.calibration, cv=cv)
    return Pipeline([("domain", PriceLogOdds()), ("preprocess", preprocess), ("classifier", classifier)])


def fit_model(spec: ModelSpec, train: pd.DataFrame, feature_names: list[str]):
    """Fit ``spec`` on ``train``; calibration folds are grouped by market (no leakage across folds)."""
    from training.split import market_group_folds

    if spec.max_rows_per_market:
        train = thin_per_market(train, spec.max_rows_per_market)
    numeric, categorical = split_columns(feature_names, train)
    cv = market_group_folds(train, spec.calibration_folds, spec.seed) if spec.calibration else None
    estimator = build_estimator(spec, numeric, categorical, cv=cv)
    fit_params = {}
    if spec.market_weighting:
        fit_params["classifier__sample_weight"] = market_weights(train)
    estimator.fit(train[feature_names], train["label"].to_numpy(), **fit_params)
    return estimator


def thin_per_market(frame: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    """At most ``max_rows`` evenly spaced rows (by ts order) of each market; deterministic."""
    ordered = frame.sort_values(["market_id", "ts"], kind="mergesort")
    position = ordered.groupby("market_id").cumcount().to_numpy()
    size = ordered.groupby("market_id")["market_id"].transform("size").to_numpy()
    step = np.maximum(size / max_rows, 1.0)
    keep = (np.floor(position / step) != np.floor((position - 1) / step)) | (position == 0)
    return ordered[keep].reset_index(drop=True)


def market_weights(frame: pd.DataFrame) -> np.ndarray:
    """1 / rows of the row's market, scaled to mean 1."""
    counts = frame.groupby("market_id")["market_id"].transform("size").to_numpy(dtype=float)
    weights = 1.0 / counts
    return weights * (len(weights) / weights.sum())


def predict_proba(model, frame: pd.DataFrame, feature_names: list[str]) -> np.ndarray:
    return model.predict_proba(frame[feature_names])[:, 1]


def market_price_forecast(frame: pd.DataFrame) -> np.ndarray:
    """The baseline every model must beat: the market price read as a probability."""
    return frame["price"].astype(float).to_numpy()

"""The champion's fitted pipeline re-expressed as a few numpy array operations, for request latency.

Why: sklearn's ``predict_proba`` on one row of the calibrated gradient-boosted pipeline took ~20 ms
here (profiled: 300 per-tree Cython calls of ~70 us each, 3 calibration folds x 100 iterations,
plus input validation in every step), more than the whole latency budget of ``/predict``. The
arithmetic itself is tiny: impute, scale, one-hot, walk ~300 trees of depth <= 6, interpolate.

What: :func:`compile_pipeline` reads the *fitted* parameters out of the loaded (sha256-checked)
pipeline and evaluates them with the same floating-point operations in the same order (trees are
summed sequentially from the baseline, as sklearn does; calibrators are sklearn's own objects), so
the result is bit-equal to ``pipeline.predict_proba`` in practice. It is never trusted on that
argument alone: :func:`verify` compares it with the pipeline on probe rows (imputation edges,
missing values, unknown categories, extreme prices) and on served rows, and serving falls back to
the sklearn pipeline if anything differs by more than ``TOLERANCE`` or the pipeline has a step this
module does not know (the model is then slower, never different).

Supported shape (training.pipeline.build_estimator): PriceLogOdds -> ColumnTransformer(numeric:
SimpleImputer(+indicator) -> StandardScaler; categorical: SimpleImputer(constant) ->
OneHotEncoder(ignore unknown)) -> HistGradientBoosting or LogisticRegression, optionally inside
CalibratedClassifierCV (isotonic or sigmoid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

TOLERANCE = 1e-12


class UnsupportedPipeline(ValueError):
    """The fitted pipeline has a step or a setting this compiler does not reproduce (message says which)."""


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise UnsupportedPipeline(what)


# ---------------------------------------------------------------------------- preprocessing

@dataclass(frozen=True)
class _Preprocess:
    input_names: list[str]          # the pipeline's input columns (its feature_names_in_)
    clip: float                     # PriceLogOdds clip
    has_poll: bool                  # poll_average among the inputs (else poll_gap is NaN)
    numeric: list[str]              # numeric block columns, in order (inputs + derived)
    fill: np.ndarray                # imputer statistics per numeric column
    indicator: np.ndarray           # indices (into numeric) whose missing indicator is appended
    mean: np.ndarray | None         # scaler mean per numeric output column (None: with_mean=False)
    scale: np.ndarray | None        # scaler scale per numeric output column (None: with_std=False)
    categorical: list[str]
    cat_fill: Any                   # constant the categorical imputer fills in
    categories: list[np.ndarray]    # one-hot categories per categorical column

    def transform(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        n = len(columns[self.input_names[0]])
        raw: dict[str, np.ndarray] = {}
        for name in self.numeric:
            if name == "price_logit":
                p = np.clip(raw["price"] if "price" in raw else _floats(columns["price"]), self.clip, 1 - self.clip)
                raw[name] = np.log(p / (1 - p))
            elif name == "poll_gap":
                price = raw["price"] if "price" in raw else _floats(columns["price"])
                raw[name] = (_floats(columns["poll_average"]) - price) if self.has_poll else np.full(n, np.nan)
            else:
                raw[name] = _floats(columns[name])
        x = np.empty((n, len(self.numeric)), dtype=np.float64)
        for j, name in enumerate(self.numeric):
            x[:, j] = raw[name]
        missing = np.isnan(x)
        x = np.where(missing, self.fill, x)
        blocks = [x, missing[:, self.indicator].astype(np.float64)] if len(self.indicator) else [x]
        numeric = np.hstack(blocks) if len(blocks) > 1 else x
        if self.mean is not None:
            numeric = numeric - self.mean
        if self.scale is not None:
            numeric = numeric / self.scale
        onehots = []
        for name, categories in zip(self.categorical, self.categories):
            values = np.array([self.cat_fill if _is_missing(v) else v for v in columns[name]], dtype=object)
            onehots.append((values[:, None] == categories[None, :]).astype(np.float64))
        return np.hstack([numeric, *onehots]) if onehots else numeric


def _floats(values: Sequence) -> np.ndarray:
    # None -> NaN, as pandas does when the pipeline's DataFrame is built from the same lists.
    return np.array(values, dtype=np.float64)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _compile_preprocess(domain, preprocess) -> _Preprocess:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from training.transformers import DERIVED, PriceLogOdds

    _require(type(domain) is PriceLogOdds, f"first step is {type(domain).__name__}, not PriceLogOdds")
    _require(type(preprocess) is ColumnTransformer, f"second step is {type(preprocess).__name__}")
    _require(preprocess.remainder == "drop" and not preprocess.sparse_output_, "ColumnTransformer remainder/sparse")
    fitted = {name: (step, cols) for name, step, cols in preprocess.transformers_ if name != "remainder"}
    _require(set(fitted) == {"numeric", "categorical"}, f"ColumnTransformer blocks {sorted(fitted)}")
    _require([t[0] for t in preprocess.transformers_ if t[0] != "remainder"] == ["numeric", "categorical"],
             "ColumnTransformer block order")
    (num_pipe, numeric), (cat_pipe, categorical) = fitted["numeric"], fitted["categorical"]
    _require(type(num_pipe) is Pipeline and [type(s).__name__ for _, s in num_pipe.steps]
             == ["SimpleImputer", "StandardScaler"], "numeric block is not SimpleImputer -> StandardScaler")
    imputer, scaler = num_pipe.steps[0][1], num_pipe.steps[1][1]
    _require(type(imputer) is SimpleImputer and type(scaler) is StandardScaler, "numeric step types")
    _require(imputer.strategy in ("median", "mean", "constant", "most_frequent") and _is_nan(imputer.missing_values),
             "numeric imputer missing_values is not NaN")
    fill = np.asarray(imputer.statistics_, dtype=np.float64)
    _require(fill.shape == (len(numeric),) and not np.isnan(fill).any(), "numeric imputer statistics")
    indicator = np.array([], dtype=int)
    if imputer.add_indicator:
        _require(imputer.indicator_.features == "missing-only" and imputer.indicator_.sparse in ("auto", False),
                 "missing indicator settings")
        indicator = np.asarray(imputer.indicator_.features_, dtype=int)
    n_out = len(numeric) + len(indicator)
    mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else None
    scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else None
    _require(mean is None or mean.shape == (n_out,), "scaler width")
    _require(set(DERIVED) <= set(numeric) or not set(DERIVED) & set(numeric), "derived columns")

    _require(type(cat_pipe) is Pipeline and [type(s).__name__ for _, s in cat_pipe.steps]
             == ["SimpleImputer", "OneHotEncoder"], "categorical block is not SimpleImputer -> OneHotEncoder")
    cat_imputer, onehot = cat_pipe.steps[0][1], cat_pipe.steps[1][1]
    _require(type(cat_imputer) is SimpleImputer and type(onehot) is OneHotEncoder, "categorical step types")
    _require(cat_imputer.strategy == "constant" and _is_nan(cat_imputer.missing_values),
             "categorical imputer is not constant-fill of NaN")
    _require(onehot.handle_unknown == "ignore" and onehot.drop is None and onehot.min_frequency is None
             and onehot.max_categories is None and not onehot.sparse_output, "OneHotEncoder settings")
    categories = [np.asarray(c, dtype=object) for c in onehot.categories_]
    _require(len(categories) == len(categorical), "one-hot categories per column")
    inputs = [str(c) for c in domain.feature_names_in_]
    _require(all(c in inputs for c in numeric if c not in DERIVED) and all(c in inputs for c in categorical),
             "a transformed column is not a pipeline input")
    _require("price" in inputs, "no price input")
    return _Preprocess(inputs, float(domain.clip), "poll_average" in inputs, list(numeric), fill, indicator,
                       mean, scale, list(categorical), cat_imputer.fill_value, categories)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


# ---------------------------------------------------------------------------- classifiers

@dataclass(frozen=True)
class _Forest:
    """Every tree of one or more HistGradientBoosting models, flattened into node arrays.

    Leaves point to themselves (children = own index), so walking ``depth`` steps from every root
    lands each row on its leaf in every tree without a per-step leaf test.
    """

    feature: np.ndarray             # per node: feature index (0 for leaves)
    threshold: np.ndarray           # per node: go left if value <= threshold
    missing_left: np.ndarray        # per node: where a missing value goes
    children: np.ndarray            # per node, flat: [2*i] right child, [2*i + 1] left child
    value: np.ndarray               # per node: leaf value
    roots: np.ndarray               # root node of each tree (all models, iteration order)
    depth: int
    baselines: list[float]          # per model
    spans: list[tuple[int, int]]    # per model: its trees' columns in `roots`

    def raw(self, x: np.ndarray) -> list[np.ndarray]:
        """Per model: baseline + sum of its trees' leaf values, summed in sklearn's order."""
        n, width = x.shape
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        flat_x = np.ascontiguousarray(x).ravel()
        row_start = (np.arange(n) * width)[:, None]
        for _ in range(self.depth):
            value = flat_x[row_start + self.feature[node]]
            go_left = value <= self.threshold[node]           # NaN compares False ...
            missing = np.isnan(value)
            if missing.any():                                 # ... and takes the node's missing direction
                go_left[missing] = self.missing_left[node[missing]]
            node = self.children[2 * node + go_left]
        leaves = self.value[node]
        out = []
        for baseline, (start, stop) in zip(self.baselines, self.spans):
            # sklearn: raw = 0 + baseline, then += each tree in turn. cumsum is sequential too
            # (np.sum would be pairwise and differ in the last bits).
            terms = np.concatenate([np.full((n, 1), baseline), leaves[:, start:stop]], axis=1)
            out.append(np.cumsum(terms, axis=1)[:, -1] if n else np.zeros(0))
        return out


def _compile_forest(models: list) -> _Forest:
    from sklearn.ensemble import HistGradientBoostingClassifier

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "missing_left", "children", "value")}
    roots, baselines, spans, offset, depth = [], [], [], 0, 0
    for model in models:
        _require(type(model) is HistGradientBoostingClassifier, f"classifier {type(model).__name__}")
        _require(model.n_trees_per_iteration_ == 1 and len(model.classes_) == 2, "not a binary HGB")
        _require(getattr(model, "_preprocessor", None) is None and model.is_categorical_ is None,
                 "HGB with native categorical features")
        baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
        _require(baseline.shape == (1,), "HGB baseline shape")
        start = len(roots)
        for iteration in model._predictors:
            (predictor,) = iteration
            nodes = predictor.nodes
            _require(not nodes["is_categorical"].any(), "categorical split")
            own = np.arange(len(nodes), dtype=np.intp) + offset
            leaf = nodes["is_leaf"].astype(bool)
            left = np.where(leaf, own, nodes["left"].astype(np.intp) + offset)
            right = np.where(leaf, own, nodes["right"].astype(np.intp) + offset)
            parts["feature"].append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp))
            parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
            parts["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
            parts["children"].append(np.column_stack([right, left]).ravel())
            parts["value"].append(nodes["value"].astype(np.float64))
            roots.append(offset)
            depth = max(depth, int(nodes["depth"].max()))
            offset += len(nodes)
        baselines.append(float(baseline[0]))
        spans.append((start, len(roots)))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    return _Forest(**arrays, roots=np.asarray(roots, dtype=np.intp), depth=depth, baselines=baselines, spans=spans)


@dataclass(frozen=True)
class _Linear:
    coef: np.ndarray     # (1, n_features), as fitted
    intercept: np.ndarray

    def raw(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.coef.T + self.intercept).reshape(-1)


def _compile_linear(model) -> _Linear:
    from sklearn.linear_model import LogisticRegression

    _require(type(model) is LogisticRegression and len(model.classes_) == 2, f"classifier {type(model).__name__}")
    return _Linear(np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64))


# ---------------------------------------------------------------------------- the whole model

@dataclass(frozen=True)
class CompiledModel:
    preprocess: _Preprocess
    kind: str                            # hgb | logreg
    forest: _Forest | None
    linears: list[_Linear]
    calibrators: list[tuple[str, Any]]   # (method, sklearn calibrator) per calibrated classifier; [] if none

    @property
    def input_names(self) -> list[str]:
        return self.preprocess.input_names

    def predict(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        """P(outcome = 1) per row; ``columns`` maps every input name to a list of values (None: missing)."""
        from scipy.special import expit

        x = self.preprocess.transform(columns)
        raws = self.forest.raw(x) if self.forest is not None else [m.raw(x) for m in self.linears]
        if not self.calibrators:
            return expit(raws[0])
        total = np.zeros(x.shape[0])
        for raw, (method, calibrator) in zip(raws, self.calibrators):
            if method == "isotonic":
                p = calibrator.f_(np.clip(raw, calibrator.X_min_, calibrator.X_max_)).astype(np.float64)
            else:
                p = expit(-(calibrator.a_ * raw + calibrator.b_))
            p[(1.0 < p) & (p <= 1.0 + 1e-5)] = 1.0
            total += p
        total /= len(self.calibrators)
        return total


def compile_pipeline(pipeline) -> CompiledModel:
    """Compile a fitted training pipeline; raises UnsupportedPipeline naming what it cannot reproduce."""
    from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
    from sklearn.isotonic import IsotonicRegression
    from sklearn.pipeline import Pipeline

    _require(type(pipeline) is Pipeline and [n for n, _ in pipeline.steps] == ["domain", "preprocess", "classifier"],
             "not a training.pipeline Pipeline (domain, preprocess, classifier)")
    preprocess = _compile_preprocess(pipeline.steps[0][1], pipeline.steps[1][1])
    classifier = pipeline.steps[2][1]
    calibrators: list[tuple[str, Any]] = []
    if type(classifier) is CalibratedClassifierCV:
        _require(classifier.method in ("isotonic", "sigmoid"), f"calibration method {classifier.method!r}")
        _require(list(classifier.classes_) == [0, 1], f"classes {list(classifier.classes_)}")
        estimators = []
        for calibrated in classifier.calibrated_classifiers_:
            (calibrator,) = calibrated.calibrators
            expected = IsotonicRegression if classifier.method == "isotonic" else _SigmoidCalibration
            _require(type(calibrator) is expected, f"calibrator {type(calibrator).__name__}")
            _require(classifier.method != "isotonic" or calibrator.out_of_bounds == "clip", "isotonic out_of_bounds")
            calibrators.append((classifier.method, calibrator))
            estimators.append(calibrated.estimator)
    else:
        _require(list(classifier.classes_) == [0, 1], f"classes {list(classifier.classes_)}")
        estimators = [classifier]
    kinds = {type(e).__name__ for e in estimators}
    if kinds == {"HistGradientBoostingClassifier"}:
        return CompiledModel(preprocess, "hgb", _compile_forest(estimators), [], calibrators)
    if kinds == {"LogisticRegression"}:
        return CompiledModel(preprocess, "logreg", None, [_compile_linear(e) for e in estimators], calibrators)
    raise UnsupportedPipeline(f"classifier(s) {sorted(kinds)}")


# ---------------------------------------------------------------------------- verification

def probe_columns(compiled: CompiledModel, n: int = 256, seed: int = 0) -> dict[str, list]:
    """Rows that exercise every branch: around each imputer/scaler's fitted values, missing values,
    every known category plus an unknown one and None, prices at and beyond the clip."""
    rng = np.random.default_rng(seed)
    pre = compiled.preprocess
    centre = dict(zip(pre.numeric, pre.fill))
    spread = dict(zip(pre.numeric, pre.scale if pre.scale is not None else np.ones(len(pre.numeric))))
    out: dict[str, list] = {}
    for name in pre.input_names:
        if name in pre.categorical:
            known = list(pre.categories[pre.categorical.index(name)])
            choices = known + ["__unknown__", None]
            out[name] = [choices[i % len(choices)] for i in rng.permutation(n)]
        elif name == "price":
            values = rng.uniform(0, 1, n)
            values[:6] = [0.0, 1.0, 1e-6, 1 - 1e-6, 0.5, np.nan]
            out[name] = [None if np.isnan(v) else float(v) for v in values]
        elif name in centre:
            values = centre[name] + spread[name] * rng.normal(0, 1.5, n)
            values[rng.uniform(size=n) < 0.15] = np.nan
            values[0] = centre[name]
            out[name] = [None if np.isnan(v) else float(v) for v in values]
        else:  # an input no block uses (dropped by the ColumnTransformer): any value
            out[name] = [None] * n
    return out


def verify(compiled: CompiledModel, pipeline, columns: Mapping[str, Sequence]) -> float:
    """Largest |compiled - pipeline.predict_proba| over the rows of ``columns``; raises if above TOLERANCE."""
    import pandas as pd

    frame = pd.DataFrame({name: list(columns[name]) for name in compiled.input_names})
    expected = pipeline.predict_proba(frame)[:, 1]
    got = compiled.predict(columns)
    same_nan = np.isnan(expected) == np.isnan(got)
    diff = float(np.nanmax(np.abs(expected - got))) if len(got) else 0.0
    if not same_nan.all() or diff > TOLERANCE:
        raise UnsupportedPipeline(f"compiled scorer differs from the sklearn pipeline by {diff:.3g} "
                                  f"(tolerance {TOLERANCE}) on {len(got)} probe rows")
    return diff

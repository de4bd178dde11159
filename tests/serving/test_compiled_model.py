"""The compiled scorer reproduces the fitted pipeline exactly, or is not used.

Real pipelines (training.pipeline.fit_model) of every supported kind, fitted on synthetic rows with
missing values and several categories, compared with sklearn's own predict_proba on probe rows and
on rows the scorer never saw at compile time (unknown categories, None, all-missing columns).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.compiled_model import UnsupportedPipeline, compile_pipeline, probe_columns, verify
from serving.models import serve_model
from tests.serving import world
from training.pipeline import ModelSpec, fit_model
from training.registry import LoadedModel

NAMES = ["price", "volume_24h", "price_change_1d", "price_change_7d", "price_volatility_7d", "price_volatility_30d",
         "volume_mean_7d", "poll_average", "poll_trend", "n_polls", "event_type", "platform", "poll_market_spread",
         "poll_market_ratio", "days_to_resolution", "log_days_to_resolution", "resolution_urgency"]
SPECS = {"hgb-isotonic": ModelSpec(), "hgb-sigmoid": ModelSpec(calibration="sigmoid"),
         "hgb-uncalibrated": ModelSpec(calibration=None), "logreg-uncalibrated": ModelSpec(kind="logreg", calibration=None),
         "logreg-isotonic": ModelSpec(kind="logreg")}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return world.training_frame(NAMES, n_markets=400, seed=11)


@pytest.fixture(scope="module", params=sorted(SPECS))
def fitted(request, frame):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return fit_model(SPECS[request.param], frame, NAMES)


def unseen_rows(frame: pd.DataFrame, n: int = 300) -> dict[str, list]:
    """Held-out-like rows as serving builds them: lists with None for missing, odd categories."""
    rows = world.training_frame(NAMES, n_markets=n // 4, seed=99)
    columns = {c: [None if isinstance(v, float) and np.isnan(v) else v for v in rows[c].tolist()] for c in NAMES}
    columns["event_type"][:3] = ["weather", None, "election"]   # unknown, missing, known
    columns["platform"][3] = None
    columns["price"][4:7] = [0.0, 1.0, None]
    return columns


def test_compiled_scorer_is_bit_equal_to_the_pipeline(fitted, frame):
    compiled = compile_pipeline(fitted)
    for columns in (probe_columns(compiled), unseen_rows(frame)):
        expected = fitted.predict_proba(pd.DataFrame({c: columns[c] for c in NAMES}))[:, 1]
        got = compiled.predict(columns)
        np.testing.assert_array_equal(got, expected)  # bit-equal, not approximately
        assert verify(compiled, fitted, columns) == 0.0


def test_one_row_and_all_missing_columns(fitted):
    compiled = compile_pipeline(fitted)
    row = {c: [None] for c in NAMES} | {"price": [0.42], "event_type": ["sports"], "platform": ["kalshi"]}
    expected = fitted.predict_proba(pd.DataFrame(row))[:, 1]
    np.testing.assert_array_equal(compiled.predict(row), expected)


def test_a_scorer_that_differs_from_the_pipeline_is_refused(frame):
    fitted = fit_model(ModelSpec(kind="logreg", calibration=None), frame, NAMES)
    compiled = compile_pipeline(fitted)
    fitted.named_steps["classifier"].intercept_ = fitted.named_steps["classifier"].intercept_ + 1e-9
    with pytest.raises(UnsupportedPipeline, match="differs from the sklearn pipeline"):
        verify(compiled, fitted, probe_columns(compiled))


def test_an_unknown_pipeline_is_scored_by_sklearn_not_compiled(frame):
    from sklearn.ensemble import RandomForestClassifier

    fitted = fit_model(ModelSpec(kind="logreg", calibration=None), frame, NAMES)
    fitted.steps[-1] = ("classifier", RandomForestClassifier(n_estimators=5, random_state=0).fit(
        fitted[:-1].transform(frame[NAMES]), frame["label"]))
    with pytest.raises(UnsupportedPipeline, match="RandomForestClassifier"):
        compile_pipeline(fitted)
    loaded = LoadedModel(model=fitted, name="m", version="9", feature_service="fs", feature_names=NAMES,
                         sha256="x", run_id="r")
    served = serve_model(loaded)
    assert served.scorer == "sklearn" and "RandomForestClassifier" in served.scorer_detail
    columns = unseen_rows(frame)
    np.testing.assert_array_equal(served.predict(columns),
                                  fitted.predict_proba(pd.DataFrame({c: columns[c] for c in NAMES}))[:, 1])


def test_served_model_uses_the_compiled_scorer_when_it_matches(frame):
    fitted = fit_model(ModelSpec(), frame, NAMES)
    loaded = LoadedModel(model=fitted, name="m", version="1", feature_service="fs", feature_names=NAMES,
                         sha256="x", run_id="r")
    served = serve_model(loaded, sample=unseen_rows(frame, 40))
    assert served.scorer == "compiled"
    assert "on 296 checked rows" in served.scorer_detail  # 256 probe rows + the 40 served rows

"""The vs_champion gate compares on markets the champion never trained on (real MLflow store).

A champion fitted on markets resolved up to its training cutoff would be flattered by scoring it
on them: in a backfill (a challenger trained as of an earlier date) that is every validation
market of the challenger, or some of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.training.synthetic import FEATURES
from training.data import training_set_from_frame
from training.evaluate import brier
from training.registry import CHAMPION, GateLimits, load_verified_model, resolve_version
from training.split import split_by_resolution
from training.train import TrainConfig, train

pytestmark = pytest.mark.slow

LENIENT = GateLimits(max_brier=0.25, max_ece=0.12, min_roc_auc=0.6, min_brier_skill=-1.0,
                     max_train_valid_gap=0.2, champion_tolerance=0.05)
CONFIG = TrainConfig(importance_repeats=1)


def resolved_by(ts, quantile: float):
    """The training set of markets resolved by the `quantile` of resolution times: an earlier as_of."""
    resolved = ts.frame.drop_duplicates("market_id")["resolved_at"]
    as_of = resolved.quantile(quantile)
    frame = ts.frame[ts.frame["resolved_at"] <= as_of].copy()
    return training_set_from_frame(frame, FEATURES, as_of, run_gx=False)


@pytest.fixture(scope="module")
def champion(store, ts):
    result = train(store, training_set=ts, config=CONFIG, limits=LENIENT, promote_if_passed=True)
    assert result.passed and result.aliases == [CHAMPION], result.to_text()
    return result


def test_champion_records_its_training_cutoff(store, ts, champion):
    tags = resolve_version(store, store.model_name, champion.version).tags
    assert pd.Timestamp(tags["train_resolved_max"]) == split_by_resolution(ts.frame).cutoff


def test_backfill_with_only_markets_the_champion_trained_on_fails_vs_champion(store, ts, champion):
    backfill = train(store, training_set=resolved_by(ts, 0.6), config=CONFIG, limits=LENIENT)
    assert backfill.metrics["champion_compared_markets"] == 0
    assert "champion_valid_brier" not in backfill.metrics
    verdict = next(v for v in backfill.verdicts if v.gate == "vs_champion")
    assert not verdict.passed and "no validation market is unseen by the champion" in verdict.detail
    assert backfill.aliases == []


def test_partial_backfill_scores_both_models_on_the_unseen_markets_only(store, ts, champion):
    partial_ts = resolved_by(ts, 0.9)
    result = train(store, training_set=partial_ts, config=CONFIG, limits=LENIENT)
    valid = split_by_resolution(partial_ts.frame).valid
    cutoff = pd.Timestamp(resolve_version(store, store.model_name, champion.version).tags["train_resolved_max"])
    unseen = valid[valid["resolved_at"] > cutoff]
    # Some, not all, of the challenger's validation markets were in the champion's training set.
    assert 0 < unseen["market_id"].nunique() < valid["market_id"].nunique()
    assert result.metrics["champion_compared_markets"] == unseen["market_id"].nunique()

    weights = 1.0 / unseen.groupby("market_id")["market_id"].transform("size").to_numpy(dtype=float)
    y = unseen["label"].to_numpy()
    champ = load_verified_model(store.model_name, champion.version, store)
    ours = load_verified_model(store.model_name, result.version, store)
    assert result.metrics["champion_valid_mw_brier"] == pytest.approx(brier(y, champ.predict(unseen), weights))
    assert result.metrics["compared_valid_mw_brier"] == pytest.approx(brier(y, ours.predict(unseen), weights))
    # Scored on every validation row instead (the old comparison), the champion gets another score.
    all_rows = brier(valid["label"].to_numpy(), champ.predict(valid),
                     1.0 / valid.groupby("market_id")["market_id"].transform("size").to_numpy(dtype=float))
    assert not np.isclose(all_rows, result.metrics["champion_valid_mw_brier"])
    verdict = next(v for v in result.verdicts if v.gate == "vs_champion")
    assert f"{unseen['market_id'].nunique()} validation markets the champion never trained on" in verdict.detail

"""Statistical honesty: few false alarms on no-drift data, real shifts detected, honest intervals.

Every number here is produced by the library's real code path (profile -> compare / concept),
with fixed seeds so the test is deterministic; each one could fail if the method were wrong
(e.g. per-feature alpha without the Bonferroni split, or a row bootstrap instead of markets).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.concept import concept_drift, scores_with_ci
from monitoring.drift import DriftThresholds, compare_to_reference
from monitoring.reference import build_reference_profile
from tests.monitoring import synthetic as syn

NUMERIC = syn.numeric_names(7)


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    """One population; reference and current windows are resampled from it (no drift by construction)."""
    rng = np.random.default_rng(2024)
    df = syn.features(120_000, rng)
    df["prediction"] = rng.beta(2, 2, len(df))
    df["label"] = (rng.random(len(df)) < df["prediction"]).astype(int)
    return df


def _alarms(ref: pd.DataFrame, cur: pd.DataFrame) -> tuple[bool, dict]:
    """Profile ``ref``, compare ``cur``: True if any feature or the prediction alarms."""
    prof = build_reference_profile(ref, ref["prediction"], ref["label"], NUMERIC, syn.CATEGORICAL)
    out = compare_to_reference({c: cur[c] for c in [*NUMERIC, *syn.CATEGORICAL]}, cur["prediction"], prof)
    return any(f["severity"] != "none" for f in [*out["features"], out["prediction"]]), out


@pytest.mark.slow
def test_false_alarm_rate_on_reference_vs_reference_is_at_most_5_percent(pool):
    rng = np.random.default_rng(1)
    configs = [(2000, 50), (2000, 500), (5000, 5000), (5000, 20000)]
    runs = 50
    alarms = []
    for ref_n, cur_n in configs:
        for _ in range(runs):
            idx = rng.permutation(len(pool))[: ref_n + cur_n]  # disjoint reference and current rows
            alarms.append(_alarms(pool.iloc[idx[:ref_n]], pool.iloc[idx[ref_n:]])[0])
    rate = float(np.mean(alarms))
    # 200 whole runs, each testing 10 things (7 numeric, 2 categorical, prediction).
    assert rate <= 0.05, f"false-alarm rate {rate:.3f} over {len(alarms)} runs"


def test_tenth_of_a_std_mean_shift_is_detected_at_10k(pool):
    rng = np.random.default_rng(7)
    detected = []
    for _ in range(10):
        idx = rng.permutation(len(pool))[:30_000]
        ref, cur = pool.iloc[idx[:20_000]], pool.iloc[idx[20_000:]].copy()
        cur["price_change_1d"] += 0.1 * pool["price_change_1d"].std()
        _, out = _alarms(ref, cur)
        f = next(f for f in out["features"] if f["feature"] == "price_change_1d")
        detected.append(f["severity"] != "none")
    assert np.mean(detected) >= 0.9, f"detected in {np.mean(detected):.0%} of runs"


@pytest.mark.slow
def test_repeated_predictions_of_a_market_count_once_in_significance_tests():
    """Serving predicts the same market many times; rows are not independent evidence.

    Counting rows (no ``groups``) turns every no-drift window into an alarm; counting markets
    keeps the false-alarm rate near the nominal level.
    """
    rng = np.random.default_rng(3)

    def repeat(df: pd.DataFrame, k: int) -> pd.DataFrame:
        return df.loc[df.index.repeat(k)].reset_index(drop=True)

    grouped_alarms, row_alarms = [], []
    for _ in range(12):
        ref = syn.features(1500, rng).assign(market_id=[f"r{i}" for i in range(1500)], p=rng.beta(2, 2, 1500))
        ref = repeat(ref.assign(y=(rng.random(1500) < ref["p"]).astype(int)), 4)
        cur = repeat(syn.features(300, rng).assign(market_id=[f"c{i}" for i in range(300)],
                                                   p=rng.beta(2, 2, 300)), 10)
        cols = {c: cur[c] for c in [*NUMERIC, *syn.CATEGORICAL]}
        by_market = compare_to_reference(cols, cur["p"], build_reference_profile(
            ref, ref["p"], ref["y"], NUMERIC, syn.CATEGORICAL, groups=ref["market_id"]), groups=cur["market_id"])
        by_row = compare_to_reference(cols, cur["p"], build_reference_profile(
            ref, ref["p"], ref["y"], NUMERIC, syn.CATEGORICAL))
        for out, sink in ((by_market, grouped_alarms), (by_row, row_alarms)):
            sink.append(any(f["severity"] != "none" for f in [*out["features"], out["prediction"]]))
    assert np.mean(grouped_alarms) <= 0.10, grouped_alarms
    assert np.mean(row_alarms) >= 0.5, "row counting should over-alarm on clustered data; test lost its teeth"


def _markets_frame(n_markets: int, rng: np.random.Generator, factor: float | None) -> pd.DataFrame:
    m = syn.calibrated_markets(n_markets, 5, rng)
    p = m["q"].to_numpy() if factor is None else syn.shrink_toward_half(m["q"].to_numpy(), factor)
    logged = pd.Timestamp("2024-06-01", tz="UTC") + pd.to_timedelta(rng.random(len(m)) * 7, unit="D")
    return pd.DataFrame({"logged_at": logged, "market_id": m["market_id"], "probability": p,
                         "outcome": m["outcome"].astype(float)})


@pytest.fixture(scope="module")
def reference_performance() -> dict:
    rng = np.random.default_rng(11)
    val = _markets_frame(3000, rng, None)
    prof = build_reference_profile(pd.DataFrame({"x": np.zeros(len(val))}), val["probability"], val["outcome"],
                                   ["x"], [])
    return prof["performance"]


def test_recalibration_shift_is_caught_once_enough_markets_resolve(reference_performance):
    rng = np.random.default_rng(12)
    th = DriftThresholds()
    few = concept_drift(_markets_frame(20, rng, 0.3), reference_performance, th)
    assert few["status"] == "insufficient_data" and few["severity"] == "none"
    many = concept_drift(_markets_frame(1000, rng, 0.3), reference_performance, th)
    assert many["status"] == "ok" and many["significant"] and many["severity"] != "none"
    assert many["brier"]["ci_low"] > reference_performance["brier"]
    assert len(many["over_time"]) == 7


def test_calibrated_predictions_do_not_raise_concept_alarms(reference_performance):
    rng = np.random.default_rng(13)
    severities = [concept_drift(_markets_frame(400, rng, None), reference_performance,
                                DriftThresholds(bootstrap_samples=300), bucket="7D")["severity"] for _ in range(20)]
    assert sum(s != "none" for s in severities) <= 1, severities


def test_market_cluster_bootstrap_interval_covers_the_true_brier():
    # q ~ Beta(1.2, 1.2): expected Brier of the calibrated forecast is E[q(1-q)] = ab / ((a+b)(a+b+1)).
    true_brier = 1.2 * 1.2 / (2.4 * 3.4)
    rng = np.random.default_rng(14)
    covered = []
    for seed in range(100):
        m = syn.calibrated_markets(150, 20, rng)
        s = scores_with_ci(m["q"], m["outcome"], m["market_id"], n_boot=400, seed=seed)
        covered.append(s["brier"]["ci_low"] <= true_brier <= s["brier"]["ci_high"])
    # A row bootstrap would treat 3000 rows as independent and cover far less often (~40%).
    assert 0.88 <= np.mean(covered) <= 1.0, f"coverage {np.mean(covered):.2f}"

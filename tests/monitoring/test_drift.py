"""Drift statistics agree with scipy / direct computation; severity logic; unseen categories."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from monitoring.drift import (DriftThresholds, categorical_drift, compare_to_reference, ks_pvalue, ks_statistic,
                              numeric_drift, psi, wasserstein)
from monitoring.reference import build_reference_profile, categorical_profile, numeric_profile
from tests.monitoring import synthetic as syn


@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("sizes", [(500, 3000), (4000, 700), (1, 50)])
def test_ks_and_wasserstein_equal_scipy(discrete, sizes):
    rng = np.random.default_rng(sizes[0])
    a, b = rng.normal(0, 1, sizes[0]), rng.normal(0.2, 1.3, sizes[1])
    if discrete:  # heavy ties
        a, b = np.round(a), np.round(b)
    a, b = np.sort(a), np.sort(b)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert ks_statistic(a, b) == pytest.approx(ref.statistic, abs=1e-12)
    assert ks_pvalue(ks_statistic(a, b), a.size, b.size) == pytest.approx(ref.pvalue, rel=1e-9)
    assert wasserstein(a, b) == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9, abs=1e-12)


def test_psi_known_values_and_epsilon():
    r, c = np.array([0.25, 0.25, 0.5]), np.array([0.5, 0.25, 0.25])
    assert psi(r, c) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(2))
    assert psi(r, r) == 0.0
    # An empty current bin: floored at epsilon then renormalised, finite and large.
    eps = 1e-4
    c0 = np.array([0.0, 0.5, 0.5])
    cc = np.maximum(c0, eps) / np.maximum(c0, eps).sum()
    rr = r / r.sum()
    assert psi(r, c0, eps) == pytest.approx(np.sum((cc - rr) * np.log(cc / rr)))
    assert math.isfinite(psi(r, c0, eps)) and psi(r, c0, eps) > 1


def test_numeric_drift_psi_matches_direct_binning():
    rng = np.random.default_rng(1)
    ref_values = rng.normal(0, 1, 5000)
    ref = numeric_profile(ref_values, "x", 10, 5000)
    cur = rng.normal(0.3, 1, 3000)
    cur[:300] = np.nan
    out = numeric_drift(cur, ref, 5000, 0.01, DriftThresholds(), "x")
    edges = np.concatenate([[-np.inf], ref["edges"], [np.inf]])
    present = cur[~np.isnan(cur)]
    hist = np.array([((present >= lo) & (present < hi)).sum() for lo, hi in zip(edges[:-1], edges[1:])])
    cur_p = np.append(hist / cur.size, 0.1)
    ref_p = np.append(ref["proportions"], 0.0)
    assert out["psi"] == pytest.approx(psi(ref_p, cur_p))
    assert out["missing_fraction"] == pytest.approx(0.1)
    assert out["ks_statistic"] == pytest.approx(stats.ks_2samp(present, ref_values).statistic)
    assert out["wasserstein_scaled"] == pytest.approx(
        stats.wasserstein_distance(present, ref_values) / ref_values.std(ddof=1))


def test_categorical_drift_js_chi2_and_unseen_categories():
    ref = categorical_profile(np.array(["a"] * 600 + ["b"] * 300 + ["c"] * 100), "cat")
    cur = np.array(["a"] * 300 + ["b"] * 300 + ["new"] * 150 + [None] * 50, dtype=object)
    out = categorical_drift(cur, ref, 0.01, DriftThresholds(), "cat")
    # current: a .375, b .375, c 0, unseen (new + missing) .25 vs reference a .6 b .3 c .1 unseen 0
    assert out["unseen_fraction"] == pytest.approx(0.25)
    assert set(out["unseen_categories"]) == {"new", "__missing__"}
    assert out["js_distance"] == pytest.approx(
        jensenshannon([0.6, 0.3, 0.1, 0.0], [0.375, 0.375, 0.0, 0.25], base=2))
    table = np.array([[300, 300, 0, 200], [600, 300, 100, 0]])
    assert out["chi2_pvalue"] == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    assert out["severity"] == "high"


def test_severity_needs_both_effect_and_significance():
    rng = np.random.default_rng(2)
    ref = numeric_profile(rng.normal(0, 1, 200_000), "x", 10, 5000)
    th = DriftThresholds()
    # Tiny window, big apparent effect: noise, not drift.
    small = numeric_drift(rng.normal(0.3, 1, 15), ref, 200_000, 0.01, th, "x")
    assert small["effect_severity"] != "none" and not small["significant"] and small["severity"] == "none"
    # Huge window, trivial shift: significant, but below every effect threshold.
    big = numeric_drift(rng.normal(0.03, 1, 300_000), ref, 200_000, 0.01, th, "x")
    assert big["significant"] and big["effect_severity"] == "none" and big["severity"] == "none"
    # Large shift: high.
    shifted = numeric_drift(rng.normal(1.0, 1, 2000), ref, 200_000, 0.01, th, "x")
    assert shifted["severity"] == "high"


def test_missing_rate_change_alone_is_detected():
    rng = np.random.default_rng(4)
    values = rng.normal(0, 1, 10000)
    values[rng.random(10000) < 0.1] = np.nan
    ref = numeric_profile(values, "x", 10, 5000)
    cur = rng.normal(0, 1, 5000)
    cur[rng.random(5000) < 0.6] = np.nan  # a poll source went quiet: values look the same, most are missing
    out = numeric_drift(cur, ref, 10000, 0.01, DriftThresholds(), "x")
    assert out["ks_pvalue"] > 0.001 and out["severity"] == "high"


def test_constant_reference_feature():
    ref = numeric_profile(np.zeros(500), "x", 10, 5000)
    same = numeric_drift(np.zeros(200), ref, 500, 0.01, DriftThresholds(), "x")
    moved = numeric_drift(np.ones(200), ref, 500, 0.01, DriftThresholds(), "x")
    assert same["wasserstein_scaled"] == 0.0 and same["severity"] == "none"
    assert moved["wasserstein_scaled"] == math.inf and moved["severity"] == "high"


def test_compare_reports_absent_features_and_empty_windows():
    rng = np.random.default_rng(5)
    feats = syn.features(2000, rng)
    prof = build_reference_profile(feats, rng.random(2000), rng.integers(0, 2, 2000), ["price", "n_polls"],
                                   ["platform"])
    out = compare_to_reference({"price": feats["price"], "platform": feats["platform"]}, rng.random(2000), prof)
    by = {f["feature"]: f for f in out["features"]}
    assert by["n_polls"]["status"] == "absent_from_log" and by["n_polls"]["severity"] == "high"
    assert out["n_tests"] == 4 and out["alpha_per_test"] == pytest.approx(0.05 / 4)
    empty = numeric_drift(np.array([]), prof["numeric"]["price"], 2000, 0.01, DriftThresholds(), "price")
    assert empty["status"] == "no_data" and empty["severity"] == "none"


def test_log_with_infinite_feature_value_is_refused():
    rng = np.random.default_rng(6)
    ref = numeric_profile(rng.normal(size=100), "x", 10, 5000)
    with pytest.raises(ValueError, match="'x': 1 infinite"):
        numeric_drift(np.array([0.0, np.inf]), ref, 100, 0.01, DriftThresholds(), "x")


@pytest.mark.parametrize("kwargs, message", [
    ({"psi_moderate": 0.3, "psi_high": 0.2}, "psi"),
    ({"alpha": 0}, "alpha"),
    ({"wasserstein_moderate": 0}, "wasserstein"),
    ({"psi_epsilon": 0.5}, "psi_epsilon"),
])
def test_thresholds_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DriftThresholds(**kwargs)

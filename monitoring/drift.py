"""Drift statistics between a reference profile and a current window, and their severity.

Numeric features: PSI on the reference quantile bins (plus a *missing* bin), two-sample KS
against the reference quantile sketch, Wasserstein-1 distance divided by the reference std.
Categorical features: PSI and Jensen–Shannon distance on category frequencies (categories never
seen in the reference are pooled into one ``__unseen__`` cell), chi-square homogeneity test.

Severity combines an *effect size* with a *significance test* (see docs/monitoring.md):
a finding is moderate/high only if its effect size passes the threshold AND the test rejects
"same distribution" at the run's family-wise level. Large windows then do not alarm on
trivial-but-significant shifts, and small windows do not alarm on large-but-noisy effects.

Everything works on sorted numpy arrays with searchsorted / bincount: one sort of each current
column is the dominant cost (see bench/bench_drift.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from monitoring.reference import MISSING_CATEGORY, category_counts, effective_n, group_codes, numeric_values

SEVERITIES = ("none", "moderate", "high")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
UNSEEN_CATEGORY = "__unseen__"
# A feature with no value in the window (not logged at all, or null in every row) is a serving /
# feature-pipeline fault, not drift: reported as missing, never a reason to retrain.
MISSING_FEATURE_STATUSES = ("absent_from_log", "all_missing")


@dataclass(frozen=True)
class DriftThresholds:
    """Severity thresholds; the defaults are justified in docs/monitoring.md."""

    psi_moderate: float = 0.10
    psi_high: float = 0.25
    # Wasserstein-1 in units of the reference standard deviation (~ a mean shift of that many std).
    wasserstein_moderate: float = 0.05
    wasserstein_high: float = 0.50
    # Jensen–Shannon *distance* (sqrt of the divergence, base 2, in [0, 1]) for categoricals.
    js_moderate: float = 0.10
    js_high: float = 0.20
    # Family-wise false-alarm level of one run, Bonferroni-split across the tests of the run.
    alpha: float = 0.05
    # PSI: empty bins get this proportion (then renormalised) so log(0) never happens.
    psi_epsilon: float = 1e-4
    # Concept drift: Brier-score increase over the reference (absolute) and evidence needed.
    brier_increase_moderate: float = 0.01
    brier_increase_high: float = 0.03
    min_resolved_markets: int = 30
    bootstrap_samples: int = 1000
    confidence: float = 0.95

    def __post_init__(self) -> None:
        pairs = [("psi", self.psi_moderate, self.psi_high),
                 ("wasserstein", self.wasserstein_moderate, self.wasserstein_high),
                 ("js", self.js_moderate, self.js_high),
                 ("brier_increase", self.brier_increase_moderate, self.brier_increase_high)]
        for name, moderate, high in pairs:
            if not 0 < moderate <= high:
                raise ValueError(f"thresholds {name}: need 0 < moderate ({moderate}) <= high ({high})")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 < self.psi_epsilon < 0.01:
            raise ValueError(f"psi_epsilon must be in (0, 0.01), got {self.psi_epsilon}")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def level(value: float, moderate: float, high: float) -> str:
    if value >= high:
        return "high"
    if value >= moderate:
        return "moderate"
    return "none"


def worst(*severities: str) -> str:
    return max(severities, key=SEVERITY_RANK.__getitem__, default="none")


# ---------------------------------------------------------------- statistics on known inputs

def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = 1e-4) -> float:
    """Population stability index sum((c - r) * ln(c / r)) over bins.

    Both proportion vectors are floored at ``epsilon`` and renormalised, so an empty bin on
    either side contributes a large but finite term instead of infinity.
    """
    r = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    c = np.maximum(np.asarray(current, dtype=np.float64), epsilon)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def ks_statistic(current_sorted: np.ndarray, reference_sorted: np.ndarray) -> float:
    """Two-sample KS statistic sup_t |F_cur(t) - F_ref(t)|, exact, without sorting the union.

    Between consecutive distinct reference values F_ref is constant and F_cur is monotone, so
    the supremum is reached at a reference value or just left of one: evaluating both CDFs
    there (searchsorted left/right) gives the same value as scipy.stats.ks_2samp.
    """
    n, m = current_sorted.size, reference_sorted.size
    u = np.unique(reference_sorted)
    right = np.abs(np.searchsorted(current_sorted, u, "right") / n - np.searchsorted(reference_sorted, u, "right") / m)
    left = np.abs(np.searchsorted(current_sorted, u, "left") / n - np.searchsorted(reference_sorted, u, "left") / m)
    return float(max(right.max(), left.max()))


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Asymptotic two-sided p-value, as scipy.stats.ks_2samp(method='asymp')."""
    en = n * m / (n + m)
    return float(stats.kstwo.sf(d, np.round(en)))


def wasserstein(current_sorted: np.ndarray, reference_sorted: np.ndarray) -> float:
    """Wasserstein-1 distance = integral of |F_cur - F_ref|, on the merged sorted points.

    The reference is merged into the (already sorted) current column with one searchsorted
    and an O(n) insert; cumulative counts of each side then give both CDFs.
    """
    n, m = current_sorted.size, reference_sorted.size
    pos = np.searchsorted(current_sorted, reference_sorted, "left")
    merged = np.insert(current_sorted, pos, reference_sorted)
    is_ref = np.zeros(merged.size, dtype=bool)
    is_ref[pos + np.arange(m)] = True
    cum_ref = np.cumsum(is_ref)[:-1]
    cum_cur = np.arange(1, merged.size) - cum_ref
    # Within a tie group the widths are 0, so only each group's last position (where both
    # cumulative counts are the true CDF values) contributes.
    return float(np.sum(np.abs(cum_cur / n - cum_ref / m) * np.diff(merged)))


def chi2_homogeneity(current_counts: np.ndarray, reference_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square test that two count vectors come from one distribution; cells empty in both are dropped."""
    table = np.vstack([current_counts, reference_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1, keepdims=True)
    if table.shape[1] < 2 or (rows == 0).any():
        return 0.0, 1.0
    # Same as scipy.stats.chi2_contingency(table, correction=False), without its per-call overhead.
    expected = rows * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, table.shape[1] - 1))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]); zeros are fine here, no epsilon needed."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(reference, current, base=2))


# ---------------------------------------------------------------- per-feature comparison

def numeric_drift(current: Any, ref: dict[str, Any], ref_n_effective: int, alpha_per_test: float,
                  thresholds: DriftThresholds, name: str, codes: np.ndarray | None = None) -> dict[str, Any]:
    """Compare one numeric column with its reference profile entry.

    ``codes`` (integer market codes of the rows) make the tests count markets, not rows;
    ``ref_n_effective`` is the reference's number of markets (or rows if it was not grouped).
    """
    values = numeric_values(current, name)
    mask = ~np.isnan(values)
    present = np.sort(values[mask])
    n_total, n = values.size, present.size
    eff_total = n_total if codes is None else effective_n(codes)
    eff_present = n if codes is None else effective_n(codes, mask)
    missing_fraction = 1.0 - n / n_total if n_total else 0.0
    result: dict[str, Any] = {"feature": name, "kind": "numeric", "n": int(n_total), "n_present": int(n),
                              "n_effective": int(eff_present),
                              "missing_fraction": missing_fraction,
                              "reference_missing_fraction": ref["missing_fraction"]}
    if n_total == 0:
        return {**result, "status": "no_data", "severity": "none"}
    if n == 0 and ref["missing_fraction"] < 1.0:
        return {**result, "status": "all_missing", "severity": "high"}

    edges = np.asarray(ref["edges"], dtype=np.float64)
    ref_mf = ref["missing_fraction"]
    # Bin counts from the sorted column: searchsorted at the edges, no pass over the data.
    cum = np.searchsorted(present, edges, "left")
    counts = np.diff(np.concatenate([[0], cum, [n]]))
    cur_props = np.append(counts / n_total, missing_fraction)
    ref_props = np.append(np.asarray(ref["proportions"]) * (1 - ref_mf), ref_mf)
    psi_value = psi(ref_props, cur_props, thresholds.psi_epsilon)
    _, chi2_p = chi2_homogeneity(cur_props * eff_total, ref_props * ref_n_effective)

    sample = np.asarray(ref["sample"], dtype=np.float64)
    if n > 0:
        d = ks_statistic(present, sample)
        ks_p = ks_pvalue(d, max(eff_present, 1), ref.get("n_effective", ref["n"]))
        w = wasserstein(present, sample)
        std = ref["std"]
        # A constant reference feature has no scale: any movement at all is infinitely many std.
        w_scaled = w / std if std > 0 else (0.0 if w == 0 else float("inf"))
        mean = float(present.mean())
    else:
        d, ks_p, w, w_scaled, mean = float("nan"), 1.0, float("nan"), 0.0, float("nan")
    # Two tests per feature (KS on values, chi-square on bins incl. missing): Bonferroni.
    p_value = min(1.0, 2 * min(ks_p, chi2_p))
    effect = worst(level(psi_value, thresholds.psi_moderate, thresholds.psi_high),
                   level(w_scaled, thresholds.wasserstein_moderate, thresholds.wasserstein_high))
    significant = p_value < alpha_per_test
    return {
        **result,
        "status": "ok",
        "psi": psi_value,
        "ks_statistic": d,
        "ks_pvalue": ks_p,
        "chi2_pvalue": chi2_p,
        "wasserstein": w,
        "wasserstein_scaled": w_scaled,
        "mean": mean,
        "reference_mean": ref["mean"],
        "p_value": p_value,
        "significant": bool(significant),
        "effect_severity": effect,
        "severity": effect if significant else "none",
        "bins": {"edges": ref["edges"], "reference": ref_props.tolist(), "current": cur_props.tolist()},
    }


def categorical_drift(current: Any, ref: dict[str, Any], alpha_per_test: float,
                      thresholds: DriftThresholds, name: str, codes: np.ndarray | None = None) -> dict[str, Any]:
    """Compare one categorical column with its reference frequencies (``codes``: see numeric_drift)."""
    count_of = category_counts(current)
    n = sum(count_of.values())
    eff = n if codes is None else effective_n(codes)
    result: dict[str, Any] = {"feature": name, "kind": "categorical", "n": int(n), "n_effective": int(eff)}
    if n == 0:
        return {**result, "status": "no_data", "severity": "none"}
    ref_freq: dict[str, float] = ref["frequencies"]
    if count_of.get(MISSING_CATEGORY, 0) == n and ref_freq.get(MISSING_CATEGORY, 0.0) < 1.0:
        return {**result, "status": "all_missing", "severity": "high"}
    known = list(ref_freq)
    unseen = {c: k for c, k in count_of.items() if c not in ref_freq}
    cur_counts = np.array([count_of.get(c, 0) for c in known] + [sum(unseen.values())], dtype=np.float64)
    ref_props = np.array([ref_freq[c] for c in known] + [0.0])
    cur_props = cur_counts / n
    psi_value = psi(ref_props, cur_props, thresholds.psi_epsilon)
    js = js_distance(ref_props, cur_props)
    _, p_value = chi2_homogeneity(cur_props * eff, ref_props * ref.get("n_effective", ref["n"]))
    effect = worst(level(psi_value, thresholds.psi_moderate, thresholds.psi_high),
                   level(js, thresholds.js_moderate, thresholds.js_high))
    significant = p_value < alpha_per_test
    top_unseen = sorted(unseen.items(), key=lambda kv: -kv[1])[:10]
    return {
        **result,
        "status": "ok",
        "psi": psi_value,
        "js_distance": js,
        "chi2_pvalue": p_value,
        "p_value": p_value,
        "unseen_fraction": float(sum(unseen.values()) / n),
        "unseen_categories": [c for c, _ in top_unseen],
        "significant": bool(significant),
        "effect_severity": effect,
        "severity": effect if significant else "none",
        "bins": {"labels": [*known, UNSEEN_CATEGORY], "reference": ref_props.tolist(), "current": cur_props.tolist()},
    }


def compare_to_reference(columns: dict[str, Any], predictions: Any, profile: dict[str, Any],
                         thresholds: DriftThresholds = DriftThresholds(), groups: Any = None) -> dict[str, Any]:
    """Feature drift for every profiled feature present in ``columns``, plus prediction drift.

    ``groups`` (market_id per row) makes significance tests count markets rather than rows.
    Features of the profile absent from ``columns`` are reported (high severity: the model is
    being fed something other than what it was validated on) rather than silently skipped.
    """
    n_tests = len(profile["numeric"]) + len(profile["categorical"]) + 1
    alpha_per_test = thresholds.alpha / n_tests
    n_pred = len(predictions)
    codes = group_codes(groups, n_pred)
    ref_eff = profile.get("n_effective", profile["n_rows"])
    features: list[dict[str, Any]] = []
    for name, ref in profile["numeric"].items():
        if name not in columns:
            features.append({"feature": name, "kind": "numeric", "status": "absent_from_log", "severity": "high"})
            continue
        features.append(numeric_drift(columns[name], ref, ref_eff, alpha_per_test, thresholds, name, codes))
    for name, ref in profile["categorical"].items():
        if name not in columns:
            features.append({"feature": name, "kind": "categorical", "status": "absent_from_log", "severity": "high"})
            continue
        features.append(categorical_drift(columns[name], ref, alpha_per_test, thresholds, name, codes))
    prediction = numeric_drift(predictions, profile["prediction"], ref_eff, alpha_per_test,
                               thresholds, "prediction", codes)
    return {"alpha_per_test": alpha_per_test, "n_tests": n_tests, "grouped": codes is not None,
            "features": features, "prediction": prediction}

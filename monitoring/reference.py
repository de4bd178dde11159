"""Reference profile: what the model's inputs and outputs looked like on its validation set.

The training engineer calls :func:`build_reference_profile` on the validation features,
predictions and labels and logs the result as the model artifact ``reference_profile.json``.
Monitoring compares every window of the prediction log with it.

Numeric features keep, besides quantile-bin edges/proportions (for PSI), a *quantile sketch*:
the sorted values themselves when there are at most ``sample_size`` of them, otherwise the
values at the evenly spaced quantile levels ``(i + 0.5) / sample_size``. Why a sketch and not a
random sample: a random sample of m values has an ECDF error of order ``1/sqrt(m)`` (~0.014
for m = 5000), the same size as the KS statistics we want to detect; the quantile sketch's
ECDF is within ``1/(2m)`` (= 0.0001) of the full reference ECDF everywhere, is deterministic
(the same validation set gives the same profile) and keeps the JSON small (5000 floats per
feature). KS p-values use the *full* reference size ``n``, which is right because the sketch
reproduces the full ECDF to within that tolerance.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

PROFILE_SCHEMA_VERSION = 1
DEFAULT_SAMPLE_SIZE = 5000
ECE_BINS = 10
# Log loss clips probabilities here so that one confident miss gives a large, finite loss.
LOG_LOSS_EPS = 1e-6
MISSING_CATEGORY = "__missing__"


class ProfileError(ValueError):
    """The inputs of a profile (or a stored profile) are invalid; the message names what and where."""


def numeric_values(values: Any, name: str) -> np.ndarray:
    """``values`` as float64; NaN / None mean missing; +-inf is refused (it has no bin and no quantile)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":  # fast path: already a numeric numpy array
        arr = arr.astype(np.float64, copy=False)
    else:
        try:
            arr = np.asarray(pd.to_numeric(pd.Series(values), errors="raise"), dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise ProfileError(f"numeric feature {name!r}: values are not numeric ({exc})") from None
    n_inf = int(np.isinf(arr).sum())
    if n_inf:
        raise ProfileError(f"numeric feature {name!r}: {n_inf} infinite value(s); use NaN for missing")
    return arr


def quantile_sketch(sorted_values: np.ndarray, sample_size: int) -> tuple[np.ndarray, str]:
    """The values themselves if few enough, else the values at levels (i + 0.5) / sample_size."""
    n = sorted_values.size
    if n <= sample_size:
        return sorted_values, "exact"
    levels = (np.arange(sample_size) + 0.5) / sample_size
    # inverted_cdf picks actual order statistics, so the sketch is a sample of real values.
    return np.quantile(sorted_values, levels, method="inverted_cdf"), "quantile_sketch"


def effective_n(group_codes: np.ndarray | None, mask: np.ndarray | None = None) -> int | None:
    """Distinct groups (markets) among the rows in ``mask``: the sample size for significance tests.

    Predictions of one market are strongly correlated (same market, nearby times), so counting
    rows would overstate the evidence; counting markets is the conservative choice.
    """
    if group_codes is None:
        return None
    codes = group_codes if mask is None else group_codes[mask]
    if codes.size == 0:
        return 0
    return int(np.count_nonzero(np.bincount(codes)))


def group_codes(groups: Any, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    codes, _ = pd.factorize(pd.Series(groups), use_na_sentinel=False)
    if codes.size != n:
        raise ProfileError(f"groups has {codes.size} values for {n} rows")
    return codes


def numeric_profile(values: Any, name: str, n_bins: int, sample_size: int,
                    codes: np.ndarray | None = None) -> dict[str, Any]:
    arr = numeric_values(values, name)
    mask = ~np.isnan(arr)
    present = np.sort(arr[mask])
    if present.size == 0:
        raise ProfileError(f"numeric feature {name!r}: every value is missing; nothing to profile")
    # Interior edges at the reference quantiles; duplicates (ties, discrete features) are merged
    # so no bin is empty by construction. Bins are [e_i, e_{i+1}) with -inf/+inf outer edges.
    edges = np.unique(np.quantile(present, np.arange(1, n_bins) / n_bins))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)
    sketch, kind = quantile_sketch(present, sample_size)
    n_eff = effective_n(codes, mask)
    return {
        "n": int(present.size),
        "n_effective": int(present.size) if n_eff is None else n_eff,
        "missing_fraction": float(1.0 - present.size / arr.size),
        "edges": edges.tolist(),
        "proportions": (counts / present.size).tolist(),
        "mean": float(present.mean()),
        "std": float(present.std(ddof=1)) if present.size > 1 else 0.0,
        "min": float(present[0]),
        "max": float(present[-1]),
        "sample": sketch.tolist(),
        "sample_kind": kind,
    }


def category_counts(values: Any) -> dict[str, int]:
    """Count of each category (as a string); missing values are counted as :data:`MISSING_CATEGORY`."""
    counts = pd.Series(values).value_counts(dropna=False, sort=False)
    out: dict[str, int] = {}
    for cat, k in counts.items():
        if k == 0:  # a Categorical lists its unused categories too
            continue
        key = MISSING_CATEGORY if pd.isna(cat) else str(cat)
        out[key] = out.get(key, 0) + int(k)
    return out


def categorical_profile(values: Any, name: str, codes: np.ndarray | None = None) -> dict[str, Any]:
    counts = category_counts(values)
    n = sum(counts.values())
    if n == 0:
        raise ProfileError(f"categorical feature {name!r}: no values")
    n_eff = effective_n(codes)
    return {"n": n, "n_effective": n if n_eff is None else n_eff,
            "frequencies": {c: k / n for c, k in sorted(counts.items())}}


def check_probabilities(p: Any, what: str) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64).ravel()
    bad = ~np.isfinite(arr) | (arr < 0) | (arr > 1)
    if bad.any():
        idx = np.flatnonzero(bad)[:5].tolist()
        raise ProfileError(f"{what}: {int(bad.sum())} value(s) not a probability in [0, 1] (first at rows {idx})")
    return arr


def check_labels(y: Any, what: str) -> np.ndarray:
    arr = np.asarray(y, dtype=np.float64).ravel()
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        idx = np.flatnonzero(bad)[:5].tolist()
        raise ProfileError(f"{what}: {int(bad.sum())} label(s) not 0/1 (first at rows {idx})")
    return arr


def brier_score(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    q = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def expected_calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE on equal-width probability bins: sum_b (n_b / n) * |mean(p_b) - mean(y_b)|."""
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    n_b = np.bincount(b, minlength=n_bins)
    gap = np.abs(np.bincount(b, weights=p, minlength=n_bins) - np.bincount(b, weights=y, minlength=n_bins))
    return float(gap.sum() / p.size)


def build_reference_profile(
    features: pd.DataFrame,
    predictions: np.ndarray,
    labels: np.ndarray,
    numeric: list[str],
    categorical: list[str],
    n_bins: int = 10,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    model_version: str | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Profile of the validation set: per-feature distributions, predictions, and performance.

    ``features`` rows align with ``predictions`` and ``labels``. ``groups`` (the market_id of
    each row) is strongly recommended: validation rows are many snapshots of few markets, and
    the significance tests then use the number of markets, not rows, as the reference sample
    size. The result is plain JSON (see :func:`save_profile`).
    """
    if n_bins < 2:
        raise ProfileError(f"n_bins must be at least 2, got {n_bins}")
    if sample_size < 10:
        raise ProfileError(f"sample_size must be at least 10, got {sample_size}")
    overlap = set(numeric) & set(categorical)
    if overlap:
        raise ProfileError(f"features listed as both numeric and categorical: {sorted(overlap)}")
    absent = [c for c in [*numeric, *categorical] if c not in features.columns]
    if absent:
        raise ProfileError(f"features not in the DataFrame: {absent} (columns: {list(features.columns)})")
    p = check_probabilities(predictions, "predictions")
    y = check_labels(labels, "labels")
    if not (len(features) == p.size == y.size):
        raise ProfileError(f"row counts differ: features {len(features)}, predictions {p.size}, labels {y.size}")
    if p.size == 0:
        raise ProfileError("empty validation set: nothing to profile")
    codes = group_codes(groups, p.size)
    n_eff = effective_n(codes)
    return {
        "schema_version": PROFILE_SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "model_version": model_version,
        "n_rows": int(p.size),
        "n_effective": int(p.size) if n_eff is None else n_eff,
        "grouped": codes is not None,
        "n_bins": n_bins,
        "sample_size": sample_size,
        "numeric": {c: numeric_profile(features[c].to_numpy(), c, n_bins, sample_size, codes) for c in numeric},
        "categorical": {c: categorical_profile(features[c].to_numpy(), c, codes) for c in categorical},
        "prediction": numeric_profile(p, "prediction", n_bins, sample_size, codes),
        "performance": {
            "n": int(p.size),
            "brier": brier_score(p, y),
            "log_loss": log_loss(p, y),
            "ece": expected_calibration_error(p, y),
            "ece_bins": ECE_BINS,
            "base_rate": float(y.mean()),
        },
    }


REQUIRED_KEYS = ("schema_version", "n_rows", "numeric", "categorical", "prediction", "performance")
NUMERIC_KEYS = ("n", "missing_fraction", "edges", "proportions", "mean", "std", "sample")


def validate_profile(profile: dict[str, Any], source: str = "profile") -> dict[str, Any]:
    """Check a loaded profile's structure; raise :class:`ProfileError` naming the first problem."""
    missing = [k for k in REQUIRED_KEYS if k not in profile]
    if missing:
        raise ProfileError(f"{source}: missing keys {missing}")
    if profile["schema_version"] != PROFILE_SCHEMA_VERSION:
        raise ProfileError(f"{source}: schema_version {profile['schema_version']!r}, "
                           f"this code reads {PROFILE_SCHEMA_VERSION}")
    numerics: list[tuple[str, dict]] = [*profile["numeric"].items(), ("prediction", profile["prediction"])]
    for name, prof in numerics:
        lacking = [k for k in NUMERIC_KEYS if k not in prof]
        if lacking:
            raise ProfileError(f"{source}: numeric feature {name!r} lacks {lacking}")
        if len(prof["proportions"]) != len(prof["edges"]) + 1:
            raise ProfileError(f"{source}: numeric feature {name!r} has {len(prof['edges'])} edges "
                               f"but {len(prof['proportions'])} proportions")
        if not prof["sample"]:
            raise ProfileError(f"{source}: numeric feature {name!r} has an empty sample")
    for name, prof in profile["categorical"].items():
        if not prof.get("frequencies"):
            raise ProfileError(f"{source}: categorical feature {name!r} has no frequencies")
    for k in ("brier", "log_loss", "ece"):
        if not math.isfinite(float(profile["performance"].get(k, float("nan")))):
            raise ProfileError(f"{source}: performance.{k} missing or not finite")
    return profile


def save_profile(profile: dict[str, Any], path: Path | str) -> Path:
    """Write the profile as JSON atomically (a reader never sees half a file)."""
    from monitoring.report import atomic_write_text

    return atomic_write_text(Path(path), json.dumps(profile, allow_nan=False))


def load_profile(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"reference profile not found: {path}")
    try:
        profile = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}: not valid JSON ({exc})") from None
    return validate_profile(profile, str(path))


def feature_names(profile: dict[str, Any]) -> Sequence[str]:
    return [*profile["numeric"], *profile["categorical"]]

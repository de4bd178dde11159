"""Reference profile: contents, JSON round trip, and refusal of bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitoring.reference import (ProfileError, build_reference_profile, expected_calibration_error, load_profile,
                                  save_profile)
from tests.monitoring import synthetic as syn


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    feats = syn.features(8000, rng)
    p = rng.beta(2, 2, 8000)
    y = (rng.random(8000) < p).astype(int)
    return feats, p, y


def test_profile_contents_and_round_trip(data, tmp_path):
    feats, p, y = data
    prof = build_reference_profile(feats, p, y, syn.numeric_names(7), syn.CATEGORICAL, n_bins=10, sample_size=1000)
    price = prof["numeric"]["price"]
    assert len(price["edges"]) == 9 and len(price["proportions"]) == 10
    assert np.allclose(price["proportions"], 0.1, atol=0.002)  # deciles of a continuous feature
    assert price["sample_kind"] == "quantile_sketch" and len(price["sample"]) == 1000
    assert price["mean"] == pytest.approx(feats["price"].mean())
    assert price["std"] == pytest.approx(feats["price"].std())
    # The quantile sketch reproduces the full ECDF to within 1/(2m) everywhere.
    full = np.sort(feats["price"].to_numpy())
    grid = np.linspace(0, 1, 501)
    ecdf_full = np.searchsorted(full, grid, "right") / full.size
    ecdf_sketch = np.searchsorted(np.asarray(price["sample"]), grid, "right") / 1000
    assert np.max(np.abs(ecdf_full - ecdf_sketch)) <= 1 / 1000 + 1e-9
    polls = prof["numeric"]["poll_average"]
    assert polls["missing_fraction"] == pytest.approx(feats["poll_average"].isna().mean())
    # Discrete feature: tied quantiles are merged, so no reference bin is empty.
    n_polls = prof["numeric"]["n_polls"]
    assert len(n_polls["edges"]) < 9 and min(n_polls["proportions"]) > 0
    freq = prof["categorical"]["event_type"]["frequencies"]
    assert sum(freq.values()) == pytest.approx(1.0) and set(freq) == set(syn.EVENT_TYPES)
    perf = prof["performance"]
    assert perf["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert perf["ece"] == pytest.approx(expected_calibration_error(p, y))

    path = save_profile(prof, tmp_path / "reference_profile.json")
    assert load_profile(path) == json.loads(json.dumps(prof))


def test_small_reference_keeps_exact_sample(data):
    feats, p, y = data
    prof = build_reference_profile(feats.head(300), p[:300], y[:300], ["price"], [], sample_size=5000)
    assert prof["numeric"]["price"]["sample_kind"] == "exact"
    assert prof["numeric"]["price"]["sample"] == sorted(feats["price"].head(300).tolist())


def test_ece_matches_direct_loop():
    rng = np.random.default_rng(0)
    p = rng.random(2000)
    y = (rng.random(2000) < p ** 2).astype(float)
    direct = 0.0
    for b in range(10):
        m = (p >= b / 10) & (p < (b + 1) / 10) if b < 9 else (p >= 0.9)
        if m.any():
            direct += m.sum() / p.size * abs(p[m].mean() - y[m].mean())
    assert expected_calibration_error(p, y) == pytest.approx(direct)


@pytest.mark.parametrize("mutate, message", [
    (lambda f, p, y: (f.drop(columns="price"), p, y), "not in the DataFrame"),
    (lambda f, p, y: (f, np.append(p[:-1], 1.5), y), "not a probability"),
    (lambda f, p, y: (f, p, np.append(y[:-1], 2)), "not 0/1"),
    (lambda f, p, y: (f, p[:-1], y[:-1]), "row counts differ"),
    (lambda f, p, y: (f.assign(price=np.r_[np.inf, f["price"].to_numpy()[1:]]), p, y), "infinite"),
    (lambda f, p, y: (f.assign(price="x"), p, y), "not numeric"),
    (lambda f, p, y: (f.assign(price=np.nan), p, y), "every value is missing"),
])
def test_bad_inputs_are_refused_with_a_reason(data, mutate, message):
    feats, p, y = mutate(*data)
    with pytest.raises(ProfileError, match=message):
        build_reference_profile(feats, p, y, ["price"], ["event_type"])


def test_feature_listed_twice_is_refused(data):
    with pytest.raises(ProfileError, match="both numeric and categorical"):
        build_reference_profile(*data, ["price"], ["price"])


def test_load_refuses_broken_profiles(data, tmp_path):
    prof = build_reference_profile(*data, ["price"], [])
    bad = dict(prof, numeric={"price": {**prof["numeric"]["price"], "proportions": [1.0]}})
    save_profile(bad, tmp_path / "p.json")
    with pytest.raises(ProfileError, match="9 edges but 1 proportions"):
        load_profile(tmp_path / "p.json")
    (tmp_path / "q.json").write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(tmp_path / "q.json")
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "absent.json")
    save_profile({k: v for k, v in prof.items() if k != "performance"}, tmp_path / "r.json")
    with pytest.raises(ProfileError, match="missing keys"):
        load_profile(tmp_path / "r.json")

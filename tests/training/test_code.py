"""Code tests: pure functions of the training package (metrics, split, gates, hashing, as-of logic)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import evaluate
from training.data import (
    TrainingSetError,
    build_entity_frame,
    content_hash,
    explicit_checks,
    markets_as_of,
)
from training.registry import GATES, GateLimits, evaluate_gates, failed_gates_of, gate_tags, stale_comparison
from training.split import market_group_folds, split_by_resolution

T = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731


# ---------------------------------------------------------------- metrics

def test_brier_and_log_loss_known_values():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.1, 0.6, 0.5])
    assert evaluate.brier(y, p) == pytest.approx((0.01 + 0.01 + 0.16 + 0.25) / 4)
    assert evaluate.log_loss(y, p) == pytest.approx(-np.mean(np.log([0.9, 0.9, 0.6, 0.5])))


def test_ece_zero_for_perfect_bins_and_positive_when_miscalibrated():
    y = np.array([1] * 3 + [0] * 7 + [1] * 8 + [0] * 2)
    calibrated = np.array([0.3] * 10 + [0.8] * 10)
    assert evaluate.ece(y, calibrated) == pytest.approx(0.0, abs=1e-12)
    overconfident = np.array([0.05] * 10 + [0.99] * 10)
    assert evaluate.ece(y, overconfident) == pytest.approx(0.5 * 0.25 + 0.5 * 0.19)


def test_brier_skill_is_relative_to_market_price():
    y = np.array([1, 0, 1, 0])
    market = np.array([0.6, 0.4, 0.6, 0.4])
    m = evaluate.forecast_metrics(y, market, market)
    assert m["brier_skill"] == pytest.approx(0.0)
    better = evaluate.forecast_metrics(y, np.array([0.8, 0.2, 0.8, 0.2]), market)
    assert better["brier_skill"] == pytest.approx(1 - 0.04 / 0.16)


def test_lifecycle_phase_splits_market_lifetime_in_thirds():
    frame = pd.DataFrame({"created_at": [T("2024-01-01")] * 3, "resolved_at": [T("2024-01-31")] * 3,
                          "ts": [T("2024-01-02"), T("2024-01-15"), T("2024-01-30")]})
    assert list(evaluate.lifecycle_phase(frame)) == ["early", "active", "late"]


def test_slice_table_has_one_row_per_slice_value(synthetic_ts):
    frame = synthetic_ts.frame
    table = evaluate.slice_table(frame, frame["price"].to_numpy())
    assert set(table["slice"]) == {"event_type", "platform", "phase"}
    assert set(table.loc[table["slice"] == "platform", "value"]) == set(frame["platform"])
    assert (table["brier_skill"].abs() < 1e-12).all()  # the market price scored against itself


# ---------------------------------------------------------------- split

def test_split_keeps_markets_whole_and_validates_latest_resolved(synthetic_ts):
    split = split_by_resolution(synthetic_ts.frame, 0.25)
    train_ids, valid_ids = set(split.train["market_id"]), set(split.valid["market_id"])
    assert not train_ids & valid_ids
    assert len(split.train) + len(split.valid) == len(synthetic_ts.frame)
    assert split.train["resolved_at"].max() <= split.valid["resolved_at"].min()
    assert len(valid_ids) == round(0.25 * synthetic_ts.frame["market_id"].nunique())


def test_group_folds_never_share_a_market(synthetic_ts):
    frame = synthetic_ts.frame
    folds = market_group_folds(frame, n_splits=3, seed=0)
    assert len(folds) == 3
    for train_idx, test_idx in folds:
        assert not set(frame["market_id"].iloc[train_idx]) & set(frame["market_id"].iloc[test_idx])
    all_test = np.sort(np.concatenate([t for _, t in folds]))
    assert np.array_equal(all_test, np.arange(len(frame)))


def test_split_refuses_bad_fraction(synthetic_ts):
    with pytest.raises(ValueError, match="valid_fraction"):
        split_by_resolution(synthetic_ts.frame, 1.0)


# ---------------------------------------------------------------- gates

GOOD = {"valid_brier": 0.09, "valid_ece": 0.02, "valid_roc_auc": 0.9, "valid_brier_skill": 0.05,
        "train_valid_gap": 0.005}


def metrics_for(weighting: str, changes: dict | None = None) -> dict:
    """GOOD (+ changes) under the metric names the gates read for this weighting."""
    limits = GateLimits(weighting=weighting)
    unweighted = ("valid_roc_auc", "champion_compared_markets")
    named = {(k if k in unweighted else limits.key(k)): v for k, v in {**GOOD, **(changes or {})}.items()}
    return named


@pytest.mark.parametrize("weighting", ["market", "row"])
def test_all_gates_pass_for_a_good_model_without_champion(weighting):
    verdicts = evaluate_gates(metrics_for(weighting), GateLimits(weighting=weighting))
    assert all(v.passed for v in verdicts), [v.tag_value() for v in verdicts]
    assert gate_tags(verdicts)["gate.vs_champion"].startswith("pass: no champion")


@pytest.mark.parametrize("weighting", ["market", "row"])
@pytest.mark.parametrize("change,gate", [
    ({"valid_brier": 0.3}, "brier"), ({"valid_ece": 0.08}, "ece"), ({"valid_roc_auc": 0.55}, "roc_auc"),
    ({"valid_brier_skill": 0.0}, "brier_skill"), ({"train_valid_gap": 0.2}, "train_valid_gap"),
    ({"champion_valid_brier": 0.08, "compared_valid_brier": 0.09, "champion_compared_markets": 40}, "vs_champion"),
    ({"champion_compared_markets": 0}, "vs_champion"),
])
def test_each_gate_fails_alone_and_is_named(change, gate, weighting):
    verdicts = evaluate_gates(metrics_for(weighting, change), GateLimits(weighting=weighting))
    failed = [v for v in verdicts if not v.passed]
    assert [v.gate for v in failed] == [gate]
    if gate != "roc_auc" and change.get("champion_compared_markets") != 0:
        assert f"{weighting}-weighted" in failed[0].detail
    tags = gate_tags(verdicts)
    assert tags["gates_passed"] == "false"
    assert failed_gates_of(tags)[0].startswith(f"gate.{gate}: fail")


def test_gates_read_the_metrics_of_their_weighting():
    # row-weighted scores bad (one long unlucky market), market-weighted ones good
    metrics = {**metrics_for("market"), **{k: v for k, v in metrics_for("row", {"valid_brier_skill": -0.1}).items()}}
    assert all(v.passed for v in evaluate_gates(metrics, GateLimits(weighting="market")))
    assert [v.gate for v in evaluate_gates(metrics, GateLimits(weighting="row")) if not v.passed] == ["brier_skill"]
    with pytest.raises(ValueError, match="weighting"):
        evaluate_gates(metrics, GateLimits(weighting="snapshot"))


def test_vs_champion_compares_on_the_unseen_markets_not_all_validation_rows():
    # Over all validation rows the new model is far better (0.09 vs a champion at 0.2 that had
    # trained on most of them would be the flattering comparison); on the unseen ones it is worse.
    metrics = metrics_for("market", {"champion_valid_brier": 0.08, "compared_valid_brier": 0.1,
                                     "champion_compared_markets": 12})
    verdict = next(v for v in evaluate_gates(metrics) if v.gate == "vs_champion")
    assert not verdict.passed and "12 validation markets the champion never trained on" in verdict.detail
    assert verdict.value == pytest.approx(0.02)
    nothing = next(v for v in evaluate_gates(metrics_for("market", {"champion_compared_markets": 0}))
                   if v.gate == "vs_champion")
    assert not nothing.passed and "no validation market is unseen by the champion" in nothing.detail


def test_champion_tolerance_is_configurable():
    metrics = metrics_for("market", {"champion_valid_brier": 0.085, "compared_valid_brier": 0.09,
                                     "champion_compared_markets": 40})
    assert not all(v.passed for v in evaluate_gates(metrics, GateLimits(champion_tolerance=0.001)))
    assert all(v.passed for v in evaluate_gates(metrics, GateLimits(champion_tolerance=0.01)))


def test_every_gate_needs_a_recorded_pass_verdict():
    tags = gate_tags(evaluate_gates(metrics_for("market")))
    assert failed_gates_of(tags) == []
    # e.g. a version registered before the vs_champion gate existed: never judged by it
    without = {k: v for k, v in tags.items() if k != "gate.vs_champion"}
    assert failed_gates_of(without) == ["gate.vs_champion: no verdict recorded"]
    assert len(failed_gates_of({"gates_passed": "true"})) == len(GATES)


def test_stale_comparison_names_the_champion_judged_against_and_the_current_one():
    assert stale_comparison({"compared_with_champion": "4"}, "5", "4") is None
    assert stale_comparison({"compared_with_champion": "none"}, "5", None) is None  # nothing to beat
    assert stale_comparison({}, "5", "5") is None  # already champion
    assert "against v3, not the current champion v4" in stale_comparison({"compared_with_champion": "3"}, "5", "4")
    assert "against no champion" in stale_comparison({"compared_with_champion": "none"}, "5", "4")
    assert "unrecorded champion" in stale_comparison({}, "5", "4")  # versions from before the tag


# ---------------------------------------------------------------- recorded model params

def test_training_config_records_the_effective_params_and_rebuilds_them(monkeypatch):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from training.pipeline import DEFAULT_HGB_PARAMS, ModelSpec, build_estimator
    from training.train import TrainConfig

    spec = ModelSpec(params={"max_iter": 30})
    params = spec.as_params()
    assert params["model.max_iter"] == 30  # the override
    assert params["model.learning_rate"] == DEFAULT_HGB_PARAMS["learning_rate"]  # and the defaults used
    recorded = TrainConfig(spec=spec).to_json()
    # The code defaults change (a value, and a new key) after the run was recorded.
    monkeypatch.setitem(DEFAULT_HGB_PARAMS, "learning_rate", 0.3)
    monkeypatch.setitem(DEFAULT_HGB_PARAMS, "max_bins", 31)
    assert ModelSpec().effective_params()["learning_rate"] == 0.3  # the patch does change fresh specs

    def fitted_params(s: ModelSpec) -> dict:
        clf = build_estimator(s, ["price"], [])["classifier"].estimator
        assert isinstance(clf, HistGradientBoostingClassifier)
        return clf.get_params()

    rebuilt = fitted_params(TrainConfig.from_json(recorded).spec)
    assert (rebuilt["learning_rate"], rebuilt["max_bins"], rebuilt["max_iter"]) == (0.05, 255, 30)


def test_market_weighted_metrics_weight_each_market_equally():
    # market a: 9 snapshots forecast perfectly; market b: 1 snapshot forecast 0 for outcome 1
    y = np.array([1] * 9 + [1])
    p = np.array([1.0] * 9 + [0.0])
    market = np.full(10, 0.5)
    m = evaluate.forecast_metrics(y, p, market, np.array(["a"] * 9 + ["b"]))
    assert m["brier"] == pytest.approx(0.1)
    assert m["mw_brier"] == pytest.approx(0.5)
    assert m["mw_brier_market"] == pytest.approx(0.25)
    assert m["mw_brier_skill"] == pytest.approx(1 - 0.5 / 0.25)


# ---------------------------------------------------------------- hashing and checks

def test_content_hash_is_order_independent_and_value_sensitive(synthetic_ts):
    frame = synthetic_ts.frame
    shuffled = frame.sample(frac=1.0, random_state=3)[list(reversed(frame.columns))]
    assert content_hash(shuffled) == content_hash(frame)
    changed = frame.copy()
    changed.loc[5, "price"] = changed.loc[5, "price"] + 1e-9
    assert content_hash(changed) != content_hash(frame)


def test_explicit_checks_name_each_violation(synthetic_ts):
    frame = synthetic_ts.frame.copy()
    frame.loc[0, "ts"] = frame.loc[0, "resolved_at"]
    frame.loc[1, "label"] = 2
    frame = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    rules = {f["rule"] for f in explicit_checks(frame)}
    assert any("ts < resolved_at" in r for r in rules)
    assert any("unique" in r for r in rules)
    assert any("label in {0, 1}" in r for r in rules)


# ---------------------------------------------------------------- as-of entity building

def _markets() -> pd.DataFrame:
    rows = [
        # m1: created, then resolved (outcome 1) on 02-01, that version published 02-02
        ("m1", T("2024-01-01"), None, None, T("2024-01-01"), T("2024-01-01 01:00")),
        ("m1", T("2024-01-01"), T("2024-02-01"), 1, T("2024-02-01"), T("2024-02-02")),
        # m2: resolved 03-01 (outcome 0), sent once after resolution
        ("m2", T("2024-01-10"), T("2024-03-01"), 0, T("2024-03-01"), T("2024-03-02")),
        # m3: still open
        ("m3", T("2024-01-05"), None, None, T("2024-01-05"), T("2024-01-06")),
    ]
    f = pd.DataFrame(rows, columns=["market_id", "created_at", "resolved_at", "outcome", "updated_at", "ingested_at"])
    f["resolved_at"] = pd.to_datetime(f["resolved_at"], utc=True)
    f["outcome"] = f["outcome"].astype("Int8")
    f["resolution_date"] = f["created_at"] + pd.Timedelta(days=40)
    f["batch_id"] = ["b1", "b2", "b3", "b1"]
    return f


def _prices() -> pd.DataFrame:
    rows = []
    for market, start, days in (("m1", "2024-01-02", 40), ("m2", "2024-01-11", 60), ("m3", "2024-01-06", 30)):
        for d in range(days):
            ts = T(start) + pd.Timedelta(days=d)
            rows.append((market, ts, 0.5, ts + pd.Timedelta(hours=1), f"p{ts.month}"))
    return pd.DataFrame(rows, columns=["market_id", "ts", "price", "ingested_at", "batch_id"])


def test_markets_as_of_picks_the_version_known_then():
    m = _markets()
    early = markets_as_of(m, T("2024-01-20")).set_index("market_id")
    assert pd.isna(early.loc["m1", "resolved_at"]) and "m2" not in early.index
    late = markets_as_of(m, T("2024-03-05")).set_index("market_id")
    assert late.loc["m1", "outcome"] == 1 and late.loc["m2", "outcome"] == 0


def test_entity_rows_only_resolved_markets_before_resolution_and_as_of():
    entities = build_entity_frame(_markets(), _prices(), T("2024-02-15"))
    # m1 resolved 02-01 but published 02-02: known at 02-15; m2 resolves later; m3 is open
    assert set(entities["market_id"]) == {"m1"}
    assert (entities["ts"] < entities["resolved_at"]).all()
    assert entities["label"].eq(1).all()
    # the resolved version was not yet ingested on 02-01 12:00: no examples at all
    assert build_entity_frame(_markets(), _prices(), T("2024-02-01 12:00")).empty
    everything = build_entity_frame(_markets(), _prices(), T("2024-12-31"))
    assert set(everything["market_id"]) == {"m1", "m2"}
    assert len(everything) == 30 + 50  # m1: 01-02..01-31, m2: 01-11..02-29


def test_outcome_revealing_future_rows_change_nothing():
    """Leakage: a snapshot at/after resolution, or ingested after as_of, priced at the outcome."""
    as_of = T("2024-02-15")
    base = build_entity_frame(_markets(), _prices(), as_of)
    leaky = pd.concat([_prices(), pd.DataFrame([
        ("m1", T("2024-02-01"), 1.0, T("2024-02-01 01:00"), "px"),        # at resolution
        ("m1", T("2024-01-15 12:00"), 1.0, T("2024-02-20"), "py"),       # ingested after as_of
        ("m2", T("2024-02-10"), 0.0, T("2024-02-10 01:00"), "pz"),       # market not resolved by as_of
    ], columns=["market_id", "ts", "price", "ingested_at", "batch_id"])], ignore_index=True)
    assert content_hash(build_entity_frame(_markets(), leaky, as_of)) == content_hash(base)


def test_raw_batch_ids_include_the_poll_and_market_info_rows_joined():
    from training.data import raw_batch_ids

    as_of = T("2024-02-15")
    entities = build_entity_frame(_markets(), _prices(), as_of)  # m1, daily 01-02 .. 01-31
    polls = pd.DataFrame([
        ("m1", T("2024-01-01"), T("2024-01-01 02:00"), "poll-old"),     # superseded before the first snapshot
        ("m1", T("2024-01-01 12:00"), T("2024-01-01 13:00"), "poll-a"),  # joined to 01-02 .. 01-19
        ("m1", T("2024-01-20"), T("2024-01-20 01:00"), "poll-b"),        # joined to 01-20 .. 01-31
        ("m1", T("2024-01-25"), T("2024-02-20"), "poll-late"),           # published after as_of
        ("m1", T("2024-02-05"), T("2024-02-05 01:00"), "poll-after"),    # after every snapshot
        ("m2", T("2024-01-20"), T("2024-01-20 01:00"), "poll-m2"),       # market not in the set
    ], columns=["market_id", "ts", "ingested_at", "batch_id"])
    info = pd.DataFrame([("m1", T("2024-01-01"), T("2024-01-01 01:00"), "info-created")],
                        columns=["market_id", "event_ts", "ingested_at", "batch_id"])
    base = set(raw_batch_ids(_markets(), _prices(), entities, as_of))
    got = set(raw_batch_ids(_markets(), _prices(), entities, as_of,
                            {"poll_features": polls, "market_info": info}))
    assert got - base == {"poll-a", "poll-b", "info-created"}


def test_assemble_refuses_reordered_features():
    from training.data import assemble

    entities = build_entity_frame(_markets(), _prices(), T("2024-12-31"))
    feats = entities[["market_id", "ts"]].assign(price=0.5)
    with pytest.raises(TrainingSetError, match="rows"):
        assemble(entities, feats.iloc[:-1])
    with pytest.raises(TrainingSetError, match="order"):
        assemble(entities, feats.iloc[::-1])


# ---------------------------------------------------------------- backtest

def test_betting_rule_pnl_known_values():
    from training.backtest import BettingRule

    rule = BettingRule(edge=0.05, stake=2.0, fee=0.01)
    model = np.array([0.70, 0.30, 0.52, 0.70, 0.5])
    price = np.array([0.50, 0.50, 0.50, 0.50, 0.005])
    y = np.array([1, 1, 1, 0, 1])
    pnl, side = rule.pnl(model, price, y)
    assert list(side) == [1, -1, 0, 1, 0]  # no bet inside the edge, nor at a price below the floor
    assert pnl == pytest.approx([2.0 * (1 / 0.5 - 1) - 0.02, -2.0 - 0.02, 0.0, -2.0 - 0.02, 0.0])


def test_walk_forward_backtest_trains_only_on_markets_resolved_before_each_cutoff(synthetic_ts):
    from training.backtest import BacktestConfig, run
    from training.pipeline import ModelSpec

    frame = synthetic_ts.frame
    truth = frame[["market_id", "ts"]].assign(true_probability=frame["price"].clip(0.01, 0.99))
    config = BacktestConfig(n_periods=2, spec=ModelSpec(kind="logreg", calibration=None), min_train_markets=10)
    result = run(synthetic_ts, config, truth)
    periods = result.periods
    assert len(periods) == 2 and (periods["train_markets"] >= 10).all()
    assert periods["start"].is_monotonic_increasing
    assert (periods["train_markets"].diff().dropna() >= 0).all()  # history only grows
    assert result.overall["n"] == periods["n"].sum()
    assert result.overall["brier_market"] == pytest.approx(
        evaluate.brier(frame.loc[frame["ts"] >= periods["start"].iloc[0], "label"],
                       frame.loc[frame["ts"] >= periods["start"].iloc[0], "price"]))
    assert "brier_best_achievable" in result.overall and "pnl" in result.overall
    assert "overall:" in result.to_text()


# ---------------------------------------------------------------- lineage: git state

def test_git_dirty_tells_a_clean_checkout_from_a_modified_one(tmp_path, monkeypatch):
    """On a scratch repository in tmp_path (never the project's): None outside a checkout, False
    when the tree matches HEAD, True after a tracked file changes or an untracked one appears."""
    import shutil
    import subprocess

    from training.tracking import git_commit, git_dirty

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    assert git_dirty(tmp_path) is None
    for var, value in {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t",
                       "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@example.org"}.items():
        monkeypatch.setenv(var, value)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "model.py").write_text("LEARNING_RATE = 0.05\n")
    for cmd in (["init", "-q"], ["add", "model.py"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, capture_output=True)
    assert len(git_commit(repo)) == 40
    assert git_dirty(repo) is False
    (repo / "model.py").write_text("LEARNING_RATE = 0.1\n")
    assert git_dirty(repo) is True
    subprocess.run(["git", "checkout", "-q", "--", "model.py"], cwd=repo, check=True, capture_output=True)
    assert git_dirty(repo) is False
    (repo / "new_module.py").write_text("X = 1\n")
    assert git_dirty(repo) is True

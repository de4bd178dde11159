"""Promote and rollback on a real MLflow sqlite store: a version becomes champion only with every
gate passed *against the current champion*, or by rollback to a former champion.

Its own store (these tests move the champion alias in ways test_model.py does not expect). The
absolute gates are loose; the champion tolerance keeps its production default (0.002), because
these tests are about which champion a vs_champion verdict speaks of.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from training.pipeline import ModelSpec
from training.registry import (
    CHALLENGER,
    CHAMPION,
    GateLimits,
    RegistryError,
    aliases,
    promote,
    promotion_refusal,
    resolve_version,
    rollback,
)
from training.train import TrainConfig, train

pytestmark = pytest.mark.slow

LOOSE = GateLimits(max_brier=0.25, max_ece=0.2, min_roc_auc=0.5, min_brier_skill=-1.0, max_train_valid_gap=0.3)
FAST = {"importance_repeats": 1, "baseline_logreg": False}


@pytest.fixture(scope="module")
def history(store, ts):
    """v1 weak, trained while there was no champion; v2 good, champion; v3 failing its gates."""
    import sklearn.ensemble  # noqa: F401  (threadpoolctl only limits libraries already loaded)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        weak = train(store, training_set=ts, limits=LOOSE,
                     config=TrainConfig(spec=ModelSpec(params={"max_iter": 1, "learning_rate": 0.01}), **FAST))
        good = train(store, training_set=ts, limits=LOOSE, config=TrainConfig(**FAST), promote_if_passed=True)
        failing = train(store, training_set=ts,  # default gates: a ~constant forecast has no skill
                        config=TrainConfig(spec=ModelSpec(kind="logreg", params={"C": 1e-6}, calibration=None), **FAST))
    assert weak.passed and good.aliases == [CHAMPION] and not failing.passed
    return SimpleNamespace(weak=weak.version, good=good.version, failing=failing.version, results=(weak, good))


def champion(store) -> str:
    return aliases(store, store.model_name)[CHAMPION]


def test_promote_refuses_a_verdict_judged_against_another_champion(store, history):
    weak, good = history.results
    tags = resolve_version(store, store.model_name, history.weak).tags
    assert tags["gate.vs_champion"].startswith("pass: no champion") and tags["compared_with_champion"] == "none"
    # what the stale verdict would let through: a model clearly worse than the champion
    assert weak.metrics["valid_mw_brier"] - good.metrics["valid_mw_brier"] > GateLimits().champion_tolerance
    for dry_run in (True, False):
        with pytest.raises(RegistryError, match=rf"v{history.weak} cannot be promoted; .*judged against no "
                                                rf"champion.*not the current champion v{history.good}.*Train a new"):
            promote(store, history.weak, dry_run=dry_run)
    assert champion(store) == history.good


def test_promote_refuses_a_missing_gate_verdict(store, history):
    from training.tracking import client

    c = client(store)
    verdict = resolve_version(store, store.model_name, history.good).tags["gate.vs_champion"]
    c.delete_model_version_tag(store.model_name, history.good, "gate.vs_champion")
    try:
        with pytest.raises(RegistryError, match="gate.vs_champion: no verdict recorded"):
            promote(store, history.good, dry_run=True)
    finally:
        c.set_model_version_tag(store.model_name, history.good, "gate.vs_champion", verdict)
    assert promotion_refusal(store, store.model_name, resolve_version(store, store.model_name, history.good)) is None


def test_promoting_the_champion_again_is_refused_and_changes_nothing(store, history):
    """It used to answer "v2 -> v2", rewrite the champion's previous_champion and promoted_at, and add
    a fake move to the alias history (rollback already refused the same)."""
    from training.tracking import client

    before = resolve_version(store, store.model_name, history.good).tags
    moves = {k for k in client(store).get_registered_model(store.model_name).tags if k.startswith("alias_history.")}
    for dry_run in (True, False):
        with pytest.raises(RegistryError, match=rf"v{history.good} is already champion; nothing to promote"):
            promote(store, history.good, dry_run=dry_run)
    assert champion(store) == history.good
    assert resolve_version(store, store.model_name, history.good).tags == before
    assert {k for k in client(store).get_registered_model(store.model_name).tags
            if k.startswith("alias_history.")} == moves


def test_rollback_cannot_make_a_never_champion_version_champion_around_the_gates(store, history):
    with pytest.raises(RegistryError, match=rf"v{history.failing}: it was never champion and failing gates: "
                                            r".*gate.brier_skill: fail"):
        rollback(store, history.failing, reason="bypass attempt")
    with pytest.raises(RegistryError, match=rf"v{history.weak}: it was never champion and its vs_champion gate "
                                            r"was judged against no champion"):
        rollback(store, history.weak, reason="bypass attempt", dry_run=True)
    assert champion(store) == history.good


def test_rollback_to_a_former_champion_and_a_stale_challenger(store, ts, history):
    """v4 beats v2 and is promoted; v5 is compared with v4; rollback to v2 (a former champion,
    allowed although its own verdict spoke of no champion) leaves challenger v5 judged against v4."""
    near = replace(LOOSE, champion_tolerance=0.05)  # another seed may be a bit worse
    fourth = train(store, training_set=ts, limits=near, config=TrainConfig(spec=ModelSpec(seed=7), **FAST))
    assert fourth.passed and resolve_version(store, store.model_name, fourth.version).tags[
        "compared_with_champion"] == history.good
    assert promote(store).to_version == fourth.version  # the challenger, judged against the champion
    fifth = train(store, training_set=ts, limits=near, config=TrainConfig(spec=ModelSpec(seed=8), **FAST))
    assert fifth.passed and aliases(store, store.model_name)[CHALLENGER] == fifth.version

    back = rollback(store, history.good, reason="v4 miscalibrated on crypto")
    assert (back.from_version, back.to_version) == (fourth.version, history.good)
    with pytest.raises(RegistryError, match=rf"v{fifth.version} cannot be promoted; .*judged against "
                                            rf"v{fourth.version}, not the current champion v{history.good}"):
        promote(store)  # the challenger alias is stale now
    assert champion(store) == history.good
    # v4 was champion before: rolling forward to it again is a rollback, not a promotion
    assert rollback(store, fourth.version, reason="v2 worse after all").to_version == fourth.version

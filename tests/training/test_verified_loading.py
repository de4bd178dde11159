"""The one model loader's refusals, and promote / rollback refusing what it refuses, on a real MLflow
sqlite store: an artifact altered after registration, a model with types outside the skops
allow-list, a version without its sha256 tag, an artifact that is not a skops model, a registered
reference profile missing from the artifact.

Its own store: two versions trained through `train` (champion, and a challenger judged against it),
plus versions logged directly with `mlflow.sklearn.log_model`, as a model not built by our training
code would be. Every test puts back what it altered.
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from sklearn.base import BaseEstimator, TransformerMixin

from config.settings import Settings
from tests.training.artifacts import altered, flipped, stored_model_dir
from tests.training.synthetic import FEATURES
from training.pipeline import ModelSpec
from training.registry import (
    CHALLENGER,
    CHAMPION,
    MODEL_FILE,
    REFERENCE_PROFILE,
    GateLimits,
    RegistryError,
    TamperedArtifactError,
    aliases,
    load_verified_model,
    promote,
    resolve_version,
    rollback,
    trusted_types_of,
)
from training.train import TrainConfig, train

LENIENT = GateLimits(max_brier=0.25, max_ece=0.12, min_roc_auc=0.6, min_brier_skill=-1.0,
                     max_train_valid_gap=0.2, champion_tolerance=0.05)
FAST = {"importance_repeats": 1, "baseline_logreg": False}


class Passthrough(BaseEstimator, TransformerMixin):
    """A transformer of this test module: a type no artifact of ours contains."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


def pipeline_with(step) -> object:
    """The logistic-regression pipeline of our code with ``step`` in front of it (unfitted)."""
    from sklearn.pipeline import Pipeline

    from training.pipeline import build_estimator

    base = build_estimator(ModelSpec(kind="logreg", calibration=None), ["price", "volume_24h"], ["platform"])
    return Pipeline([("extra", step), *base.steps])


def calling(func):
    """A FunctionTransformer that calls ``func`` on the request's features at predict time."""
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(func=func)


# Types a model could carry that the allow-list must refuse: (make the step, its skops type name).
FOREIGN = {
    "builtins.eval": (lambda: calling(builtins.eval), "builtins.eval"),
    "builtins.exec": (lambda: calling(builtins.exec), "builtins.exec"),
    "test-module-class": (Passthrough, f"{__name__}.Passthrough"),
}


def register_logged_model(store: Settings, model, serialization_format: str = "skops") -> str:
    """Log and register ``model`` the way train() does, tagged with the sha256 of its serialized file,
    without train()'s allow-list check at logging time."""
    import tempfile

    import mlflow
    import skops.io

    from training.registry import download_model_dir, set_version_tags, sha256_file
    from training.tracking import configure_mlflow
    from training.train import model_requirements

    configure_mlflow(store)
    extra = ({"skops_trusted_types": skops.io.get_untrusted_types(data=skops.io.dumps(model))}
             if serialization_format == "skops" else {})
    with mlflow.start_run(run_name=f"logged-{serialization_format}"):
        info = mlflow.sklearn.log_model(model, name="model", serialization_format=serialization_format,
                                        pip_requirements=model_requirements(),
                                        registered_model_name=store.model_name, **extra)
    version = str(info.registered_model_version)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = download_model_dir(store, store.model_name, version, Path(tmp))
        (serialized,) = [p for p in model_dir.iterdir() if p.suffix in (".skops", ".pkl")]
        set_version_tags(store, store.model_name, version, {
            "artifact_sha256": sha256_file(serialized), "feature_names": json.dumps(FEATURES)})
    return version


@pytest.fixture(scope="module")
def versions(store, ts) -> SimpleNamespace:
    import sklearn.ensemble  # noqa: F401  (threadpoolctl only limits libraries already loaded)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        champion = train(store, training_set=ts, limits=LENIENT, config=TrainConfig(**FAST), promote_if_passed=True)
        challenger = train(store, training_set=ts, limits=LENIENT,
                           config=TrainConfig(spec=ModelSpec(seed=7), **FAST))
    assert champion.aliases == [CHAMPION] and challenger.aliases == [CHALLENGER], challenger.to_text()
    return SimpleNamespace(champion=champion.version, challenger=challenger.version)


def registry_state(store: Settings, version: str) -> tuple:
    """What an alias move changes: the aliases, the model's alias_history tags, the version's tags."""
    from training.tracking import client

    model_tags = client(store).get_registered_model(store.model_name).tags
    return (aliases(store, store.model_name), sorted(k for k in model_tags if k.startswith("alias_history.")),
            dict(resolve_version(store, store.model_name, version).tags))


# ---------------------------------------------------------------- promote / rollback

@pytest.mark.slow
def test_promote_refuses_a_tampered_artifact_and_moves_no_alias(store, versions):
    version = versions.challenger
    path = stored_model_dir(store, version) / MODEL_FILE
    before = registry_state(store, version)
    assert before[0] == {CHAMPION: versions.champion, CHALLENGER: version}
    with altered(path, flipped(path.read_bytes())):
        for dry_run in (True, False):
            with pytest.raises(TamperedArtifactError, match=rf"v{version}: artifact model.skops sha256 .* does not "
                                                            "match the registered artifact_sha256"):
                promote(store, version, dry_run=dry_run)
        with pytest.raises(TamperedArtifactError):
            promote(store)  # the challenger alias, the default
        assert registry_state(store, version) == before
    # The refusal was the artifact's: untouched, the same version is promotable.
    assert promote(store, version, dry_run=True).to_version == version


@pytest.mark.slow
def test_rollback_refuses_a_tampered_artifact_and_moves_no_alias(store, versions):
    # The challenger was never champion, but promote would accept it, so rollback may move to it.
    version = versions.challenger
    assert rollback(store, version, reason="check", dry_run=True).to_version == version
    path = stored_model_dir(store, version) / MODEL_FILE
    before = registry_state(store, version)
    with altered(path, flipped(path.read_bytes())):
        for dry_run in (True, False):
            with pytest.raises(TamperedArtifactError, match="does not match the registered artifact_sha256"):
                rollback(store, version, reason="calibration drift", dry_run=dry_run)
        assert registry_state(store, version) == before  # no alias, no rollback.reason, no history
    assert "rollback.reason" not in before[2]


# ---------------------------------------------------------------- loader refusals

@pytest.mark.parametrize("foreign", FOREIGN)
def test_trusted_types_refuses_types_outside_the_allow_list(foreign):
    make, type_name = FOREIGN[foreign]
    with pytest.raises(RegistryError, match=rf"outside the allow-list .*\['{type_name}'\]"):
        trusted_types_of(pipeline_with(make()))


@pytest.mark.slow
@pytest.mark.parametrize("foreign", FOREIGN)
def test_load_refuses_a_registered_model_with_types_outside_the_allow_list(store, versions, foreign):
    make, type_name = FOREIGN[foreign]
    version = register_logged_model(store, pipeline_with(make()))
    with pytest.raises(RegistryError, match=rf"refusing to load types outside the allow-list: \['{type_name}'\]"):
        load_verified_model(store.model_name, version, store)


@pytest.mark.slow
def test_load_refuses_an_artifact_that_is_not_a_skops_model(store, versions):
    version = register_logged_model(store, pipeline_with(Passthrough()), serialization_format="cloudpickle")
    assert resolve_version(store, store.model_name, version).tags["artifact_sha256"]
    with pytest.raises(RegistryError, match=rf"v{version}: artifact has no model.skops \(not a skops model\)"):
        load_verified_model(store.model_name, version, store)


@pytest.mark.slow
def test_load_and_promote_refuse_a_version_without_artifact_sha256(store, versions):
    from training.tracking import client

    version = versions.challenger
    sha = resolve_version(store, store.model_name, version).tags["artifact_sha256"]
    before = aliases(store, store.model_name)
    client(store).delete_model_version_tag(store.model_name, version, "artifact_sha256")
    try:
        with pytest.raises(RegistryError, match=rf"v{version}: no artifact_sha256 tag; refusing to load"):
            load_verified_model(store.model_name, CHALLENGER, store)
        with pytest.raises(RegistryError, match="no artifact_sha256 tag"):
            promote(store, version)
        assert aliases(store, store.model_name) == before
    finally:
        client(store).set_model_version_tag(store.model_name, version, "artifact_sha256", sha)
    assert load_verified_model(store.model_name, CHALLENGER, store).sha256 == sha


@pytest.mark.slow
def test_load_refuses_a_registered_reference_profile_missing_or_altered(store, versions):
    version = versions.champion
    path = stored_model_dir(store, version) / REFERENCE_PROFILE
    assert resolve_version(store, store.model_name, version).tags["reference_profile_sha256"]
    with altered(path, None):
        with pytest.raises(TamperedArtifactError, match=rf"v{version}: {REFERENCE_PROFILE} is registered but "
                                                        "missing from the artifact"):
            load_verified_model(store.model_name, version, store)
    with altered(path, path.read_bytes() + b"\n"):  # the same JSON, another sha256
        with pytest.raises(TamperedArtifactError, match="does not match the registered reference_profile_sha256"):
            load_verified_model(store.model_name, version, store)
    assert load_verified_model(store.model_name, version, store).reference_profile == json.loads(path.read_text())

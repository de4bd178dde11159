"""Model registry: register, promotion gates, promote, rollback, and the one verified loader.

Contract (docs/architecture.md, "Model registry contract"): registered model
``settings.model_name``, aliases ``champion`` / ``challenger``, version tags ``feature_service``,
``artifact_sha256``, ``training_set_hash``, ``raw_data_hash``, ``git_commit``, ``git_dirty``,
``as_of``, ``seed``, ``compared_with_champion`` and one ``gate.<name>`` per gate verdict.
:func:`load_verified_model` checks the sha256 of the serialized model before deserializing it
and refuses a mismatch. :func:`promote` and :func:`rollback` refuse a version with a failing or
missing gate verdict, or whose vs_champion verdict was judged against another champion than the
current one (rollback to a former champion excepted).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from training.tracking import client, dumps

if TYPE_CHECKING:
    from config.settings import Settings

CHAMPION, CHALLENGER = "champion", "challenger"
# Version tag: the champion version the vs_champion gate was judged against at training time
# (NO_CHAMPION when there was none). promote/rollback refuse a verdict about another champion.
COMPARED_WITH, NO_CHAMPION = "compared_with_champion", "none"
MODEL_FILE = "model.skops"
# mlflow.sklearn.log_model(extra_files=[...]) puts extra files here inside the model directory.
REFERENCE_PROFILE = "extra_files/reference_profile.json"
# Types a model artifact may contain. Anything else in a .skops file is refused on load; the
# list comes from this code, never from the artifact (whose MLmodel could whitelist anything).
# Only what our pipelines hold: skops trusts plain containers and scalars itself, and a prefix
# like "builtins." or "pandas." would admit callables (eval, exec, getattr, read_pickle) that a
# FunctionTransformer would call on the request's features.
TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "training.transformers.")


class RegistryError(RuntimeError):
    """A registry operation was refused (message says which model, version and why)."""


class TamperedArtifactError(RegistryError):
    """The model artifact's sha256 does not match the one recorded at registration."""


# ---------------------------------------------------------------- artifact hashing / skops

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def trusted_types_of(model) -> list[str]:
    """The non-default types skops needs trusted for ``model``, all checked against our allow-list."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    refused = [t for t in untrusted if not t.startswith(TRUSTED_TYPE_PREFIXES)]
    if refused:
        raise RegistryError(f"model contains types outside the allow-list {TRUSTED_TYPE_PREFIXES}: {refused}")
    return sorted(untrusted)


def load_skops_checked(path: Path):
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    refused = [t for t in untrusted if not t.startswith(TRUSTED_TYPE_PREFIXES)]
    if refused:
        raise RegistryError(f"{path}: refusing to load types outside the allow-list: {refused}")
    return skops.io.load(path, trusted=untrusted)


# ---------------------------------------------------------------- versions and tags

def resolve_version(settings: "Settings", name: str, alias_or_version: str | int):
    """The ModelVersion for an alias (``champion``) or a version number; clear error if absent."""
    from mlflow.exceptions import MlflowException

    c = client(settings)
    ref = str(alias_or_version)
    try:
        if ref.isdigit():
            return c.get_model_version(name, ref)
        return c.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        raise RegistryError(f"model '{name}': no version for '{ref}' in {settings.mlflow_tracking_uri} "
                            f"({exc.message if hasattr(exc, 'message') else exc})") from exc


def set_version_tags(settings: "Settings", name: str, version: str, tags: dict[str, Any]) -> None:
    c = client(settings)
    for key, value in tags.items():
        c.set_model_version_tag(name, str(version), key, value if isinstance(value, str) else dumps(value))


def aliases(settings: "Settings", name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client(settings).get_registered_model(name).aliases.items()}


def registered_aliases(settings: "Settings", name: str | None = None) -> dict[str, str]:
    """alias -> version of the registered model; {} before it is registered. Any other registry
    error is raised: an unreachable registry must never pass for "no alias"."""
    from mlflow.exceptions import MlflowException

    try:
        return aliases(settings, name or settings.model_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return {}


def champion_version(settings: "Settings", name: str | None = None) -> str | None:
    """The version ``champion`` points at; None without a champion or before any model is registered."""
    return registered_aliases(settings, name).get(CHAMPION)


# ---------------------------------------------------------------- loading

@dataclass
class LoadedModel:
    model: Any                   # fitted sklearn Pipeline; predict_proba(frame[feature_names])
    name: str
    version: str
    feature_service: str
    feature_names: list[str]
    sha256: str                  # verified against the version tag before loading
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    # monitoring/reference.py profile of the validation set (sha256-checked like the model)
    reference_profile: dict | None = None

    def predict(self, frame: pd.DataFrame):
        """P(outcome = 1) for each row; ``frame`` must hold every feature name."""
        missing = [c for c in self.feature_names if c not in frame.columns]
        if missing:
            raise ValueError(f"model {self.name} v{self.version}: input lacks features {missing}")
        return self.model.predict_proba(frame[self.feature_names])[:, 1]


def download_model_dir(settings: "Settings", name: str, version: str, dst: Path) -> Path:
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))


def load_verified_model(name: str | None, alias_or_version: str | int,
                        settings: "Settings | None" = None) -> LoadedModel:
    """Load a registered model after checking its artifact sha256; refuse any mismatch."""
    from config.settings import get_settings

    settings = settings or get_settings()
    name = name or settings.model_name
    mv = resolve_version(settings, name, alias_or_version)
    tags = dict(mv.tags)
    expected = tags.get("artifact_sha256")
    if not expected:
        raise RegistryError(f"model '{name}' v{mv.version}: no artifact_sha256 tag; refusing to load an unverified model")
    with tempfile.TemporaryDirectory(prefix="pm-model-") as tmp:
        model_dir = download_model_dir(settings, name, mv.version, Path(tmp))
        model_file = model_dir / MODEL_FILE
        if not model_file.exists():
            raise RegistryError(f"model '{name}' v{mv.version}: artifact has no {MODEL_FILE} (not a skops model)")
        actual = sha256_file(model_file)
        if actual != expected:
            raise TamperedArtifactError(
                f"model '{name}' v{mv.version}: artifact {MODEL_FILE} sha256 {actual} does not match the "
                f"registered artifact_sha256 {expected}; the artifact was modified after registration, refusing to load")
        # Load from the very file we hashed, so nothing can change between check and use.
        model = load_skops_checked(model_file)
        profile = read_reference_profile(model_dir, tags, f"model '{name}' v{mv.version}")
    feature_names = json.loads(tags["feature_names"]) if "feature_names" in tags else list(model.feature_names_in_)
    return LoadedModel(model=model, name=name, version=str(mv.version), feature_service=tags.get("feature_service", ""),
                       feature_names=feature_names, sha256=actual, run_id=mv.run_id or "", tags=tags,
                       reference_profile=profile)


def read_reference_profile(model_dir: Path, tags: dict[str, str], what: str) -> dict | None:
    """The model's reference profile, checked against its ``reference_profile_sha256`` tag."""
    path = model_dir / REFERENCE_PROFILE
    expected = tags.get("reference_profile_sha256")
    if not path.exists():
        if expected:
            raise TamperedArtifactError(f"{what}: {REFERENCE_PROFILE} is registered but missing from the artifact")
        return None
    actual = sha256_file(path)
    if expected and actual != expected:
        raise TamperedArtifactError(f"{what}: {REFERENCE_PROFILE} sha256 {actual} does not match the registered "
                                    f"reference_profile_sha256 {expected}; refusing to load")
    return json.loads(path.read_text())


# ---------------------------------------------------------------- gates

@dataclass(frozen=True)
class GateLimits:
    """Promotion limits. Brier/ECE/AUC are absolute; the champion tolerance is in Brier points."""

    max_brier: float = 0.24
    max_ece: float = 0.05
    min_roc_auc: float = 0.60
    min_brier_skill: float = 0.0          # strictly greater than: must beat the market price
    max_train_valid_gap: float = 0.03     # valid Brier - train Brier
    champion_tolerance: float = 0.002     # may be at most this much worse than the champion
    # "market": Brier, ECE, skill, gap and champion comparison weight every validation market
    # equally (rows 1 / snapshots of their market); "row": every snapshot equally. Market
    # weighting is the default because a market's snapshots share one outcome, so row-weighted
    # scores on a few hundred markets are dominated by the few longest ones (docs/training.md).
    weighting: str = "market"

    def key(self, metric: str) -> str:
        """Metric name under this weighting: valid_brier -> valid_mw_brier, train_valid_gap -> mw_train_valid_gap."""
        if self.weighting == "row":
            return metric
        if self.weighting != "market":
            raise ValueError(f"GateLimits.weighting must be 'market' or 'row', got {self.weighting!r}")
        if metric.startswith("valid_"):
            return "valid_mw_" + metric.removeprefix("valid_")
        for prefix in ("champion_valid_", "compared_valid_"):
            if metric.startswith(prefix):
                return prefix + "mw_" + metric.removeprefix(prefix)
        return "mw_" + metric


@dataclass
class GateVerdict:
    gate: str
    passed: bool
    value: float | None
    limit: float | None
    detail: str = ""

    def tag_value(self) -> str:
        return f"{'pass' if self.passed else 'fail'}: {self.detail}"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.5f}"


def gate_brier(m: dict, lim: GateLimits) -> GateVerdict:
    v = m[lim.key("valid_brier")]
    return GateVerdict("brier", v <= lim.max_brier, v, lim.max_brier,
                       f"valid Brier ({lim.weighting}-weighted) {_fmt(v)} <= {lim.max_brier}")


def gate_ece(m: dict, lim: GateLimits) -> GateVerdict:
    v = m[lim.key("valid_ece")]
    return GateVerdict("ece", v <= lim.max_ece, v, lim.max_ece,
                       f"valid ECE ({lim.weighting}-weighted) {_fmt(v)} <= {lim.max_ece}")


def gate_roc_auc(m: dict, lim: GateLimits) -> GateVerdict:
    v = m["valid_roc_auc"]
    return GateVerdict("roc_auc", v >= lim.min_roc_auc, v, lim.min_roc_auc, f"valid ROC AUC {_fmt(v)} >= {lim.min_roc_auc}")


def gate_brier_skill(m: dict, lim: GateLimits) -> GateVerdict:
    v = m[lim.key("valid_brier_skill")]
    return GateVerdict("brier_skill", v > lim.min_brier_skill, v, lim.min_brier_skill,
                       f"Brier skill vs market price ({lim.weighting}-weighted) {_fmt(v)} > {lim.min_brier_skill}")


def gate_train_valid_gap(m: dict, lim: GateLimits) -> GateVerdict:
    v = m[lim.key("train_valid_gap")]
    return GateVerdict("train_valid_gap", v <= lim.max_train_valid_gap, v, lim.max_train_valid_gap,
                       f"valid Brier - train Brier ({lim.weighting}-weighted) {_fmt(v)} <= {lim.max_train_valid_gap}")


def gate_vs_champion(m: dict, lim: GateLimits) -> GateVerdict:
    """Within tolerance of the champion, both scored on the validation markets the champion never
    trained on (training.train.champion_brier); no such market means no evidence, so it fails."""
    compared = m.get("champion_compared_markets")
    if compared is None:
        return GateVerdict("vs_champion", True, None, None, "no champion to compare with")
    if compared == 0:
        return GateVerdict("vs_champion", False, None, lim.champion_tolerance,
                           "no validation market is unseen by the champion (it trained on every one of them, "
                           "e.g. a backfill with an earlier as_of): nothing shows this model is as good")
    champ, ours = m[lim.key("champion_valid_brier")], m[lim.key("compared_valid_brier")]
    diff = ours - champ
    return GateVerdict("vs_champion", diff <= lim.champion_tolerance, diff, lim.champion_tolerance,
                       f"valid Brier ({lim.weighting}-weighted) {_fmt(ours)} vs champion {_fmt(champ)} on the same "
                       f"{int(compared)} validation markets the champion never trained on: diff {_fmt(diff)} "
                       f"<= {lim.champion_tolerance}")


GATES: dict[str, Callable[[dict, GateLimits], GateVerdict]] = {
    "brier": gate_brier, "ece": gate_ece, "roc_auc": gate_roc_auc, "brier_skill": gate_brier_skill,
    "train_valid_gap": gate_train_valid_gap, "vs_champion": gate_vs_champion,
}


def evaluate_gates(metrics: dict, limits: GateLimits | None = None) -> list[GateVerdict]:
    limits = limits or GateLimits()
    return [fn(metrics, limits) for fn in GATES.values()]


def gate_tags(verdicts: list[GateVerdict]) -> dict[str, str]:
    tags = {f"gate.{v.gate}": v.tag_value() for v in verdicts}
    tags["gates_passed"] = str(all(v.passed for v in verdicts)).lower()
    return tags


def failed_gates_of(tags: dict[str, str]) -> list[str]:
    """Every gate of GATES whose recorded verdict is not a pass; a missing verdict counts as failed
    (e.g. a version registered before that gate existed was never judged by it)."""
    failed = []
    for gate in GATES:
        verdict = tags.get(f"gate.{gate}")
        if verdict is None:
            failed.append(f"gate.{gate}: no verdict recorded")
        elif not verdict.startswith("pass"):
            failed.append(f"gate.{gate}: {verdict}")
    return failed


def stale_comparison(tags: dict[str, str], version: str, champion: str | None) -> str | None:
    """Why the recorded vs_champion verdict of ``version`` does not speak about ``champion``
    (None when it does, or when there is no other champion to beat)."""
    if champion is None or champion == str(version):
        return None
    judged = tags.get(COMPARED_WITH)
    if judged == champion:
        return None
    against = ("no champion (there was none when it was trained)" if judged == NO_CHAMPION
               else f"v{judged}" if judged else "an unrecorded champion (no compared_with_champion tag)")
    return (f"its vs_champion gate was judged against {against}, not the current champion v{champion}, "
            f"so nothing shows v{version} is at most the tolerance worse than v{champion}")


# ---------------------------------------------------------------- promote / rollback

@dataclass
class AliasChange:
    action: str                 # promote | rollback
    name: str
    alias: str
    from_version: str | None
    to_version: str
    dry_run: bool
    reason: str = ""

    def to_text(self) -> str:
        prefix = "[dry run] would move" if self.dry_run else "moved"
        return (f"{prefix} {self.name}@{self.alias}: v{self.from_version or '-'} -> v{self.to_version}"
                + (f" (reason: {self.reason})" if self.reason else ""))


def _current(settings: "Settings", name: str, alias: str) -> str | None:
    return aliases(settings, name).get(alias)


def _history_tag(settings: "Settings", name: str, change: AliasChange) -> None:
    c = client(settings)
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%fZ")
    c.set_registered_model_tag(name, f"alias_history.{stamp}", dumps(asdict(change)))


def promotion_refusal(settings: "Settings", name: str, mv) -> str | None:
    """Why ``mv`` may not become champion (a failing or missing gate, or a vs_champion verdict not
    judged against the current champion); None when it may."""
    tags = dict(mv.tags)
    failed = failed_gates_of(tags)
    if failed:
        return f"failing gates: {failed}"
    return stale_comparison(tags, str(mv.version), _current(settings, name, CHAMPION))


def was_champion(settings: "Settings", name: str, version: str) -> bool:
    """Whether ``version`` held the champion alias before: an alias_history record of a move to it,
    or its promoted_at / rollback.at tag (both written only when the alias moved to it)."""
    c = client(settings)
    for key, value in c.get_registered_model(name).tags.items():
        if key.startswith("alias_history."):
            try:
                change = json.loads(value)
            except json.JSONDecodeError:
                continue
            if (change.get("alias") == CHAMPION and str(change.get("to_version")) == str(version)
                    and not change.get("dry_run")):
                return True
    tags = c.get_model_version(name, str(version)).tags
    return bool(tags.get("promoted_at") or tags.get("rollback.at"))


def promote(settings: "Settings", version: str | int | None = None, name: str | None = None,
            dry_run: bool = False) -> AliasChange:
    """Make ``version`` (default: the challenger) champion, if every recorded gate passed and its
    champion comparison was made against the current champion."""
    name = name or settings.model_name
    mv = resolve_version(settings, name, version if version is not None else CHALLENGER)
    refusal = promotion_refusal(settings, name, mv)
    if refusal:
        champion = _current(settings, name, CHAMPION)
        advice = ("" if refusal.startswith("failing gates") else
                  f". Train a new version (training compares it with v{champion} on its validation rows) "
                  f"and promote that one; if v{mv.version} was champion before, use rollback")
        raise RegistryError(f"model '{name}' v{mv.version} cannot be promoted; {refusal}{advice}")
    if _current(settings, name, CHAMPION) == str(mv.version):  # as rollback: no fake v->v move, lineage kept
        raise RegistryError(f"model '{name}' v{mv.version} is already champion; nothing to promote")
    load_verified_model(name, mv.version, settings)  # never promote an artifact that would not load
    change = AliasChange("promote", name, CHAMPION, _current(settings, name, CHAMPION), str(mv.version), dry_run)
    if not dry_run:
        c = client(settings)
        c.set_registered_model_alias(name, CHAMPION, mv.version)
        if _current(settings, name, CHALLENGER) == str(mv.version):
            c.delete_registered_model_alias(name, CHALLENGER)
        set_version_tags(settings, name, mv.version, {"promoted_at": pd.Timestamp.now(tz="UTC").isoformat(),
                                                      "previous_champion": change.from_version or ""})
        _history_tag(settings, name, change)
    return change


def rollback(settings: "Settings", to_version: str | int, reason: str, name: str | None = None,
             dry_run: bool = False) -> AliasChange:
    """Point ``champion`` back at a former champion (or a version promote would accept), verified
    loadable; the reason is recorded."""
    if not reason.strip():
        raise RegistryError("rollback needs a non-empty --reason")
    name = name or settings.model_name
    mv = resolve_version(settings, name, to_version)
    current = _current(settings, name, CHAMPION)
    if current == str(mv.version):
        raise RegistryError(f"model '{name}': v{mv.version} is already champion; nothing to roll back")
    # Rollback must not be a way around the gates: only a version that was champion before, or
    # one that promote would accept, may become champion this way.
    if not was_champion(settings, name, str(mv.version)):
        refusal = promotion_refusal(settings, name, mv)
        if refusal:
            raise RegistryError(
                f"model '{name}': cannot roll back to v{mv.version}: it was never champion and {refusal}. "
                "Roll back to a former champion (registered-model tags alias_history.*), or train and "
                "promote a version that passes every gate")
    load_verified_model(name, mv.version, settings)
    change = AliasChange("rollback", name, CHAMPION, current, str(mv.version), dry_run, reason)
    if not dry_run:
        client(settings).set_registered_model_alias(name, CHAMPION, mv.version)
        set_version_tags(settings, name, mv.version, {
            "rollback.reason": reason, "rollback.from_version": current or "",
            "rollback.at": pd.Timestamp.now(tz="UTC").isoformat()})
        _history_tag(settings, name, change)
    return change

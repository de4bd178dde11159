"""One training run: training set -> split -> fit model + baselines -> evaluate -> MLflow -> register -> gates.

Every run is an MLflow run, whatever happens: a run that raises ends FAILED, a model that
fails a gate is registered with its ``gate.*`` verdicts (and no alias), so the audit export
sees every attempt.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from training.data import TrainingSet, build_training_set
from training.pipeline import ModelSpec
from training.registry import GateLimits, GateVerdict
from training.tracking import dumps

if TYPE_CHECKING:
    from config.settings import Settings


@dataclass
class TrainConfig:
    """Everything besides the data that determines a trained model (recorded for reproduce)."""

    spec: ModelSpec = field(default_factory=ModelSpec)
    valid_fraction: float = 0.25
    baseline_logreg: bool = True
    importance_repeats: int = 3

    def to_json(self) -> str:
        # The spec is recorded with its effective params, complete, so reproduce does not
        # depend on the code defaults of the day it runs (ModelSpec.merge_defaults).
        spec = {**asdict(self.spec), "params": self.spec.effective_params(), "merge_defaults": False}
        return dumps({"spec": spec, "valid_fraction": self.valid_fraction,
                      "baseline_logreg": self.baseline_logreg, "importance_repeats": self.importance_repeats})

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        raw = json.loads(text)
        return cls(spec=ModelSpec(**raw["spec"]), valid_fraction=raw["valid_fraction"],
                   baseline_logreg=raw["baseline_logreg"], importance_repeats=raw["importance_repeats"])


@dataclass
class TrainResult:
    run_id: str
    version: str
    metrics: dict[str, float]
    verdicts: list[GateVerdict]
    aliases: list[str]
    training_set_hash: str

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def to_text(self) -> str:
        lines = [f"run {self.run_id} -> model version {self.version} "
                 f"({'all gates passed' if self.passed else 'REJECTED by gates'}; aliases: {self.aliases or '-'})",
                 f"training set {self.training_set_hash[:16]}",
                 "valid, row-weighted: " + _metric_list(self.metrics, (
                     "valid_brier", "valid_brier_market", "valid_brier_skill", "valid_ece", "valid_roc_auc",
                     "train_valid_gap")),
                 # What the gates read by default (GateLimits.weighting="market"): each market counts once.
                 "valid, market-weighted: " + _metric_list(self.metrics, (
                     "valid_mw_brier", "valid_mw_brier_skill", "valid_mw_ece", "mw_train_valid_gap"))]
        lines += [f"  gate {v.gate}: {v.tag_value()}" for v in self.verdicts]
        return "\n".join(lines)


def _metric_list(metrics: dict[str, float], keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)


def model_requirements() -> list[str]:
    """Pinned requirements of the model artifact. Given explicitly: MLflow's inference runs a
    subprocess that re-imports the model (~30 s); the full environment is logged beside it."""
    from importlib import metadata

    return [f"{d}=={metadata.version(d)}" for d in ("scikit-learn", "skops", "numpy", "pandas", "scipy", "mlflow")]


def prefixed(prefix: str, metrics: dict) -> dict[str, float]:
    return {f"{prefix}_{k}": float(v) for k, v in metrics.items() if k != "n"}


def champion_training_cutoff(settings: "Settings", champ) -> tuple[pd.Timestamp | None, str]:
    """Latest resolution time among the markets the champion was fitted on, and where it came from.

    From the version's ``train_resolved_max`` tag, else its run's training_set_summary.json, else
    (conservatively: any market resolved by then may have been in its training set) its ``as_of``.
    """
    tagged = champ.tags.get("train_resolved_max")
    if tagged:
        return _utc(tagged), "train_resolved_max tag"
    if champ.run_id:
        import mlflow

        try:
            with tempfile.TemporaryDirectory(prefix="pm-champ-") as tmp:
                path = mlflow.artifacts.download_artifacts(
                    run_id=champ.run_id, artifact_path="evaluation/training_set_summary.json", dst_path=tmp)
                cutoff = json.loads(Path(path).read_text())["split"]["train_resolved_max"]
            return _utc(cutoff), "training_set_summary.json of its run"
        except Exception:  # noqa: BLE001 - an older or foreign run: fall back to as_of below
            pass
    as_of = champ.tags.get("as_of")
    return (_utc(as_of), "as_of tag") if as_of else (None, "unknown")


def _utc(text: str) -> pd.Timestamp:
    moment = pd.Timestamp(text)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def champion_brier(settings: "Settings", valid: pd.DataFrame, p_valid: np.ndarray
                   ) -> tuple[dict | None, str | None]:
    """The current champion against the new model, on the validation markets the champion never
    trained on (None if there is no champion).

    Both are scored on the same rows: validation markets resolved after the champion's training
    cutoff. In a forward retraining that is every validation market; in a backfill (an as_of
    earlier than the champion's) the champion has seen some or all of them, and scoring it on
    its own training markets would flatter it. Metrics: ``champion_valid_[mw_]brier`` and
    ``compared_valid_[mw_]brier`` (the new model) on those rows, ``champion_compared_markets``.
    """
    from training.evaluate import brier
    from training.registry import CHAMPION, champion_version, load_verified_model

    if champion_version(settings) is None:
        return None, None
    champ = load_verified_model(settings.model_name, CHAMPION, settings)  # a tampered champion is an error
    missing = [c for c in champ.feature_names if c not in valid.columns]
    if missing:
        raise ValueError(f"champion v{champ.version} needs features {missing} absent from this training set; "
                         "compare on a shared FeatureService or retire the champion explicitly")
    cutoff, source = champion_training_cutoff(settings, champ)
    unseen = np.ones(len(valid), dtype=bool) if cutoff is None else (valid["resolved_at"] > cutoff).to_numpy()
    rows = valid[unseen]
    metrics: dict = {"champion_compared_markets": float(rows["market_id"].nunique()),
                     "champion_unseen_share": float(rows["market_id"].nunique() / max(valid["market_id"].nunique(), 1))}
    mlflow_tags = {"pm.champion_training_cutoff": f"{cutoff} ({source})"}
    if len(rows):
        y, p = rows["label"].to_numpy(), champ.predict(rows)
        ours = np.asarray(p_valid)[unseen]
        weights = 1.0 / rows.groupby("market_id")["market_id"].transform("size").to_numpy(dtype=float)
        metrics.update({"champion_valid_brier": brier(y, p), "champion_valid_mw_brier": brier(y, p, weights),
                        "compared_valid_brier": brier(y, ours), "compared_valid_mw_brier": brier(y, ours, weights)})
    import mlflow

    mlflow.set_tags(mlflow_tags)
    return metrics, champ.version


def fit_and_evaluate(ts: TrainingSet, config: TrainConfig):
    """Fit the model and baselines on the market/time split; return everything to log."""
    from training.evaluate import forecast_metrics, slice_table
    from training.pipeline import fit_model, market_price_forecast, predict_proba
    from training.split import split_by_resolution

    split = split_by_resolution(ts.frame, config.valid_fraction)
    model = fit_model(config.spec, split.train, ts.feature_names)
    y_tr, y_va = split.train["label"].to_numpy(), split.valid["label"].to_numpy()
    p_tr = predict_proba(model, split.train, ts.feature_names)
    p_va = predict_proba(model, split.valid, ts.feature_names)
    market_tr, market_va = market_price_forecast(split.train), market_price_forecast(split.valid)
    ids_tr, ids_va = split.train["market_id"].to_numpy(), split.valid["market_id"].to_numpy()
    metrics = {**prefixed("train", forecast_metrics(y_tr, p_tr, market_tr, ids_tr)),
               **prefixed("valid", forecast_metrics(y_va, p_va, market_va, ids_va))}
    metrics["train_valid_gap"] = metrics["valid_brier"] - metrics["train_brier"]
    metrics["mw_train_valid_gap"] = metrics["valid_mw_brier"] - metrics["train_mw_brier"]
    forecasts = {"model": p_va, "market price": market_va}
    if config.baseline_logreg:
        logreg = fit_model(ModelSpec(kind="logreg", calibration=None, seed=config.spec.seed), split.train,
                           ts.feature_names)
        p_lr = predict_proba(logreg, split.valid, ts.feature_names)
        metrics.update(prefixed("baseline_logreg_valid", forecast_metrics(y_va, p_lr, market_va, ids_va)))
        forecasts["logistic regression"] = p_lr
    metrics.update(prefixed("baseline_market_valid", forecast_metrics(y_va, market_va, market_va, ids_va)))
    slices = slice_table(split.valid, p_va)
    return model, split, p_va, forecasts, metrics, slices


def log_artifacts(run_dir: Path, ts: TrainingSet, split, model, p_va: np.ndarray, forecasts: dict,
                  slices: pd.DataFrame, config: TrainConfig) -> dict[str, Path]:
    """Write plots, tables, summary, environment and reference profile into ``run_dir``."""
    from training.evaluate import permutation_importance_plot, reliability_diagram
    from training.tracking import pinned_environment

    y_va = split.valid["label"].to_numpy()
    paths = {"reliability": reliability_diagram(y_va, forecasts, run_dir / "reliability_diagram.png")}
    importance = permutation_importance_plot(model, split.valid, ts.feature_names,
                                             run_dir / "permutation_importance.png", seed=config.spec.seed,
                                             n_repeats=config.importance_repeats)
    importance.to_csv(run_dir / "permutation_importance.csv", index=False)
    slices.to_csv(run_dir / "slice_metrics.csv", index=False)
    summary = {**ts.summary(), "split": split.describe()}
    (run_dir / "training_set_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (run_dir / "raw_batch_ids.json").write_text(json.dumps(ts.batch_ids))
    (run_dir / "requirements.txt").write_text(pinned_environment())
    (run_dir / "training_config.json").write_text(config.to_json())
    paths["reference_profile"] = write_reference_profile(run_dir / "reference_profile.json", split.valid,
                                                         p_va, ts.feature_names)
    return paths


def write_reference_profile(path: Path, valid: pd.DataFrame, p_va: np.ndarray, feature_names: list[str]) -> Path:
    from monitoring.reference import build_reference_profile, save_profile
    from training.pipeline import split_columns

    numeric, categorical = split_columns(feature_names, valid)
    # groups: monitoring counts markets, not rows, in its significance tests (the window is
    # grouped by market); the reference must count the same way or no-drift windows alarm.
    profile = build_reference_profile(valid[feature_names], p_va, valid["label"].to_numpy(), numeric, categorical,
                                      groups=valid["market_id"].to_numpy())
    return save_profile(profile, path)


@contextmanager
def _error_tagged(mlflow) -> Iterator[None]:
    """A run that raises ends FAILED (MLflow) and says why: ``pm.error``, shown in the audit export."""
    try:
        yield
    except Exception as exc:
        mlflow.set_tag("pm.error", f"{type(exc).__name__}: {exc}"[:4_000])  # MLflow's tag limit is 5 000
        raise


def train(settings: "Settings", as_of: str | pd.Timestamp | None = None, config: TrainConfig | None = None,
          training_set: TrainingSet | None = None, limits: GateLimits | None = None,
          promote_if_passed: bool = False, parent_version: str | None = None, tune: str | None = None,
          tune_trials: int = 6, tune_space: dict[str, list] | None = None,
          trigger: dict[str, str] | None = None) -> TrainResult:
    """Train, log, register and gate one model. See module docstring. ``trigger``: extra lineage
    tags naming what started the run (``retrain_trigger``)."""
    import mlflow
    from mlflow.models import infer_signature

    from training import registry
    from training.tracking import configure_mlflow, git_commit, git_dirty

    config = config or TrainConfig()
    configure_mlflow(settings)
    with mlflow.start_run(run_name=f"train-{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%S}") as run, \
            _error_tagged(mlflow):
        mlflow.set_tags({"pm.kind": "train", "pm.as_of_requested": str(as_of)})
        ts = training_set or build_training_set(settings, as_of)
        if tune:
            from training.tune import tune as run_tuning

            config = run_tuning(ts, config, strategy=tune, n_trials=tune_trials, seed=config.spec.seed,
                                space=tune_space)
        lineage = {"feature_service": ts.feature_service, "training_set_hash": ts.content_hash,
                   "raw_data_hash": ts.raw_data_hash, "git_commit": git_commit(),
                   "git_dirty": {True: "true", False: "false", None: "unknown"}[git_dirty()],
                   "as_of": ts.as_of.isoformat(),
                   "seed": str(config.spec.seed), "parent_version": parent_version or "",
                   "feature_names": dumps(ts.feature_names),
                   "as_of_exact": str(ts.validation.get("as_of_exact", "n/a")).lower(),
                   "validation": dumps(ts.validation), **(trigger or {})}
        mlflow.set_tags({f"lineage.{k}": v for k, v in lineage.items()})
        mlflow.log_params({**config.spec.as_params(), "valid_fraction": config.valid_fraction,
                           "as_of": ts.as_of.isoformat(), "feature_service": ts.feature_service,
                           "n_rows": len(ts.frame), "n_markets": ts.frame["market_id"].nunique(),
                           "n_features": len(ts.feature_names), "tune": tune or "none"})
        model, split, p_va, forecasts, metrics, slices = fit_and_evaluate(ts, config)
        champ_scores, champ_version = champion_brier(settings, split.valid, p_va)
        if champ_scores is not None:
            metrics.update(champ_scores)
        # promote/rollback check the vs_champion verdict was judged against the champion of then.
        compared_with = champ_version or registry.NO_CHAMPION
        mlflow.set_tag("pm.compared_with_champion", compared_with)
        mlflow.log_metrics(metrics)
        for row in slices.itertuples(index=False):
            safe = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in str(row.value))
            mlflow.log_metrics({f"slice.{row.slice}.{safe}.{m}": float(getattr(row, m))
                                for m in ("brier", "brier_skill", "ece")})
        with tempfile.TemporaryDirectory(prefix="pm-train-") as tmp:
            run_dir = Path(tmp)
            paths = log_artifacts(run_dir, ts, split, model, p_va, forecasts, slices, config)
            mlflow.log_artifacts(str(run_dir), artifact_path="evaluation")
            example = split.valid[ts.feature_names].head(5)
            signature = infer_signature(example, p_va[:5])
            info = mlflow.sklearn.log_model(
                model, name="model", serialization_format="skops",
                skops_trusted_types=registry.trusted_types_of(model), signature=signature,
                input_example=example, pyfunc_predict_fn="predict_proba",
                pip_requirements=model_requirements(),
                extra_files=[str(paths["reference_profile"])],
                registered_model_name=settings.model_name)
        version = str(info.registered_model_version)
        with tempfile.TemporaryDirectory(prefix="pm-hash-") as tmp:
            model_dir = registry.download_model_dir(settings, settings.model_name, version, Path(tmp))
            artifact_sha = registry.sha256_file(model_dir / registry.MODEL_FILE)
            profile_sha = registry.sha256_file(model_dir / registry.REFERENCE_PROFILE)
        verdicts = registry.evaluate_gates(metrics, limits)
        registry.set_version_tags(settings, settings.model_name, version, {
            **lineage, "artifact_sha256": artifact_sha, "reference_profile_sha256": profile_sha,
            "run_id": run.info.run_id, registry.COMPARED_WITH: compared_with,
            # A later model's vs_champion gate compares on markets resolved after this (unseen by us).
            "train_resolved_max": str(split.cutoff),
            "training_config": config.to_json(), **registry.gate_tags(verdicts)})
        mlflow.set_tags({"pm.model_version": version, "pm.gates_passed": str(all(v.passed for v in verdicts)).lower(),
                         **{f"gate.{v.gate}": v.tag_value() for v in verdicts}})
    new_aliases: list[str] = []
    if all(v.passed for v in verdicts):
        registry.client(settings).set_registered_model_alias(settings.model_name, registry.CHALLENGER, version)
        new_aliases.append(registry.CHALLENGER)
        if promote_if_passed:
            registry.promote(settings, version)
            new_aliases = [registry.CHAMPION]
    return TrainResult(run_id=run.info.run_id, version=version, metrics=metrics, verdicts=verdicts,
                       aliases=new_aliases, training_set_hash=ts.content_hash)


# A model version's tag holds at most 5 000 characters: requests past this are counted, not described.
MAX_REQUESTS_TAG_CHARS = 4_000


def retrain_trigger(settings: "Settings", run_type: str, requests: Sequence[Mapping[str, Any]] = ()) -> dict[str, str]:
    """Lineage tags naming what started a retraining: ``triggered_by`` (the Airflow run type, e.g.
    ``scheduled``, ``manual``, ``asset_triggered``) and, for each retraining request that triggered it
    (the ``retrain_request`` asset events' ``extra``, written by monitoring), ``retrain_requests``: the
    request's path, id, SHA-256, monitored model version, window, severity and reasons, so an auditor
    can go from the model version to the monitoring report that asked for it.

    The request file is read only inside ``<data dir>/retrain_requests``: an event's ``extra`` can be
    posted by anyone allowed to use Airflow's asset API, and training must not read any other file on
    their say. An unreadable request is recorded as such; it does not stop the retraining."""
    inbox = (settings.data_dir / "retrain_requests").resolve()
    described = []
    for extra in requests:
        entry = {k: extra.get(k) for k in ("retrain_request", "model_version", "window", "severity")}
        path = Path(str(extra.get("retrain_request") or "")).resolve()
        if not extra.get("retrain_request") or not path.is_relative_to(inbox):
            entry["unread"] = f"not a file under {inbox}"
        else:
            try:
                raw = path.read_bytes()
                request = json.loads(raw)
                entry.update(request_id=request["request_id"], sha256=hashlib.sha256(raw).hexdigest(),
                             reasons=request.get("reasons"), report=request.get("report"))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                entry["unread"] = f"{type(exc).__name__}: {exc}"
        described.append(entry)
    tags = {"triggered_by": str(run_type)}
    if requests:
        while True:
            tags["retrain_requests"] = dumps({"n": len(requests), "described": described})
            if len(tags["retrain_requests"]) <= MAX_REQUESTS_TAG_CHARS or not described:
                break
            described.pop()
    return tags


def lineage_parent(settings: "Settings", parent_version: str | None) -> str | None:
    """The version a run started by hand retrains (its ``parent_version`` tag): the one named, which must
    exist (an alias names its version), else the current champion, as a scheduled retraining records."""
    from training.registry import champion_version, resolve_version

    if parent_version is None:
        return champion_version(settings)
    return str(resolve_version(settings, settings.model_name, parent_version).version)


def retrain(settings: "Settings", as_of: str | pd.Timestamp | None, seed: int = 0,
            promote_if_passed: bool = True, trigger: dict[str, str] | None = None) -> TrainResult:
    """A scheduled retraining (the ``train_model`` DAG): train as of ``as_of`` (the run's data interval
    end, so a backfilled or re-run week rebuilds the same training set; None: now) and record the
    current champion, the model this run retrains, as its ``parent_version``, and what started the
    run (``retrain_trigger``)."""
    from training.registry import champion_version

    return train(settings, as_of=as_of, config=TrainConfig(spec=ModelSpec(seed=seed)),
                 promote_if_passed=promote_if_passed, parent_version=champion_version(settings), trigger=trigger)

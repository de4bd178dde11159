"""MLflow side of monitoring: fetch a model version's reference profile, log a monitoring run.

MLflow is imported inside the functions (this module is imported by the CLI and DAG files).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring.reference import ProfileError, load_profile, validate_profile

if TYPE_CHECKING:
    from config.settings import Settings

PROFILE_ARTIFACT = "reference_profile.json"
# Where a training run keeps it (training.train logs its run dir under "evaluation/"), then the run's root.
RUN_PROFILE_ARTIFACTS = (f"evaluation/{PROFILE_ARTIFACT}", PROFILE_ARTIFACT)
REFERENCE_PROFILE = "extra_files/reference_profile.json"  # inside the model artifact (training.registry)
MONITORING_EXPERIMENT = "monitoring"


def fetch_reference_profile(settings: "Settings", alias_or_version: str,
                            name: str | None = None) -> tuple[dict[str, Any], str, str]:
    """(profile, model name, version) of a registered model version (number or alias).

    First the profile inside the model artifact (``extra_files/reference_profile.json``, checked
    against the version's ``reference_profile_sha256`` tag by training.registry), else the
    ``evaluation/reference_profile.json`` (or ``reference_profile.json``) artifact of the version's
    training run.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from training.registry import download_model_dir, read_reference_profile, resolve_version

    name = name or settings.model_name
    mv = resolve_version(settings, name, alias_or_version)
    what = f"model '{name}' v{mv.version}"
    with tempfile.TemporaryDirectory(prefix="pm-profile-") as tmp:
        model_dir = download_model_dir(settings, name, str(mv.version), Path(tmp) / "model")
        profile = read_reference_profile(model_dir, dict(mv.tags), what)
        if profile is not None:
            return validate_profile(profile, f"{what} {REFERENCE_PROFILE}"), name, str(mv.version)
        for artifact in RUN_PROFILE_ARTIFACTS if mv.run_id else ():
            try:
                path = mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{mv.run_id}/{artifact}",
                                                           dst_path=str(Path(tmp) / "run"))
            except (MlflowException, OSError):
                continue
            return load_profile(Path(path)), name, str(mv.version)
    raise ProfileError(f"{what}: no reference profile ({REFERENCE_PROFILE} in the model artifact, or "
                       f"{' / '.join(RUN_PROFILE_ARTIFACTS)} in run {mv.run_id or '-'}); training must log it "
                       "(monitoring.reference.build_reference_profile)")


def log_monitoring_run(settings: "Settings", result: dict[str, Any], files: list[Path]) -> str:
    """Log one monitoring run to the ``monitoring`` experiment: params, summary metrics, report files."""
    import mlflow

    from training.tracking import configure_mlflow

    configure_mlflow(settings, MONITORING_EXPERIMENT)
    metrics: dict[str, float] = {"n_predictions": float(result.get("n_predictions", 0))}
    if result["status"] != "no_data":
        for f in result["drift"]["features"]:
            if f["status"] == "ok":
                metrics[f"psi.{f['feature']}"] = f["psi"]
                if f["kind"] == "numeric" and f["wasserstein_scaled"] != float("inf"):
                    metrics[f"wasserstein_scaled.{f['feature']}"] = f["wasserstein_scaled"]
        if result["drift"]["prediction"]["status"] == "ok":
            metrics["psi.prediction"] = result["drift"]["prediction"]["psi"]
        concept = result["concept"]
        metrics["concept.resolved_markets"] = float(concept["n_markets"])
        if concept["status"] == "ok":
            for k in ("brier", "log_loss", "ece"):
                metrics[f"concept.{k}"] = concept[k]["value"]
    with mlflow.start_run(run_name=f"monitoring-{result['run_id']}") as run:
        mlflow.set_tags({"model_name": str(result.get("model_name")),
                         "model_version": str(result.get("model_version")),
                         "severity": result["severity"], "status": result["status"],
                         "retrain_requested": str(bool(result.get("retrain_request")))})
        mlflow.log_params({"window_start": result["window"]["start"], "window_end": result["window"]["end"],
                           **{f"threshold.{k}": v for k, v in result["thresholds"].items()}})
        mlflow.log_metrics(metrics)
        for f in files:
            mlflow.log_artifact(str(f))
        return run.info.run_id

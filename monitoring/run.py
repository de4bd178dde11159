"""One monitoring run over a window of the prediction log: compute, then write every output."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from monitoring import report
from monitoring.concept import concept_drift, join_outcomes, load_outcomes
from monitoring.drift import DriftThresholds, compare_to_reference, worst
from monitoring.prediction_log import FEATURE_PREFIX, read_window

if TYPE_CHECKING:
    from config.settings import Settings


# Freshness and skew read the online store, which holds current values: only for a window ending
# at most this long ago (a daily run shortly after midnight), never for a backfill of an old window.
ONLINE_CHECKS_MAX_LAG = timedelta(days=1)


@dataclass
class RunOutputs:
    result: dict[str, Any]
    findings: list[dict[str, Any]]
    json_path: Path | None = None
    html_path: Path | None = None
    prom_path: Path | None = None
    alerts_path: Path | None = None
    retrain_request_path: Path | None = None
    retrain_request_new: bool = False  # False when it replaced the request of an earlier run of this window
    mlflow_run_id: str | None = None
    files: list[Path] = field(default_factory=list)

    def to_text(self) -> str:
        r = self.result
        lines = [f"monitoring run {r['run_id']}: status {r['status']}, severity {r['severity']}, "
                 f"{r.get('n_predictions', 0)} predictions in {r['window']['start']} .. {r['window']['end']}"]
        for f in self.findings:
            lines.append(f"  [{f['severity']}] {f['kind']} {f['subject']}: {f['message']}")
        if r.get("freshness", {}).get("status") == "skipped":
            lines.append(f"  freshness and skew not checked: {r['freshness']['reason']}")
        for label, p in (("report", self.html_path), ("json", self.json_path), ("metrics", self.prom_path),
                         ("alerts", self.alerts_path), ("retrain request", self.retrain_request_path)):
            if p:
                lines.append(f"  {label}: {p}")
        if self.mlflow_run_id:
            lines.append(f"  mlflow run: {self.mlflow_run_id} (experiment 'monitoring')")
        return "\n".join(lines)


def compute(predictions: pd.DataFrame, profile: dict[str, Any], window_start: datetime, window_end: datetime,
            outcomes: pd.DataFrame | None, thresholds: DriftThresholds = DriftThresholds(),
            model_name: str | None = None, model_version: str | None = None,
            counts_by_role: dict[str, int] | None = None) -> dict[str, Any]:
    """The result dict of a run from already-loaded, already-filtered predictions (no I/O)."""
    now = datetime.now(timezone.utc)
    run_id = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    result: dict[str, Any] = {
        "run_id": run_id, "created_at": now.isoformat(), "created_at_unix": now.timestamp(),
        "model_name": model_name, "model_version": model_version,
        "window": {"start": window_start.isoformat(), "end": window_end.isoformat()},
        "n_predictions": int(len(predictions)), "counts_by_role_source_version": counts_by_role or {},
        "thresholds": thresholds.to_dict(),
    }
    if len(predictions) == 0:
        return {**result, "status": "no_data", "severity": "moderate"}
    columns = {c[len(FEATURE_PREFIX):]: predictions[c] for c in predictions.columns if c.startswith(FEATURE_PREFIX)}
    drift = compare_to_reference(columns, predictions["probability"], profile, thresholds,
                                 groups=predictions["market_id"])
    if outcomes is None:
        concept = {"status": "no_outcomes", "severity": "none", "n": 0, "n_markets": 0,
                   "min_resolved_markets": thresholds.min_resolved_markets}
    else:
        scored = predictions[["logged_at", "market_id", "probability"]].assign(
            market_id=predictions["market_id"].astype(str))
        resolved = join_outcomes(scored, outcomes)
        concept = concept_drift(resolved, profile["performance"], thresholds)
    severity = worst(*(f["severity"] for f in drift["features"]), drift["prediction"]["severity"], concept["severity"])
    return {**result, "status": "ok", "severity": severity, "drift": drift, "concept": concept}


def write_outputs(result: dict[str, Any], settings: "Settings", log_to_mlflow: bool = True) -> RunOutputs:
    """JSON + HTML report, Prometheus textfile, alert records, retraining request, MLflow run."""
    found = report.findings(result)
    out = RunOutputs(result=result, findings=found)
    reasons = report.needs_retraining(result, found)
    run_dir = settings.reports_dir / "monitoring" / result["run_id"]
    request_path = retrain_request_path(settings, result)
    if reasons:
        result["retrain_request"] = str(request_path)
    out.json_path = report.atomic_write_text(run_dir / "report.json", report.to_json(result))
    out.html_path = report.atomic_write_text(run_dir / "report.html", report.html_report(result, found))
    if found:
        out.alerts_path = report.atomic_write_text(run_dir / "alerts.jsonl",
                                                   "".join(json.dumps(a) + "\n" for a in found))
    # One textfile, overwritten by each run about the latest window: the textfile collector exposes
    # the latest values, and a re-run or backfill of an older window must not replace them.
    prom = settings.reports_dir / "monitoring" / "monitoring.prom"
    recorded = report.window_end_of_textfile(prom.read_text()) if prom.is_file() else None
    if recorded is None or recorded <= datetime.fromisoformat(result["window"]["end"]).timestamp():
        out.prom_path = report.atomic_write_text(prom, report.prometheus_text(result))
    out.files = [p for p in (out.json_path, out.html_path, out.alerts_path, out.prom_path) if p]
    if log_to_mlflow:
        from monitoring.registry_io import log_monitoring_run

        out.mlflow_run_id = log_monitoring_run(settings, result, out.files)
    if reasons:
        # Last: whoever polls retrain_requests/ finds the report it points to, and a run that
        # failed on the way files no request.
        request = report.retrain_request(result, reasons, out.json_path)
        out.retrain_request_new = not request_path.exists()
        out.retrain_request_path = report.atomic_write_text(request_path, json.dumps(request, indent=2))
    return out


def retrain_request_path(settings: "Settings", result: dict[str, Any]) -> Path:
    """One request per (model, version, window end): a re-run or backfill of the same window replaces
    its request instead of filing another one (which would schedule another training run)."""
    end = datetime.fromisoformat(result["window"]["end"]).astimezone(timezone.utc)
    model = f"{result.get('model_name') or 'model'}-v{result.get('model_version') or 'unknown'}"
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in model)
    return settings.data_dir / "retrain_requests" / f"{safe}-window-{end:%Y%m%dT%H%M%SZ}.json"


def run_monitoring(settings: "Settings", profile: dict[str, Any], window: timedelta, end: datetime | None = None,
                   log_dir: Path | None = None, roles: Sequence[str] = ("champion",),
                   sources: Sequence[str] = ("model",),
                   model_name: str | None = None, model_version: str | None = None,
                   thresholds: DriftThresholds = DriftThresholds(), log_to_mlflow: bool = True,
                   feature_service: str | None = None, skew_sample: int = 50) -> RunOutputs:
    """Read the window [end - window, end) of the prediction log and monitor the model's rows in it.

    Only rows of the monitored model are scored: ``model_role`` in ``roles``, ``source`` in
    ``sources`` (fallbacks and market-price answers are not the model's), and ``model_version``
    if given. The counts of every (role, source, version) are kept in the result. Without
    ``model_version``, a window holding several versions is refused (ValueError).

    With ``feature_service``, the Feast checks run too (features.retrieve): online freshness and
    training-serving skew for the window's markets, both at the current time (the online store holds
    current values), and only for a window that ended at most ONLINE_CHECKS_MAX_LAG ago.
    """
    now = datetime.now(timezone.utc)
    end = end or now
    if end.tzinfo is None:
        raise ValueError("end must be timezone-aware (UTC)")
    try:
        start = end - window
    except OverflowError:
        raise ValueError(f"window of {window} before {end.isoformat()} reaches before year 1") from None
    feature_cols = [FEATURE_PREFIX + n for n in [*profile["numeric"], *profile["categorical"]]]
    df = read_window(log_dir or settings.prediction_log_dir, start, end, columns=feature_cols)
    counts: dict[str, int] = {}
    if len(df):
        grouped = df.groupby(["model_role", "source", "model_version"], dropna=False, observed=True).size()
        counts = {"/".join(str(x) for x in k): int(v) for k, v in grouped.items()}
        keep = df["model_role"].isin(roles) & df["source"].isin(sources)
        if model_version is not None:
            keep &= df["model_version"].astype(str) == str(model_version)
        df = df[keep].reset_index(drop=True)
        versions = sorted(df["model_version"].astype(str).unique())
        if model_version is None and len(versions) == 1:
            model_version = versions[0]  # the one model the window holds: named in the report and request
        if model_version is None and len(versions) > 1:
            # One profile describes one model: scoring several versions against it would call
            # a change of model drift (and hide drift of either). Training's profiles carry no
            # version (sealed in the model artifact before the version number exists).
            raise ValueError(f"the window {start.isoformat()} .. {end.isoformat()} holds predictions of model "
                             f"versions {versions} (roles {list(roles)}) and neither --model-version nor the "
                             "reference profile says which one to monitor; give --model-version")
    outcomes = load_outcomes(settings.offline_store_dir) if (settings.offline_store_dir / "markets").is_dir() else None
    result = compute(df, profile, start, end, outcomes, thresholds, model_name, model_version, counts)
    if feature_service is not None and len(df) and now - end > ONLINE_CHECKS_MAX_LAG:
        # The online store holds today's values only: checked "as of" an older end, every value would
        # look fresh and differ from the offline join (a backfill or re-run of an old window).
        skipped = {"status": "skipped", "findings": [],
                   "reason": f"window end {end.isoformat()} is more than {ONLINE_CHECKS_MAX_LAG} before now; "
                             "the online store only holds current values"}
        result["freshness"], result["skew"] = skipped, dict(skipped)
    elif feature_service is not None and len(df):
        from monitoring.feature_checks import freshness, training_serving_skew

        markets = df["market_id"].astype(str).unique().tolist()
        # Markets resolved by now were evicted from the online store by materialization and are not
        # served any more, while the offline store still answers for them: checked, each would read as
        # skew (null online, values offline). A 7-day window holds many of them.
        resolved = set() if outcomes is None else set(
            outcomes.loc[outcomes["resolved_at"] <= now, "market_id"].astype(str))
        open_markets = [m for m in markets if m not in resolved]
        if not open_markets:
            skipped = {"status": "skipped", "findings": [], "resolved_markets_excluded": len(markets),
                       "reason": f"all {len(markets)} markets of the window have resolved: none is served "
                                 "or held in the online store any more"}
            result["freshness"], result["skew"] = skipped, dict(skipped)
        else:
            # At now, not at `end`: the online store answers with its current rows, which may be newer than
            # `end` (a daily run's window ends at midnight); the offline side must be read at the same instant.
            # "status" as in the skipped branch: a reader tells a check that ran from one that did not.
            ran = {"status": "ok", "resolved_markets_excluded": len(markets) - len(open_markets)}
            result["freshness"] = {**ran, **freshness(settings, open_markets, feature_service, now)}
            result["skew"] = {**ran, **training_serving_skew(settings, open_markets, feature_service, now,
                                                             sample_size=skew_sample)}
            result["severity"] = worst(result["severity"], *(f["severity"] for k in ("freshness", "skew")
                                                             for f in result[k]["findings"]))
    return write_outputs(result, settings, log_to_mlflow=log_to_mlflow)


def execute_run(settings: "Settings", window: str, end: datetime | None = None, log_dir: Path | None = None,
                reference: Path | None = None, model_version: str | None = None,
                roles: Sequence[str] = ("champion",), log_to_mlflow: bool = True,
                feature_service: str | None = None) -> RunOutputs:
    """The CLI's run: resolve the reference profile (a file, or a registered version / alias), then monitor.

    With a file, rows are restricted to ``model_version`` if given, else to the profile's own
    ``model_version`` if it records one (training's profiles do not); with neither, a window
    holding several model versions is refused. With a registry reference (default ``champion``),
    rows are restricted to the resolved version.
    """
    from monitoring.prediction_log import parse_window
    from monitoring.reference import load_profile

    span = parse_window(window)
    if end is not None and end.tzinfo is None:
        raise ValueError(f"--end {end.isoformat()}: give an explicit UTC offset (e.g. 2024-06-30T00:00:00+00:00)")
    if reference is not None:
        profile = load_profile(reference)
        version = model_version or profile.get("model_version")
        name = settings.model_name
    else:
        from monitoring.registry_io import fetch_reference_profile

        profile, name, version = fetch_reference_profile(settings, model_version or "champion")
    return run_monitoring(settings, profile, span, end=end, log_dir=log_dir, roles=roles, model_name=name,
                          model_version=str(version) if version is not None else None, log_to_mlflow=log_to_mlflow,
                          feature_service=feature_service)

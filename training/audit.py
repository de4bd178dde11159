"""Audit export: every run of the experiment (failed and rejected included), every model version
with params, metrics, gate verdicts and lineage, and the registered model's tags with every alias
move (champion history, rollback reasons), to CSVs plus one JSON bundle readable without MLflow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from training.tracking import EXPERIMENT

if TYPE_CHECKING:
    from config.settings import Settings


@dataclass
class AuditExport:
    csv_path: Path
    json_path: Path
    n_runs: int
    n_versions: int
    alias_moves_csv_path: Path
    n_alias_moves: int

    def to_text(self) -> str:
        return (f"{self.n_runs} runs, {self.n_versions} model versions, {self.n_alias_moves} alias moves -> "
                f"{self.csv_path}, {self.alias_moves_csv_path}, {self.json_path}")


ALIAS_HISTORY_PREFIX = "alias_history."  # registry._history_tag: one registered-model tag per alias move
ALIAS_MOVE_COLUMNS = ["recorded_at", "action", "alias", "from_version", "to_version", "reason", "dry_run", "name",
                      "tag"]


def alias_moves(model_tags: dict[str, str]) -> list[dict]:
    """Every alias move recorded on the registered model, oldest first: the tag's timestamp as
    ``recorded_at`` plus the recorded change (action, alias, from/to version, reason)."""
    moves = []
    for key in sorted(k for k in model_tags if k.startswith(ALIAS_HISTORY_PREFIX)):
        stamp = key[len(ALIAS_HISTORY_PREFIX):]
        try:
            change = json.loads(model_tags[key])
        except json.JSONDecodeError:  # kept verbatim: an audit must not drop a record it cannot parse
            change = {"unparsed": model_tags[key]}
        try:
            recorded_at = pd.to_datetime(stamp, format="%Y%m%dT%H%M%S%fZ", utc=True).isoformat()
        except ValueError:
            recorded_at = stamp
        moves.append({"recorded_at": recorded_at, "tag": key, **change})
    return moves


def collect(settings: "Settings", experiment: str = EXPERIMENT) -> dict:
    from mlflow.entities import ViewType

    from training.tracking import client

    c = client(settings)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no MLflow experiment '{experiment}' in {settings.mlflow_tracking_uri}")
    runs = []
    page_token = None
    while True:
        page = c.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000,
                             order_by=["attributes.start_time ASC"], page_token=page_token)
        for r in page:
            runs.append({"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
                         "start_time": pd.Timestamp(r.info.start_time, unit="ms", tz="UTC").isoformat(),
                         "end_time": (pd.Timestamp(r.info.end_time, unit="ms", tz="UTC").isoformat()
                                      if r.info.end_time else None),
                         "parent_run_id": r.data.tags.get("mlflow.parentRunId"),
                         "params": dict(r.data.params), "metrics": dict(r.data.metrics),
                         "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.log-model")}})
        page_token = page.token
        if not page_token:
            break
    from mlflow.exceptions import MlflowException

    versions, aliases, model_tags = [], {}, {}
    try:
        model = c.get_registered_model(settings.model_name)
        aliases = dict(model.aliases)
        model_tags = dict(model.tags)
        for mv in c.search_model_versions(f"name='{settings.model_name}'"):
            versions.append({"version": str(mv.version), "run_id": mv.run_id, "status": mv.status,
                             "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").isoformat(),
                             "aliases": [a for a, v in aliases.items() if str(v) == str(mv.version)],
                             "tags": dict(mv.tags)})
    except MlflowException as exc:  # no registered model yet: runs alone are still exported
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    versions.sort(key=lambda v: int(v["version"]))
    return {"experiment": experiment, "tracking_uri": settings.mlflow_tracking_uri,
            "model_name": settings.model_name, "exported_at": pd.Timestamp.now(tz="UTC").isoformat(),
            "aliases": aliases, "registered_model_tags": model_tags, "alias_moves": alias_moves(model_tags),
            "runs": runs, "model_versions": versions}


def flat_rows(bundle: dict) -> pd.DataFrame:
    """One row per run; its model version's tags (gates, lineage) joined in as version.* columns."""
    by_run = {v["run_id"]: v for v in bundle["model_versions"]}
    rows = []
    for r in bundle["runs"]:
        row = {k: r[k] for k in ("run_id", "run_name", "status", "start_time", "end_time", "parent_run_id")}
        row.update({f"param.{k}": v for k, v in r["params"].items()})
        row.update({f"metric.{k}": v for k, v in r["metrics"].items() if not k.startswith("slice.")})
        row.update({f"tag.{k}": v for k, v in r["tags"].items() if k.startswith(("pm.", "lineage.", "gate."))})
        mv = by_run.get(r["run_id"])
        if mv:
            row["version"] = mv["version"]
            row["version.aliases"] = ",".join(mv["aliases"])
            row.update({f"version.{k}": v for k, v in mv["tags"].items() if k != "training_config"})
        rows.append(row)
    return pd.DataFrame(rows)


def export(settings: "Settings", out_dir: Path, experiment: str = EXPERIMENT) -> AuditExport:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"audit export: {out_dir} exists and is not a directory; give a directory for "
                         "audit_runs.csv, audit_alias_moves.csv and audit_bundle.json")
    bundle = collect(settings, experiment)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "audit_runs.csv", out_dir / "audit_bundle.json"
    moves_path = out_dir / "audit_alias_moves.csv"
    flat_rows(bundle).to_csv(csv_path, index=False)
    moves = pd.DataFrame(bundle["alias_moves"])
    moves = moves.reindex(columns=ALIAS_MOVE_COLUMNS + [c for c in moves.columns if c not in ALIAS_MOVE_COLUMNS])
    moves.to_csv(moves_path, index=False)
    json_path.write_text(json.dumps(bundle, indent=2, sort_keys=True, default=str))
    return AuditExport(csv_path, json_path, len(bundle["runs"]), len(bundle["model_versions"]),
                       moves_path, len(bundle["alias_moves"]))

"""Replay: score historical price snapshots with a registered model and write them as a prediction log.

For backtesting the monitoring and for demos on simulated data (e.g. `ingestion generate
--drift-start`): what would the served model have said, with the features Feast would have
served at that instant (point-in-time historical retrieval, the same FeatureService)?
The rows follow the serving log schema with ``logged_at`` = the snapshot time; ``latency_ms``
is NaN (nothing was served). The output directory must be given explicitly, so replayed rows
never mix with the live log of serving.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from monitoring.concept import load_outcomes
from monitoring.prediction_log import FEATURE_PREFIX, write_log

if TYPE_CHECKING:
    from config.settings import Settings
    from feast import FeatureStore


@dataclass
class ReplaySummary:
    rows: int
    markets: int
    model_version: str
    feature_service: str
    files: list[Path]

    def to_text(self) -> str:
        return (f"replayed {self.rows} predictions of model v{self.model_version} ({self.feature_service}) "
                f"for {self.markets} markets into {len(self.files)} file(s)")


def snapshot_entities(settings: "Settings", start: datetime, end: datetime, every: str = "1D",
                      markets: Sequence[str] | None = None) -> pd.DataFrame:
    """(market_id, ts) of the last snapshot per market and ``every`` bucket in [start, end), open markets only."""
    import pyarrow.dataset as ds

    table_dir = settings.offline_store_dir / "price_features"
    if not any(table_dir.glob("month=*/*.parquet")):
        raise ValueError(f"no price snapshots in {table_dir}: ingest data first")
    snaps = ds.dataset(table_dir, format="parquet", partitioning="hive").to_table(
        columns=["market_id", "ts"]).to_pandas()
    snaps = snaps[(snaps["ts"] >= pd.Timestamp(start)) & (snaps["ts"] < pd.Timestamp(end))]
    if markets is not None:
        snaps = snaps[snaps["market_id"].isin(list(markets))]
    # A market is not served after it resolved: keep snapshots strictly before resolution.
    resolved = load_outcomes(settings.offline_store_dir)[["market_id", "resolved_at"]]
    snaps = snaps.merge(resolved, on="market_id", how="left")
    snaps = snaps[snaps["resolved_at"].isna() | (snaps["ts"] < snaps["resolved_at"])]
    snaps = (snaps.assign(bucket=snaps["ts"].dt.floor(every)).sort_values("ts")
             .drop_duplicates(["market_id", "bucket"], keep="last"))
    return snaps[["market_id", "ts"]].sort_values(["ts", "market_id"]).reset_index(drop=True)


def replay_predictions(settings: "Settings", start: datetime, end: datetime, log_dir: Path,
                       model: str = "champion", every: str = "1D", markets: Sequence[str] | None = None,
                       store: "FeatureStore | None" = None) -> ReplaySummary:
    """Score every open market once per ``every`` in [start, end) with ``model`` and write the log."""
    from features.retrieve import historical_features
    from training.registry import load_verified_model

    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware (UTC)")
    entities = snapshot_entities(settings, start, end, every, markets)
    if entities.empty:
        raise ValueError(f"no open-market snapshots between {start.isoformat()} and {end.isoformat()}")
    loaded = load_verified_model(None, model, settings)
    service = loaded.feature_service
    if not service:
        raise ValueError(f"model v{loaded.version} has no feature_service tag: cannot retrieve its features")
    feats = historical_features(entities, service, settings=settings, store=store)
    probability = np.asarray(loaded.predict(feats), dtype=np.float64)
    log = pd.DataFrame({
        "logged_at": feats["ts"].astype("datetime64[us, UTC]").to_numpy(),
        "request_id": [f"replay-{uuid.uuid4().hex}" for _ in range(len(feats))],
        "market_id": feats["market_id"].astype(str).to_numpy(),
        "model_version": loaded.version,
        "model_role": "champion",
        "source": "model",
        "probability": probability,
        "latency_ms": np.nan,
        "ab_group": None,
    })
    for name in loaded.feature_names:
        log[FEATURE_PREFIX + name] = feats[name].to_numpy()
    files = write_log(log, log_dir)
    return ReplaySummary(rows=len(log), markets=int(log["market_id"].nunique()), model_version=loaded.version,
                         feature_service=service, files=files)

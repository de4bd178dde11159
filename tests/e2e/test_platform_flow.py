"""The whole loop on embedded defaults: generate → ingest (contract + GX) → Feast apply/materialize →
train/register/promote → serve over the online store → prediction log → monitoring.

Every part is the real one (SQLite online store, SQLite Feast registry, SQLite MLflow store); only the
promotion limits are relaxed, because model quality is the training tests' job, not this one's.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ingestion.ingest import ingest_batch
from ingestion.simulate import SimulationConfig, generate

pytestmark = pytest.mark.slow


def test_whole_loop_on_embedded_defaults(settings):
    raw = settings.raw_dir / "sim"
    generate(SimulationConfig(n_markets=250, start=datetime(2024, 1, 1).date(), end=datetime(2024, 4, 1).date(),
                              seed=11, n_batches=2, fmt="parquet", drift_start=None), raw, progress=False)
    batches = sorted(raw.glob("batch-*"))
    assert len(batches) == 2
    for batch in batches:
        result = ingest_batch(batch)
        assert result.accepted, result.to_text()

    from features.materialize import materialize
    from features.store import apply

    apply(settings)
    materialize(datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 4, 1, tzinfo=timezone.utc),
                settings=settings)

    from training.registry import GateLimits, aliases
    from training.train import train

    trained = train(settings, limits=GateLimits(max_ece=0.5, min_roc_auc=0.5, min_brier_skill=-1.0,
                                                max_train_valid_gap=1.0), promote_if_passed=True)
    assert trained.passed, trained.to_text()
    assert aliases(settings, settings.model_name).get("champion") == trained.version

    markets = pd.read_parquet(settings.offline_store_dir / "markets")
    current = markets.sort_values("updated_at").groupby("market_id").tail(1)
    open_ids = current.loc[current["resolved_at"].isna(), "market_id"].tolist()
    resolved = current.loc[current["resolved_at"].notna()].iloc[0]
    resolved_id, outcome = resolved["market_id"], int(resolved["outcome"])
    assert open_ids, "the simulation leaves some markets open at its end"

    from serving.app import create_app
    from serving.options import ServingOptions

    with TestClient(create_app(settings, ServingOptions(poll_interval_s=0))) as client:
        assert client.get("/ready").json()["ready"] is True
        answer = client.post("/predict", json={"market_id": open_ids[0]})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["source"] == "model" and body["model_version"] == trained.version
        assert 0.0 < body["probability"] < 1.0
        batch = client.post("/predict/batch", json={"items": [{"market_id": m} for m in open_ids[:5]]})
        assert batch.status_code == 200, batch.text
        unknown = client.post("/predict", json={"market_id": "no-such-market"})
        assert unknown.status_code == 404 and "no-such-market" in unknown.text
        # What the API documents (tests/serving/test_api.py on Redis): materialization evicted the market and
        # left its resolution marker in the SQLite online store, and serving says when and how it resolved.
        gone = client.post("/predict", json={"market_id": resolved_id})
        assert gone.status_code == 410, gone.text
        assert gone.json()["detail"] == (
            f"market {resolved_id!r} resolved at {pd.Timestamp(resolved['resolved_at']).isoformat()} with outcome "
            f"{'YES' if outcome == 1 else 'NO'} ({outcome}): resolved markets get no forecast")

    logged = pd.read_parquet(settings.prediction_log_dir)
    assert set(open_ids[:5]) | {open_ids[0]} <= set(logged["market_id"])
    assert (logged["model_version"].astype(str) == trained.version).all()

    from monitoring.run import execute_run

    outputs = execute_run(settings, "3650d")
    assert outputs.json_path is not None and outputs.json_path.exists()
    assert outputs.html_path is not None and outputs.html_path.exists()
    result = json.loads(outputs.json_path.read_text())
    assert result["n_predictions"] >= len(logged.loc[logged["model_role"] == "champion"])

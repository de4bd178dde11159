"""Data tests on the real path: simulator -> ingestion (with its GX gate) -> `feast apply` ->
training set through the FeatureService -> train/register on a real MLflow sqlite store.

One simulated world per module (two time-split batches ingested at distinct times, one real
`feast apply` on a temp copy of feature_repo/), because each step costs seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.settings import Settings
from tests.feast_project import copy_feature_repo
from training.data import build_training_set, content_hash

pytestmark = pytest.mark.slow


@dataclass
class World:
    settings: Settings
    raw: Path
    summary: object
    ingested_at: list[pd.Timestamp]


def batch_end(batch_dir: Path) -> pd.Timestamp:
    """Latest timestamp in a raw batch (its ingest time must not be more than a day before it)."""
    latest = []
    for table, cols in (("markets", ["updated_at"]), ("price_snapshots", ["ts"]), ("polls", ["ts"])):
        path = batch_dir / f"{table}.parquet"
        if path.exists():
            frame = pd.read_parquet(path, columns=cols)
            latest += [frame[c].max() for c in cols]
    return max(latest)


def ingest(settings: Settings, batch_dir: Path, now: pd.Timestamp) -> None:
    from ingestion.ingest import ingest_batch

    # run_gate=False: the ingestion GX gate is ingestion's concern and costs seconds per batch;
    # the training-set GX checkpoint is exercised below (run_gx=True).
    result = ingest_batch(batch_dir, settings=settings, now=now, run_gate=False)
    assert result.accepted, result.to_text() if hasattr(result, "to_text") else result


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from features.store import apply
    from ingestion.simulate import SimulationConfig, generate

    root = tmp_path_factory.mktemp("world")
    repo = copy_feature_repo(root)
    settings = Settings.from_env({"PM_DATA_DIR": str(root / "data"), "PM_FEATURE_REPO_DIR": str(repo)})
    settings.ensure_dirs()
    raw = root / "raw"
    summary = generate(SimulationConfig(n_markets=300, start=date(2024, 1, 1), end=date(2024, 7, 1), seed=4,
                                        n_batches=2), raw, progress=False)
    batches = sorted(raw.glob("batch-*"))
    assert len(batches) == 2
    ingested_at = [batch_end(b) + pd.Timedelta(hours=1) for b in batches]
    ingest(settings, batches[0], ingested_at[0])
    apply(settings)
    return World(settings, raw, summary, ingested_at)


@pytest.fixture(scope="module")
def first_batch_set(world):
    """Training set built when only batch 1 was published (before the second ingest)."""
    ts = build_training_set(world.settings, world.ingested_at[0], run_gx=False)
    ingest(world.settings, sorted(world.raw.glob("batch-*"))[1], world.ingested_at[1])
    return ts


@pytest.fixture(scope="module")
def full_set(world, first_batch_set):
    return build_training_set(world.settings, world.ingested_at[1] + pd.Timedelta(days=1), run_gx=True)


def test_full_training_set_is_every_learning_example_validated(world, full_set):
    frame = full_set.frame
    assert len(frame) == world.summary.n_examples  # the simulator counts the same definition
    assert not frame.duplicated(["market_id", "ts"]).any()
    assert (frame["ts"] < frame["resolved_at"]).all()
    assert full_set.validation == {**full_set.validation, "explicit_checks": "pass", "gx_checkpoint": "pass"}
    assert set(full_set.feature_names) >= {"price", "poll_average", "event_type", "platform", "days_to_resolution"}
    assert len(full_set.batch_ids) == 2
    assert full_set.validation["as_of_exact"] is True


def test_as_of_rebuild_equals_the_set_built_back_then(world, first_batch_set, full_set):
    rebuilt = build_training_set(world.settings, world.ingested_at[0], run_gx=False)
    assert rebuilt.content_hash == first_batch_set.content_hash
    assert rebuilt.raw_data_hash == first_batch_set.raw_data_hash
    assert len(first_batch_set.frame) < len(full_set.frame)
    assert (first_batch_set.frame["resolved_at"] <= world.ingested_at[0]).all()


def test_outcome_revealing_new_row_changes_no_existing_example(world, full_set, tmp_path):
    """A new snapshot priced at the outcome, just before resolution, is a *new* example; every
    earlier example keeps exactly its features (point-in-time join + causal rolling windows)."""
    frame = full_set.frame
    last = frame.sort_values("ts").groupby("market_id").tail(1)
    last = last[(last["resolved_at"] - last["ts"]) > pd.Timedelta(minutes=2)].iloc[0]
    leak_ts = last["resolved_at"] - pd.Timedelta(minutes=1)
    batch = tmp_path / "leak"
    batch.mkdir()
    pd.DataFrame({"market_id": [last["market_id"]], "ts": pd.Series([leak_ts]).astype("datetime64[us, UTC]"),
                  "price": [float(last["label"])], "volume_24h": [1e9]}).to_parquet(batch / "price_snapshots.parquet")
    ingest(world.settings, batch, world.ingested_at[1] + pd.Timedelta(hours=2))
    after = build_training_set(world.settings, world.ingested_at[1] + pd.Timedelta(days=1), run_gx=False)
    assert len(after.frame) == len(frame) + 1
    old_rows = after.frame[after.frame["ts"] != leak_ts].reset_index(drop=True)
    assert content_hash(old_rows) == full_set.content_hash
    # and the set as of before the leak was ingested is unchanged
    before = build_training_set(world.settings, world.ingested_at[1] + pd.Timedelta(hours=1, minutes=30),
                                run_gx=False)
    assert before.content_hash == full_set.content_hash
    # ... and it says that a row published after its as_of predates it (Feast joins on event time)
    assert before.validation["late_rows_after_as_of"]["price_features"] == 1
    assert before.validation["as_of_exact"] is False


def test_train_on_simulated_data_and_reproduce_from_lineage(world, full_set):
    """Real path end to end: train + register with production gates, then reproduce from lineage alone."""
    from training.registry import resolve_version
    from training.reproduce import reproduce
    from training.train import TrainConfig, train

    settings = world.settings
    # as of before the leakage test's extra batch, i.e. exactly full_set
    result = train(settings, as_of=world.ingested_at[1] + pd.Timedelta(hours=1, minutes=30),
                   config=TrainConfig(importance_repeats=1))
    assert result.training_set_hash == full_set.content_hash
    metrics = result.metrics
    assert np.isfinite(metrics["valid_brier"]) and metrics["valid_brier_market"] > 0
    # Forecast quality is not asserted: on a few hundred simulated markets whether the model beats
    # the market on the held-out ones depends on the world drawn (docs/training.md, "Quality on
    # simulated data"). What is asserted: every production gate ran and left its verdict tag.
    assert {v.gate for v in result.verdicts} == {"brier", "ece", "roc_auc", "brier_skill", "train_valid_gap",
                                                  "vs_champion"}
    tags = resolve_version(settings, settings.model_name, result.version).tags
    assert all(tags[f"gate.{v.gate}"] == v.tag_value() for v in result.verdicts)
    again = reproduce(settings, result.version, run_gx=False)  # rebuilt through Feast from the version's tags
    assert again.bit_equal and again.rows_compared == len(full_set.frame)

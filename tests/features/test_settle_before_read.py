"""Readers outside ingestion settle the offline store first: a publish killed between its renames and its
commit record is rolled forward before Feast (whose sources glob every Parquet file, committed or not)
materializes it or joins it into a training set, instead of being read half there."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from config.settings import REPO_ROOT, Settings
from ingestion.ingest import ingest_batch
from ingestion.store import STAGING_DIR, committed_batches
from tests.feast_project import copy_feature_repo
from tests.ingestion.factories import (T0, LockHolder, markets_frame, polls_frame, prices_frame, valid_tables,
                                      write_batch)

pytestmark = pytest.mark.slow

SERVICE = "market_forecaster_v1"

# Ingest a batch in another process and SIGKILL it (no cleanup, as a power cut) while it moves the staged
# files into place: after markets, market_info and price_features, before poll_features.
CRASHING_INGEST = """
import os, signal, sys
from config.settings import Settings
from ingestion.ingest import ingest_batch

real_replace = os.replace

def replace(src, dst, *args, **kwargs):
    if "/_staging/" in str(src) and "/poll_features/" in str(dst):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace
ingest_batch(sys.argv[1], settings=Settings.from_env({"PM_DATA_DIR": sys.argv[2]}), run_gate=False)
"""


def crash_mid_publish(batch: Path, settings: Settings) -> str:
    """Leave `batch` decided (manifest), partly renamed into place, uncommitted. Returns its batch id."""
    done = subprocess.run([sys.executable, "-c", CRASHING_INGEST, str(batch), str(settings.data_dir)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    offline = settings.offline_store_dir
    assert done.returncode == -9, done.stderr
    [staged] = [p.name for p in (offline / STAGING_DIR).iterdir()]
    assert staged not in committed_batches(offline)
    in_place = sorted({p.parts[-3] for p in offline.glob(f"*/month=*/{staged}.parquet")})
    assert in_place == ["market_info", "markets", "price_features"]  # poll_features still staged
    return staged


def tables_for(prefix: str, resolved: bool, start: pd.Timestamp) -> dict[str, pd.DataFrame]:
    markets = markets_frame(3, resolved=resolved, start=start)
    markets["market_id"] = [f"{prefix}{i:03d}" for i in range(3)]
    return {"markets": markets, "price_snapshots": prices_frame(markets), "polls": polls_frame(markets)}


def test_materialize_and_training_sets_roll_a_crashed_publish_forward_first(tmp_path: Path) -> None:
    from features.materialize import materialize
    from features.retrieve import online_features
    from features.store import apply, get_store
    from training.data import build_training_set

    repo = copy_feature_repo(tmp_path / "project")
    settings = Settings.from_env({"PM_DATA_DIR": str(tmp_path / "data"), "PM_FEATURE_REPO_DIR": str(repo)})
    settings.ensure_dirs()
    offline = settings.offline_store_dir
    first = ingest_batch(write_batch(tmp_path / "a", valid_tables()), settings=settings, run_gate=False)
    assert first.accepted
    apply(settings)

    # Materialization (given only a FeatureStore: the offline store is found from the views' sources).
    open_batch = tables_for("b", resolved=False, start=T0 + pd.Timedelta(days=10))
    crashed = crash_mid_publish(write_batch(tmp_path / "b", open_batch), settings)
    store = get_store(settings)
    report = materialize(datetime(2023, 12, 1, tzinfo=timezone.utc),
                         datetime(2024, 2, 15, tzinfo=timezone.utc), chunk=timedelta(days=90), store=store)
    ids = list(open_batch["markets"]["market_id"])
    request_ts = open_batch["price_snapshots"]["ts"].max().to_pydatetime() + timedelta(hours=1)
    status = online_features(ids, SERVICE, request_ts=request_ts, store=store).status.set_index("market_id")
    # The whole batch went online: its polls too, not only the files renamed before the crash.
    seen = status.loc[ids, ["price", "poll_average", "n_polls"]]
    assert (seen == "PRESENT").all().all(), seen
    files = committed_batches(offline)[crashed]["files"]
    assert report.recovered == [
        f"recovered batch {crashed}: rolled forward an interrupted publish ({len(files)} file(s))"]
    assert not any((offline / STAGING_DIR).iterdir())

    # Training set: labels (committed markets only) and Feast's features from the same, whole batches.
    resolved_batch = tables_for("c", resolved=True, start=T0 + pd.Timedelta(days=20))
    crashed = crash_mid_publish(write_batch(tmp_path / "c", resolved_batch), settings)
    training_set = build_training_set(settings, run_gx=False)
    frame = training_set.frame
    rows = frame[frame["market_id"].str.startswith("c")]
    assert len(rows) == len(resolved_batch["price_snapshots"])  # every snapshot is before its resolution
    assert crashed in training_set.batch_ids
    assert crashed in committed_batches(offline) and not any((offline / STAGING_DIR).iterdir())
    # Polls start a day after creation; every later snapshot has one (from the rolled-forward file).
    first_poll = resolved_batch["polls"].groupby("market_id")["ts"].min()
    polled = rows["ts"] >= rows["market_id"].map(first_poll)
    assert polled.sum() > 0 and rows.loc[polled, "poll_average"].notna().all()

    # An ingest in progress (holding the lock, nothing staged yet) finishes before a training set is
    # read: its ingested_at may be before the set's as-of time, and a rebuild would include it.
    holder = LockHolder(offline)
    threading.Timer(0.5, holder.release).start()
    build_training_set(settings, run_gx=False)
    assert holder.released_at is not None

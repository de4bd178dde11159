"""A batch's ingest time and the training set's as-of time are ordered by the store lock, so a
training set built while an ingest runs is rebuilt identically as of the same time (reproduce)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd

from config.settings import Settings
from ingestion.ingest import ingest_batch
from ingestion.publish import settle
from ingestion.store import committed_batches
from tests.ingestion.factories import LockHolder, valid_tables, write_batch


def test_an_ingest_that_waited_for_the_lock_is_stamped_when_it_got_it(settings: Settings, tmp_path: Path) -> None:
    """ingested_at was taken before waiting for the lock: a batch committed after a training set's
    as-of time could carry an earlier ingested_at, so a rebuild as of that time read one batch more."""
    batch = write_batch(tmp_path / "b", valid_tables())
    holder = LockHolder(settings.offline_store_dir)
    results = []
    ingesting = threading.Thread(target=lambda: results.append(ingest_batch(batch, settings=settings,
                                                                            run_gate=False)))
    ingesting.start()
    time.sleep(1.0)  # the ingest is waiting for the lock by now
    holder.release()
    ingesting.join(120)
    (result,) = results
    assert result.accepted, result.to_text()
    stamped = pd.Timestamp(committed_batches(settings.offline_store_dir)[result.batch_id]["ingested_at"])
    assert stamped >= holder.released_at, (stamped, holder.released_at)


def test_settle_with_wait_returns_only_after_an_ingest_in_progress(settings: Settings) -> None:
    """Training sets settle with wait=True: an ingest holding the lock (nothing staged yet: still
    validating) finishes before the set is read."""
    root = settings.offline_store_dir
    root.mkdir(parents=True, exist_ok=True)
    holder = LockHolder(root)
    threading.Timer(0.5, holder.release).start()
    assert settle(root, wait=True) == []
    assert holder.released_at is not None  # it waited for the holder
    # Without wait (materialization), nothing staged means nothing to wait for.
    holder = LockHolder(root)
    try:
        assert settle(root) == [] and holder.released_at is None
    finally:
        holder.release()

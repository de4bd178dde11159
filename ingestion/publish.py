"""Atomic publishing into the offline store, crash recovery, the ingest lock, and quarantine.

Protocol (docs/architecture.md):

1. every output file is written complete under ``_staging/<batch_id>/<table>/month=YYYY-MM/``;
2. ``_staging/<batch_id>/_manifest.json`` is written (temp file + rename): from here on the
   batch is *decided* and will be rolled forward;
3. each file is renamed into ``<table>/month=YYYY-MM/<batch_id>.parquet`` (atomic per file);
4. the commit record ``_batches/<batch_id>.json`` is written (temp file + rename), then the
   staging directory is removed.

Recovery (start of every ingest, under the lock): a staging dir with a manifest is rolled
forward (steps 3-4, skipping files already in place); one without a manifest was interrupted
before the batch was decided and is deleted. Store readers only read files of committed
batches, so nothing half-written is read by ingestion itself. Feast globs ``**/*.parquet``
and could see a renamed-but-uncommitted file; each such file is complete, and the window is
the few renames between steps 3 and 4.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.store import BATCHES_DIR, EVENT_TS, LOCK_FILE, STAGING_DIR, STORE_SCHEMAS

MANIFEST = "_manifest.json"


class IngestLockTimeout(RuntimeError):
    """Another ingest held the offline store lock for too long."""


@contextmanager
def store_lock(root: Path, timeout_s: float = 600.0) -> Iterator[None]:
    """Exclusive lock on ``<offline>/_ingest.lock`` so two ingests never interleave."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise IngestLockTimeout(
                        f"{root / LOCK_FILE} held by another ingest for over {timeout_s}s")
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage_batch(root: Path, batch_id: str, frames: dict[str, pd.DataFrame]) -> list[str]:
    """Write every frame, split by month of its event timestamp, under ``_staging/<batch_id>/``.

    Returns the store-relative paths of the files, which are also the staging-relative paths.
    """
    stage = root / STAGING_DIR / batch_id
    if stage.exists():
        shutil.rmtree(stage)
    rel_paths: list[str] = []
    for table, frame in frames.items():
        if frame.empty:
            continue
        schema = STORE_SCHEMAS[table]
        arrow = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        ts = frame[EVENT_TS[table]]
        month = (ts.dt.year * 100 + ts.dt.month).to_numpy()  # vectorized; strftime is per-row Python
        for m in np.unique(month):
            rel = f"{table}/month={m // 100:04d}-{m % 100:02d}/{batch_id}.parquet"
            dest = stage / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(arrow.filter(pa.array(month == m)), dest)
            _fsync_file(dest)  # durable before the manifest decides the batch
            rel_paths.append(rel)
    return rel_paths


def write_manifest(root: Path, batch_id: str, files: list[str], commit_record: dict[str, Any]) -> None:
    _write_json_atomic(root / STAGING_DIR / batch_id / MANIFEST,
                       {"files": files, "commit_record": commit_record})


def move_into_place(root: Path, batch_id: str, files: list[str]) -> None:
    stage = root / STAGING_DIR / batch_id
    for rel in files:
        src, dest = stage / rel, root / rel
        if src.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
        elif not dest.exists():
            raise RuntimeError(
                f"staged file {src} is missing and not in place at {dest}: store is inconsistent")
    for d in sorted({(root / rel).parent for rel in files}):
        _fsync_dir(d)


def write_commit_record(root: Path, batch_id: str, record: dict[str, Any]) -> None:
    _write_json_atomic(root / BATCHES_DIR / f"{batch_id}.json", record)


def publish(root: Path, batch_id: str, frames: dict[str, pd.DataFrame],
            commit_record: dict[str, Any]) -> list[str]:
    """Stage, decide (manifest), rename into place, commit. Returns the published files."""
    files = stage_batch(root, batch_id, frames)
    record = {**commit_record, "files": files}
    write_manifest(root, batch_id, files, record)
    move_into_place(root, batch_id, files)
    write_commit_record(root, batch_id, record)
    shutil.rmtree(root / STAGING_DIR / batch_id, ignore_errors=True)
    return files


def recover(root: Path) -> list[str]:
    """Finish or discard batches left in ``_staging/`` by an interrupted ingest. Returns notes."""
    notes: list[str] = []
    staging = root / STAGING_DIR
    if not staging.is_dir():
        return notes
    for stage in sorted(p for p in staging.iterdir() if p.is_dir()):
        batch_id = stage.name
        manifest = stage / MANIFEST
        if manifest.is_file():
            spec = json.loads(manifest.read_text())
            move_into_place(root, batch_id, spec["files"])
            write_commit_record(root, batch_id, spec["commit_record"])
            notes.append(f"recovered batch {batch_id}: rolled forward an interrupted publish "
                         f"({len(spec['files'])} file(s))")
        else:
            notes.append(f"recovered batch {batch_id}: discarded an interrupted staging (never published)")
        shutil.rmtree(stage)
    return notes


REASON_FILE = "_reason.json"


def _batch_digest(directory: Path, skip: frozenset[str] = frozenset()) -> str:
    """sha256 of a directory's files (relative paths and bytes; dangling links skipped)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative in skip:
            continue
        digest.update(relative.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _contains(directory: Path, path: Path) -> bool:
    """Whether ``path`` is ``directory`` or inside it (both resolved, so links and '..' count)."""
    return path.resolve().is_relative_to(directory.resolve())


def quarantine(batch_dir: Path, quarantine_root: Path, label: str, reason: dict[str, Any]) -> Path:
    """Copy the whole batch directory to ``<quarantine>/<dirname>-<label>/`` with ``_reason.json``.

    The same files refused again replace their copy (with the newest reason). Different files
    refused under the same label (values that fail conversion type alike, so their batch ids
    match) never overwrite an earlier delivery: they go to ``<dirname>-<label>-<digest>/``.
    """
    name = batch_dir.resolve().name or "batch"
    dest = quarantine_root / f"{name}-{label}"
    if _contains(batch_dir, quarantine_root):
        # Not a batch (the data dir, a parent of it, "/"): copying it would copy the quarantine into
        # itself without end. Keep the reason only, saying why nothing was copied.
        not_copied = {**reason, "files_not_copied": f"{batch_dir.resolve()} contains the quarantine folder "
                                                    f"{quarantine_root.resolve()}: it is not a batch directory"}
        dest.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(dest / REASON_FILE, not_copied)
        return dest
    digest = _batch_digest(batch_dir)
    if dest.exists() and _batch_digest(dest, skip=frozenset({REASON_FILE})) != digest:
        dest = quarantine_root / f"{name}-{label}-{digest[:12]}"
    quarantine_root.mkdir(parents=True, exist_ok=True)
    tmp = quarantine_root / f".{dest.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    # A link to a missing file has nothing to keep; it must not stop the rest being kept.
    shutil.copytree(batch_dir, tmp, ignore_dangling_symlinks=True)
    _write_json_atomic(tmp / REASON_FILE, reason)
    if dest.exists():  # the same files refused again: the newest reason replaces the old copy
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest

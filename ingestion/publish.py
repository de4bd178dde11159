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
and would see the renamed-but-uncommitted files of a publish that crashed between steps 3 and 4,
so the readers outside ingestion (materialization, training-set builds) call :func:`settle` first:
it rolls such a batch forward (or waits for a publish in progress) under the lock.

Quarantine copies the whole refused batch directory: its regular files (a link to a file: its
content) and its real subdirectories (e.g. a table sent as a dataset of part files). Links to
directories, links that cannot be followed, FIFOs, sockets and devices are never followed nor
opened, and are listed with the reason in ``_reason.json``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
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


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OSError naming no file (a buffered or pyarrow write, e.g. disk full) gets ``path`` as its file."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with _naming(tmp), open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
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
            with _naming(dest):
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


def settle(root: Path, timeout_s: float = 600.0, wait: bool = False) -> list[str]:
    """Recover an interrupted publish before a reader that does not filter on commit records reads.

    Feast's sources glob every ``<table>/**/*.parquet``: a batch whose publish crashed between the
    renames and its commit record would be read half there until the next ingest. Materialization
    and training-set builds call this first. The lock is held for the recovery only, not for the
    reads after it; with nothing staged there is nothing to recover or to wait for. Returns the notes.

    ``wait=True`` (training sets, which must be reproducible as of a time) always takes the lock, so
    an ingest in progress finishes first: its ``ingested_at`` (taken under the lock) may be before the
    reader's as-of time, and read before its commit the set would lack a batch a later rebuild as of
    the same time includes. An ingest that takes the lock after this stamps a later time.
    """
    staging = root / STAGING_DIR
    if wait and root.is_dir():
        with store_lock(root, timeout_s):
            return recover(root)
    if not staging.is_dir() or not any(p.is_dir() for p in staging.iterdir()):
        return []
    with store_lock(root, timeout_s):
        return recover(root)


REASON_FILE = "_reason.json"
NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs, tmpfs)


def _batch_digest(directory: Path, skip: frozenset[str] = frozenset()) -> str:
    """sha256 of a directory's files (relative paths and bytes)."""
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


def _fit_name(name: str, budget: int) -> str:
    """``name`` cut to at most ``budget`` bytes, never in the middle of a UTF-8 character."""
    raw = os.fsencode(name)
    if len(raw) <= budget:
        return name
    raw = raw[:budget]
    for drop in range(4):  # a UTF-8 character is at most 4 bytes long
        try:
            return raw[:len(raw) - drop].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return os.fsdecode(raw)  # not UTF-8 to begin with: keep its bytes as they were


def _not_a_file(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory: never followed through a link (it could lead to the batch itself, or to /)"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO): special files are never opened"
    if stat.S_ISSOCK(mode):
        return "a socket: special files are never opened"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device: special files are never opened"
    return "not a regular file"


def _copy_file(src: Path, dst: Path) -> str | None:
    """Copy ``src`` (a link: the file it points to) to ``dst``; or say why it is not a file to copy."""
    link = src.is_symlink()
    try:
        mode = src.stat().st_mode  # follows a link, so a link to a file keeps the file's content
    except OSError as exc:
        if not link:
            raise
        return f"a link that cannot be followed ({exc.strerror}): nothing to keep"
    if not stat.S_ISREG(mode):
        return ("a link to " if link else "") + _not_a_file(mode)
    # O_NONBLOCK: should the entry have become a FIFO since the stat, opening it must not hang.
    fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as fin:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _not_a_file(st.st_mode)
        with open(dst, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return None


def _copy_batch_files(batch_dir: Path, dest: Path, prefix: str = "") -> dict[str, str]:
    """Copy ``batch_dir`` into ``dest``: regular files, and real subdirectories recursively (they cannot
    loop); {relative entry: why not} for the rest. A link to a directory is never followed (to the
    batch itself or to "/", it would be copied without end). A file that fails to copy is named with
    its error and the others are still kept.
    """
    try:
        names = sorted(os.listdir(batch_dir))
    except OSError as exc:
        return {prefix or ".": f"the directory cannot be listed: {exc}"}
    skipped: dict[str, str] = {}
    for name in names:
        entry = f"{prefix}{name}"
        if not prefix and name == REASON_FILE:
            skipped[entry] = "name reserved for the quarantine's own reason file"
            continue
        src = batch_dir / name
        if not src.is_symlink() and src.is_dir():
            (dest / name).mkdir()
            skipped.update(_copy_batch_files(src, dest / name, f"{entry}/"))
            continue
        try:
            why = _copy_file(src, dest / name)
        except OSError as exc:
            (dest / name).unlink(missing_ok=True)
            why = f"copy failed: {exc}"
        if why:
            skipped[entry] = why
    return skipped


def quarantine(batch_dir: Path, quarantine_root: Path, label: str, reason: dict[str, Any]) -> Path:
    """Copy the batch directory to ``<quarantine>/<dirname>-<label>/`` with ``_reason.json``.

    Entries not copied (directories, special files, unfollowable links, failed copies) are listed in
    the reason under ``entries_not_copied``. The same files refused again replace their copy (with the
    newest reason). Different files refused under the same label (values that fail conversion type
    alike, so their batch ids match) never overwrite an earlier delivery: they go to
    ``<dirname>-<label>-<digest>/``. The copy is made under a temporary name and renamed into place
    with its reason, so a quarantine folder never lacks its ``_reason.json``.
    """
    # Room for ".<name>-<label>.tmp" and "<name>-<label>-<digest>" within one file name.
    longest = max(len(os.fsencode(f".-{label}.tmp")), len(os.fsencode(f"-{label}-{'0' * 12}")))
    name = _fit_name(batch_dir.resolve().name or "batch", NAME_MAX - longest)
    dest = quarantine_root / f"{name}-{label}"
    if _contains(batch_dir, quarantine_root):
        # Not a batch (the data dir, a parent of it, "/"): copying it would copy the quarantine into
        # itself. Keep the reason only, saying why nothing was copied.
        not_copied = {**reason, "files_not_copied": f"{batch_dir.resolve()} contains the quarantine folder "
                                                    f"{quarantine_root.resolve()}: it is not a batch directory"}
        dest.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(dest / REASON_FILE, not_copied)
        return dest
    quarantine_root.mkdir(parents=True, exist_ok=True)
    tmp = quarantine_root / f".{name}-{label}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        skipped = _copy_batch_files(batch_dir, tmp)
        if skipped:
            reason = {**reason, "entries_not_copied": skipped}
        _write_json_atomic(tmp / REASON_FILE, reason)
        digest = _batch_digest(tmp, skip=frozenset({REASON_FILE}))
        if dest.exists() and _batch_digest(dest, skip=frozenset({REASON_FILE})) != digest:
            dest = quarantine_root / f"{name}-{label}-{digest[:12]}"
        if dest.exists():  # the same files refused again: the newest reason replaces the old copy
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-made quarantine without its reason left behind
        raise
    return dest

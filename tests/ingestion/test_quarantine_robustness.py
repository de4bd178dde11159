"""Hostile batch directories and a hostile environment: a refused batch is always quarantined with its
reason (links to directories, link loops, FIFOs, very long names, copy errors), and an ingest that
cannot finish (lock held, file size limit) ends in one `error:` line with the store unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import ingestion.publish as publish_mod
from config.settings import REPO_ROOT, Settings
from ingestion.cli import app
from ingestion.ingest import ingest_batch
from ingestion.publish import IngestLockTimeout
from ingestion.store import STAGING_DIR, committed_batches
from tests.ingestion.factories import bad_price_batch, valid_tables, write_batch

NOW = pd.Timestamp("2024-06-01", tz="UTC")
TABLE_FILES = ["markets.csv", "polls.csv", "price_snapshots.csv"]


def _ingest(settings: Settings, batch: Path, **kw: object):
    return ingest_batch(batch, settings=settings, now=NOW, run_gate=False, **kw)


def _refused_batch(batch: Path, text: str = "abc") -> Path:
    """A CSV batch refused by the contract (one price is not a number), before any gate runs."""
    return bad_price_batch(batch, text)


def _leftovers(settings: Settings) -> list[str]:
    return [p.name for p in settings.quarantine_dir.iterdir() if p.name.startswith(".")]


def _size(directory: Path) -> int:
    return sum(p.lstat().st_size for p in directory.rglob("*"))


def test_links_to_directories_a_link_loop_and_a_fifo_are_listed_not_followed(settings: Settings,
                                                                             tmp_path: Path) -> None:
    """`ln -s "$PWD/b" b/self` made copytree copy the batch into itself ~40 levels deep, then fail
    with no `_reason.json`; a FIFO made it fail too. Now the batch's files and real subdirectories
    are kept (the contract: the whole directory), links to directories and special files are not."""
    batch = _refused_batch(tmp_path / "b")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("not part of the batch\n")
    (tmp_path / "notes.txt").write_text("kept through a link\n")
    (batch / "self").symlink_to(batch.resolve(), target_is_directory=True)
    (batch / "elsewhere").symlink_to(outside, target_is_directory=True)
    (batch / "loop").symlink_to(batch / "loop")
    (batch / "dangling.csv").symlink_to(tmp_path / "missing.csv")
    (batch / "notes.txt").symlink_to(tmp_path / "notes.txt")
    os.mkfifo(batch / "pipe.csv")
    (batch / "polls.parquet").mkdir()  # a table sent as a dataset of part files: kept as sent
    (batch / "polls.parquet" / "part-0.parquet").write_bytes(b"PAR1 part file")
    (batch / "polls.parquet" / "deeper").mkdir()
    (batch / "polls.parquet" / "deeper" / "inner.csv").write_text("x\n")
    (batch / "polls.parquet" / "up").symlink_to(batch.resolve(), target_is_directory=True)
    os.mkfifo(batch / "polls.parquet" / "deeper" / "pipe")

    result = _ingest(settings, batch)

    assert not result.accepted and result.quarantine_path is not None
    kept = sorted(p.name for p in result.quarantine_path.iterdir())
    assert kept == sorted([*TABLE_FILES, "notes.txt", "polls.parquet", publish_mod.REASON_FILE])
    dataset = result.quarantine_path / "polls.parquet"
    assert (dataset / "part-0.parquet").read_bytes() == b"PAR1 part file"
    assert (dataset / "deeper" / "inner.csv").read_text() == "x\n"
    assert sorted(p.name for p in dataset.rglob("*")) == ["deeper", "inner.csv", "part-0.parquet"]
    for name in TABLE_FILES:
        assert (result.quarantine_path / name).read_bytes() == (batch / name).read_bytes()
    copied = result.quarantine_path / "notes.txt"
    assert not copied.is_symlink() and copied.read_text() == "kept through a link\n"
    reason = json.loads((result.quarantine_path / publish_mod.REASON_FILE).read_text())
    assert reason["violations"] and reason["batch_id"] == result.batch_id
    skipped = reason["entries_not_copied"]
    assert sorted(skipped) == ["dangling.csv", "elsewhere", "loop", "pipe.csv",
                               "polls.parquet/deeper/pipe", "polls.parquet/up", "self"]
    assert skipped["self"].startswith("a link to a directory")
    assert skipped["elsewhere"].startswith("a link to a directory")
    assert skipped["polls.parquet/up"].startswith("a link to a directory")
    assert "FIFO" in skipped["polls.parquet/deeper/pipe"]
    assert "FIFO" in skipped["pipe.csv"] and "never opened" in skipped["pipe.csv"]
    assert "cannot be followed" in skipped["loop"] and "cannot be followed" in skipped["dangling.csv"]
    assert _size(result.quarantine_path) < 100_000
    assert _leftovers(settings) == []


def test_a_file_that_fails_to_copy_is_named_and_the_rest_is_kept(tmp_path: Path) -> None:
    """A real copy error (the file size limit, as a full disk would) on one file: the other files and
    the reason are still quarantined, and the failure is in the reason. Before: shutil.Error, a
    `.b-<id>.tmp` dir left and no `_reason.json`."""
    batch = _refused_batch(tmp_path / "b")
    (batch / "big.bin").write_bytes(os.urandom(300_000))
    data = tmp_path / "data"
    out = _in_subprocess_with_file_size_limit(f"""
        from ingestion.ingest import ingest_batch
        r = ingest_batch({str(batch)!r}, settings=settings, run_gate=False)
        print(r.accepted, r.quarantine_path)
    """, data, limit=100_000)
    assert out.returncode == 0, out.stderr
    accepted, path = out.stdout.split()
    quarantined = Path(path)
    assert accepted == "False" and quarantined.parent == data / "quarantine"
    assert sorted(p.name for p in quarantined.iterdir()) == sorted([*TABLE_FILES, publish_mod.REASON_FILE])
    reason = json.loads((quarantined / publish_mod.REASON_FILE).read_text())
    assert reason["violations"]
    assert reason["entries_not_copied"]["big.bin"].startswith("copy failed: [Errno 27]")
    assert [p.name for p in (data / "quarantine").iterdir() if p.name.startswith(".")] == []


def test_a_batch_name_too_long_for_a_quarantine_name_is_cut_on_a_character(settings: Settings,
                                                                           tmp_path: Path) -> None:
    """A 241-byte directory name: `.<name>-<id>.tmp` exceeded the 255-byte name limit (Errno 36)."""
    name = "b" + "é" * 120  # 241 bytes in UTF-8
    first = _ingest(settings, _refused_batch(tmp_path / name, "abc"))
    second = _ingest(settings, _refused_batch(tmp_path / name, "xyz"))  # same label, other content
    assert first.batch_id == second.batch_id and first.quarantine_path != second.quarantine_path
    for result in (first, second):
        folder = result.quarantine_path
        assert folder is not None and len(os.fsencode(folder.name)) <= 255
        folder.name.encode("utf-8")  # whole characters only (a split one would be a surrogate escape)
        stem = folder.name.split(f"-{result.batch_id}")[0]
        assert len(stem) > 100 and name.startswith(stem)
        assert json.loads((folder / publish_mod.REASON_FILE).read_text())["violations"]
    assert "xyz" in (second.quarantine_path / "price_snapshots.csv").read_text()
    assert _leftovers(settings) == []


def _hold_lock(root: Path) -> subprocess.Popen:
    """Another process holding the store's real lock until its stdin closes."""
    code = ("import sys; from pathlib import Path; from ingestion.publish import store_lock\n"
            f"with store_lock(Path({str(root)!r})):\n    print('locked', flush=True); sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_lock_held_by_another_process_times_out_in_the_library_and_the_cli(settings: Settings,
                                                                          tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "good", valid_tables(), "csv")
    holder = _hold_lock(settings.offline_store_dir)
    try:
        with pytest.raises(IngestLockTimeout, match="_ingest.lock"):
            _ingest(settings, batch, lock_timeout_s=0.3)
        result = CliRunner().invoke(app, ["ingest", str(batch), "--lock-timeout", "0.3"])
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: ") and str(settings.offline_store_dir / "_ingest.lock") in line
    assert "nothing was read or changed" in line
    assert not committed_batches(settings.offline_store_dir) and not any(settings.quarantine_dir.iterdir())
    assert _ingest(settings, batch, lock_timeout_s=5).accepted  # released: the next ingest goes through


def _in_subprocess_with_file_size_limit(body: str, data: Path, limit: int,
                                        argv: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `body` (with `settings` for `data`) or the CLI (`argv`) under RLIMIT_FSIZE: writes past
    `limit` bytes fail with EFBIG, as on a full disk (Python ignores SIGXFSZ, so nothing is killed)."""
    prelude = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
    """)
    env = {**os.environ, "PM_DATA_DIR": str(data), "PYTHONDONTWRITEBYTECODE": "1"}
    if argv is None:
        code = prelude + "from config.settings import Settings\n" + \
            f"settings = Settings.from_env({{'PM_DATA_DIR': {str(data)!r}}})\n" + textwrap.dedent(body)
    else:
        code = prelude + f"import sys; sys.argv = ['ingestion', *{argv!r}]\n" \
            "from ingestion.cli import app\napp()\n"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_full_disk_while_quarantining_is_one_error_line_from_the_cli(tmp_path: Path) -> None:
    """Writes fail after 500 bytes: not even the reason fits. One `error:` line naming the file, exit 2,
    no traceback, and no half-made quarantine folder left behind."""
    batch = _refused_batch(tmp_path / "b")
    data = tmp_path / "data"
    out = _in_subprocess_with_file_size_limit("", data, limit=500, argv=["ingest", str(batch)])
    assert out.returncode == 2, out.stdout + out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"error: ingest of {batch} stopped: [Errno 27] File too large: ")
    assert str(data / "quarantine") in line and "nothing new was committed" in line
    assert list((data / "quarantine").iterdir()) == []
    assert not committed_batches(data / "offline")


def test_full_disk_while_staging_names_the_file_and_the_next_ingest_recovers(tmp_path: Path) -> None:
    """pyarrow's write error names no file; the ingest's error does (the staged file), and the store
    is unchanged: the next ingest discards the staging and publishes the batch."""
    batch = write_batch(tmp_path / "good", valid_tables())
    data = tmp_path / "data"
    out = _in_subprocess_with_file_size_limit(f"""
        from ingestion.ingest import ingest_batch
        try:
            ingest_batch({str(batch)!r}, settings=settings, run_gate=False)
        except OSError as exc:
            print(exc.errno, exc.filename)
    """, data, limit=1_000)
    assert out.returncode == 0, out.stderr
    errno, filename = out.stdout.split()
    root = data / "offline"
    assert errno == "27" and Path(filename).is_relative_to(root / STAGING_DIR)
    assert not committed_batches(root)
    settings = Settings.from_env({"PM_DATA_DIR": str(data)})
    again = _ingest(settings, batch)
    assert again.accepted and any("discarded" in w for w in again.warnings)
    assert not any((root / STAGING_DIR).iterdir())


def test_settle_rolls_a_crashed_publish_forward_and_releases_the_lock(settings: Settings,
                                                                     tmp_path: Path) -> None:
    """The state a crash between the renames and the commit record leaves (manifest written, one file
    moved): settle() finishes it, and holds the lock for that only."""
    root = settings.offline_store_dir
    assert publish_mod.settle(root) == []  # nothing staged: nothing to do (no lock taken)
    first = _ingest(settings, write_batch(tmp_path / "one", valid_tables()))
    frames = {"markets": pd.read_parquet(root / first.files[0])}
    record = {"batch_id": "crashed", "ingested_at": NOW.isoformat()}
    files = publish_mod.stage_batch(root, "crashed", frames)
    publish_mod.write_manifest(root, "crashed", files, {**record, "files": files})
    publish_mod.move_into_place(root, "crashed", files[:1])
    assert (root / files[0]).is_file() and "crashed" not in committed_batches(root)

    notes = publish_mod.settle(root, timeout_s=5)

    assert notes == ["recovered batch crashed: rolled forward an interrupted publish (1 file(s))"]
    assert committed_batches(root)["crashed"]["files"] == files
    assert not any((root / STAGING_DIR).iterdir())
    holder = _hold_lock(root)  # the lock was released: another process can take it at once
    holder.stdin.close()
    holder.wait(30)

"""The Makefile's helper recipes, run for real with `make` (installs skipped with -o, paths in tmp dirs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import REPO_ROOT

MAKEFILE = REPO_ROOT / "Makefile"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without platform settings (the tests' own must not leak into make)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PM_", "MLFLOW_", "MAKE")) and k not in ("AIRFLOW_HOME", "MFLAGS")}
    return {**env, **extra}


def _make(*args: str, cwd: Path = REPO_ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-f", str(MAKEFILE), *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=120)


def test_bench_fails_and_keeps_no_result_when_a_benchmark_crashes(tmp_path: Path):
    ok, crash, after = tmp_path / "bench_a_ok.py", tmp_path / "bench_b_crash.py", tmp_path / "bench_c_after.py"
    ok.write_text('print(\'{"ok": 1}\')\n')
    crash.write_text('print(\'{"partial": \', flush=True)\nraise SystemExit("benchmark crashed")\n')
    after.write_text('print(\'{"after": 1}\')\n')
    results = tmp_path / "results"
    # -o dev: the dev install is taken as done; the recipe itself runs for real.
    proc = _make("-o", "dev", "bench", f"PY={sys.executable}", f"BENCH_SCRIPTS={ok} {crash} {after}",
                 f"BENCH_RESULTS={results}")
    assert proc.returncode != 0, f"make bench reported success although a benchmark crashed:\n{proc.stdout}"
    assert "bench_b_crash.py failed" in proc.stderr
    assert (results / "bench_a_ok.json").read_text() == '{"ok": 1}\n'
    assert sorted(p.name for p in results.iterdir()) == ["bench_a_ok.json"], "no partial or later result file"


def test_clean_deletes_pm_data_dir_not_the_checkouts_data(tmp_path: Path):
    checkout = tmp_path / "checkout"
    (checkout / "data").mkdir(parents=True)
    (checkout / "data" / "keep").write_text("x")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "offline").mkdir(parents=True)

    proc = _make("clean", cwd=checkout, PM_DATA_DIR=str(elsewhere))
    assert proc.returncode == 0, proc.stderr
    assert not elsewhere.exists()
    assert (checkout / "data" / "keep").exists(), "make clean deleted ./data although PM_DATA_DIR points elsewhere"

    proc = _make("clean", cwd=checkout)  # no PM_DATA_DIR: the default ./data
    assert proc.returncode == 0, proc.stderr
    assert not (checkout / "data").exists()


@pytest.mark.parametrize("target", ["checkout", "/", "..", "../..", "home-parent"])
def test_clean_refuses_the_checkout_root_or_what_holds_them(tmp_path: Path, target: str):
    checkout = tmp_path / "outer" / "checkout"
    checkout.mkdir(parents=True)
    (checkout / "file").write_text("x")
    home = tmp_path / "users" / "me"
    home.mkdir(parents=True)
    data_dir = {"checkout": str(checkout), "home-parent": str(home.parent)}.get(target, target)
    proc = _make("clean", cwd=checkout, PM_DATA_DIR=data_dir, HOME=str(home))
    assert proc.returncode != 0 and "refusing" in proc.stderr
    assert (checkout / "file").exists() and home.exists()


def _demo_dry_run(tmp_path: Path, **env: str) -> list[str]:
    """Commands of the demo recipe (make -n: nothing is executed; -o venv: no install)."""
    proc = _make("-n", "-o", "venv", "demo", **env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_demo_writes_raw_batches_under_pm_raw_dir(tmp_path: Path):
    raw = tmp_path / "raw"
    lines = _demo_dry_run(tmp_path, PM_RAW_DIR=str(raw), PM_DATA_DIR=str(tmp_path / "data"))
    assert any(f"--out {raw}/demo" in ln for ln in lines), lines


def test_demo_rebuilds_the_replayed_log_before_replaying(tmp_path: Path):
    # Replay adds uniquely named part files to its log dir, which `monitoring run` then reads whole: a re-run
    # of the demo would count the previous replay's rows again unless the dir is emptied first.
    data = tmp_path / "data"
    lines = _demo_dry_run(tmp_path, PM_DATA_DIR=str(data))
    replay = next(i for i, ln in enumerate(lines) if "-m monitoring replay" in ln)
    assert f"rm -rf {data}/replayed_prediction_log" in lines[:replay], lines


def test_demo_resets_only_what_a_previous_demo_wrote(tmp_path: Path):
    """A re-run of `make demo` starts over (the drifted fourth batch left published would be in the
    next training set and fail its gates), but never deletes a data dir make demo did not write."""
    fresh = tmp_path / "fresh"
    proc = _make("demo-reset", PM_DATA_DIR=str(fresh))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in fresh.iterdir()] == [".made-by-make-demo"]

    (fresh / "offline").mkdir()
    (fresh / "offline" / "published.parquet").write_text("x")  # the previous demo's state
    proc = _make("demo-reset", PM_DATA_DIR=str(fresh))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in fresh.iterdir()] == [".made-by-make-demo"]

    foreign = tmp_path / "platform-data"
    (foreign / "offline").mkdir(parents=True)
    (foreign / "offline" / "keep.parquet").write_text("x")
    proc = _make("demo-reset", PM_DATA_DIR=str(foreign))
    assert proc.returncode != 0 and "make demo did not write" in proc.stderr
    assert (foreign / "offline" / "keep.parquet").exists() and not (foreign / ".made-by-make-demo").exists()

    # A marker cannot talk it into deleting what `make clean` refuses to (here: a dir holding the checkout).
    checkout = tmp_path / "outer" / "checkout"
    checkout.mkdir(parents=True)
    (checkout.parent / ".made-by-make-demo").write_text("")
    proc = _make("demo-reset", cwd=checkout, PM_DATA_DIR="..")
    assert proc.returncode != 0 and "refusing" in proc.stderr and checkout.exists()


def test_demo_world_ends_today_so_served_features_are_fresh(tmp_path: Path):
    from datetime import datetime, timedelta, timezone

    lines = _demo_dry_run(tmp_path, PM_DATA_DIR=str(tmp_path / "data"))
    generate = " ".join(ln for ln in lines if "-m ingestion generate" in ln or "--drift-start" in ln)
    today = datetime.now(timezone.utc).date()
    assert f"--end {today}" in generate, generate
    assert f"--start {today - timedelta(days=547)}" in generate and f"--drift-start {today - timedelta(days=122)}" \
        in generate, generate

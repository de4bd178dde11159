"""The committed GX project matches the suites in code; Data Docs build and serve; GX speed fixes are exact."""

from __future__ import annotations

import decimal
import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.settings import REPO_ROOT
from tests.validation import factories
from validation import suites
from validation.project import KEY_COLUMNS, docs_index, import_gx, stored_suite_specs


def test_committed_suites_match_code(gate_settings) -> None:
    """gx/expectations/*.json are what validation/suites.py says (rerun `python -m validation init` if not)."""
    stored = stored_suite_specs(gate_settings)
    for spec in suites.all_suites():
        expected = [{"type": _snake(e.type), "kwargs": e.kwargs, "rule": e.rule, "severity": spec.severity}
                    for e in spec.expectations]
        actual = [{"type": e["type"], "kwargs": e["kwargs"], "rule": e["meta"]["rule"],
                   "severity": e["meta"]["severity"]} for e in stored[spec.name]]
        assert [e["notes"] for e in stored[spec.name]] == [e.rule for e in spec.expectations]
        assert _canonical(actual) == _canonical(expected), spec.name


def test_committed_checkpoints_update_data_docs() -> None:
    for table in (*suites.TABLES, suites.TRAINING_SET):
        config = json.loads((REPO_ROOT / "gx" / "checkpoints" / f"{suites.checkpoint_name(table)}.json").read_text())
        assert [a["type"] for a in config["actions"]] == ["pm_update_data_docs"]
        assert config["result_format"]["unexpected_index_column_names"] == KEY_COLUMNS[table]
        names = {vd["name"] for vd in config["validation_definitions"]}
        assert names == {s.name for s in suites.suites_for(table)}


def test_analytics_disabled_in_committed_config() -> None:
    text = (REPO_ROOT / "gx" / "great_expectations.yml").read_text()
    assert "analytics_enabled: false" in text
    assert "uncommitted/" in (REPO_ROOT / "gx" / ".gitignore").read_text()


def test_docs_build_and_serve(gate_settings) -> None:
    from validation.docs import build_docs, make_server
    from validation.gate import run_batch_checkpoint

    markets = factories.markets(40)
    run_batch_checkpoint({"markets": markets.assign(platform="Bad Platform")}, "served", settings=gate_settings)
    index = build_docs(gate_settings)
    assert index == docs_index(gate_settings) and index.is_file()
    server = make_server(index.parent, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        home = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10).read().decode()
        assert "batch-served" in home
        assert "markets.contract" in home
    finally:
        server.shutdown()
        server.server_close()


def test_cli_help_is_light() -> None:
    """`python -m validation --help` must not import great_expectations (seconds to import)."""
    code = ("import sys; from typer.testing import CliRunner; from validation.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'great_expectations' not in sys.modules; print(r.output)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for command in ("init", "validate", "docs"):
        assert command in out.stdout


def test_validate_command_on_parquet_batch(gate_settings, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from config.settings import get_settings
    from validation.cli import app

    markets = factories.markets(40)
    snaps = factories.snapshots(markets)
    snaps.loc[0, "price"] = -0.5
    batch = tmp_path / "batch-x"
    batch.mkdir()
    markets.to_parquet(batch / "markets.parquet", index=False)
    snaps.to_parquet(batch / "price_snapshots.parquet", index=False)
    monkeypatch.setenv("PM_DATA_DIR", str(gate_settings.data_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["validate", str(batch)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert "FAIL expect_column_values_to_be_between on price_snapshots.price" in result.output
    assert "Data Docs:" in result.output


def test_decimal_speedup_keeps_answers() -> None:
    import_gx()
    from great_expectations import util

    assert util.does_ndarray_contain_decimal_dtype(np.array([1.0, 2.0])) is False
    assert util.does_ndarray_contain_decimal_dtype(np.array([decimal.Decimal("1.5"), 2.0], dtype=object)) is True
    assert util.does_ndarray_contain_decimal_dtype(np.array(["a", None], dtype=object)) is False
    converted = util.convert_pandas_series_decimal_to_float_dtype(pd.Series([decimal.Decimal("0.25")]))
    assert converted.tolist() == [0.25]


def test_fingerprint_reuse_is_scoped_and_exact() -> None:
    import_gx()
    from great_expectations.execution_engine import pandas_execution_engine as engine

    from validation.speedups import reuse_batch_fingerprints

    frame = factories.snapshots(factories.markets(10))
    original = engine.hash_pandas_dataframe.__wrapped__
    with reuse_batch_fingerprints():
        first = engine.hash_pandas_dataframe(frame)
        assert engine.hash_pandas_dataframe(frame) == first == original(frame)
        other = frame.assign(price=0.5)
        assert engine.hash_pandas_dataframe(other) == original(other) != first
    frame.loc[0, "price"] = 0.99  # outside the block nothing is cached: a mutation is seen
    assert engine.hash_pandas_dataframe(frame) == original(frame) != first


def test_jinja_speedup_renders_identically(gate_settings, monkeypatch) -> None:
    import jinja2
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import view as gx_view
    from great_expectations.render.view import DefaultJinjaPageView

    from validation.frames import markets_frame
    from validation.project import get_project
    from validation.suites import Thresholds

    checkpoint = get_project(gate_settings).checkpoints["markets"]
    run = checkpoint.run(batch_parameters={"dataframe": markets_frame(factories.markets(30))},
                         expectation_parameters=Thresholds().as_parameters())
    validation_result = next(iter(run.run_results.values()))
    # (GX's render mutates the rendered document, so each view gets its own.)
    cached = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(validation_result))
    cached_again = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(validation_result))
    with monkeypatch.context() as patch:
        patch.setattr(gx_view, "Environment", jinja2.Environment)  # GX as shipped: compile from source
        uncached = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(validation_result))
    assert issubclass(gx_view.Environment, jinja2.Environment) and gx_view.Environment is not jinja2.Environment
    assert "markets.contract" in uncached
    assert _strip_uuids(cached) == _strip_uuids(uncached) == _strip_uuids(cached_again)


def _strip_uuids(html: str) -> str:
    import re

    html = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", html)
    return re.sub(r"\d{8}T\d{6}\.\d+Z", "TIME", html)


def _snake(name: str) -> str:
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _canonical(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


@pytest.fixture(autouse=True, scope="module")
def _imports_gx_once():
    import_gx()


def test_init_writes_a_working_project_and_is_idempotent(tmp_path: Path) -> None:
    from config.settings import Settings
    from validation.gate import run_batch_checkpoint
    from validation.project import write_project

    settings = Settings.from_env({"PM_DATA_DIR": str(tmp_path / "data"), "PM_GX_DIR": str(tmp_path / "gx")})
    written = write_project(settings.gx_dir, settings)
    assert "checkpoint price_snapshots_gate" in written
    assert (settings.gx_dir / "great_expectations.yml").read_text().count("analytics_enabled: false") == 1
    before = {p: p.read_text() for p in settings.gx_dir.rglob("*.json")}
    assert write_project(settings.gx_dir, settings) == ["GX project already up to date"]
    assert {p: p.read_text() for p in settings.gx_dir.rglob("*.json")} == before  # no id churn
    markets = factories.markets(30)
    result = run_batch_checkpoint({"markets": markets, "price_snapshots": factories.snapshots(markets)}, "fresh",
                                  settings=settings)
    assert result.success, result.to_text()

"""The committed GX project matches the suites in code; Data Docs build and serve; GX speed fixes are exact."""

from __future__ import annotations

import decimal
import json
from datetime import datetime, timezone
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
from validation.project import KEY_COLUMNS, docs_index, get_project, import_gx, stored_suite_specs


def test_committed_suites_match_code(gate_settings) -> None:
    """gx/expectations/*.json are what validation/suites.py says (rerun `python -m validation init` if not)."""
    stored = stored_suite_specs(gate_settings)
    for spec in suites.all_suites():
        expected = [{"type": _snake(e.type), "kwargs": e.kwargs, "rule": e.rule, "severity": e.severity,
                     "gx_severity": suites.GX_SEVERITY[e.severity]} for e in spec.expectations]
        actual = [{"type": e["type"], "kwargs": e["kwargs"], "rule": e["meta"]["rule"],
                   "severity": e["meta"]["severity"], "gx_severity": e["severity"]} for e in stored[spec.name]]
        assert [e["notes"] for e in stored[spec.name]] == [e.rule for e in spec.expectations]
        assert _canonical(actual) == _canonical(expected), spec.name


def test_committed_checkpoints_update_data_docs() -> None:
    for table in (*suites.TABLES, suites.TRAINING_SET):
        config = json.loads((REPO_ROOT / "gx" / "checkpoints" / f"{suites.checkpoint_name(table)}.json").read_text())
        assert [a["type"] for a in config["actions"]] == ["pm_update_data_docs"]
        assert config["result_format"]["unexpected_index_column_names"] == KEY_COLUMNS[table]
        names = {vd["name"] for vd in config["validation_definitions"]}
        assert names == {s.name for s in suites.suites_for(table)}


def test_committed_data_docs_site_matches_code() -> None:
    """GX rewrites great_expectations.yml itself (datasources), so `validation init` never overwrites it:
    the Data Docs site (index limit, and no limit for the pages) must be kept in step by hand."""
    import yaml

    from validation.project import GX_YML

    committed = yaml.safe_load((REPO_ROOT / "gx" / "great_expectations.yml").read_text())
    assert committed["data_docs_sites"] == yaml.safe_load(GX_YML)["data_docs_sites"]
    assert committed["data_docs_sites"]["local_site"]["site_section_builders"]["validations"][
        "validation_results_limit"] == 0


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


def test_validate_command_passes_a_simulator_batch_and_refuses_csv_in_one_line(gate_settings, tmp_path: Path,
                                                                              monkeypatch) -> None:
    """The simulator's Parquet has no pandas metadata: an int8 outcome with nulls (open markets) must stay
    Int8 (as ingestion hands it to the gate), not become float64; a CSV batch is one `error:` line."""
    from datetime import date

    from typer.testing import CliRunner

    from config.settings import get_settings
    from ingestion.simulate import SimulationConfig, generate
    from validation.cli import app

    generate(SimulationConfig(n_markets=40, start=date(2024, 1, 1), end=date(2024, 3, 1), seed=4, n_batches=1,
                              fmt="parquet", drift_start=None), tmp_path / "sim", progress=False)
    csv_batch = tmp_path / "csv"
    generate(SimulationConfig(n_markets=10, start=date(2024, 1, 1), end=date(2024, 2, 1), seed=4, n_batches=1,
                              fmt="csv", drift_start=None), csv_batch, progress=False)
    batch = tmp_path / "sim" / "batch-001"
    assert pd.read_parquet(batch / "markets.parquet")["outcome"].isna().any(), "some markets must be open"
    monkeypatch.setenv("PM_DATA_DIR", str(gate_settings.data_dir))
    get_settings.cache_clear()
    try:
        passed = CliRunner().invoke(app, ["validate", str(batch)])
        csv = CliRunner().invoke(app, ["validate", str(csv_batch / "batch-001")])
    finally:
        get_settings.cache_clear()
    assert passed.exit_code == 0, passed.output
    assert "validation passed" in passed.output
    assert csv.exit_code == 2, csv.output
    assert csv.output.startswith("error: ") and "markets.csv" in csv.output and "Traceback" not in csv.output


def _validate(gate_settings, monkeypatch, *args: str, gx_dir: Path | None = None):
    from typer.testing import CliRunner

    from config.settings import get_settings
    from validation.cli import app

    monkeypatch.setenv("PM_DATA_DIR", str(gate_settings.data_dir))
    if gx_dir is not None:
        monkeypatch.setenv("PM_GX_DIR", str(gx_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["validate", *args])
    finally:
        get_settings.cache_clear()
    # Never an exception out of the command: exit codes and one line per problem.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def _write_batch(directory: Path, **tables: pd.DataFrame) -> Path:
    directory.mkdir(parents=True)
    for name, frame in tables.items():
        frame.to_parquet(directory / f"{name}.parquet", index=False)
    return directory


@pytest.mark.slow
def test_validate_command_types_the_batch_as_ingestion_does(gate_settings, tmp_path: Path, monkeypatch) -> None:
    """What ingestion accepts (a double outcome, timestamps in another zone: converted to UTC) passes; what
    its reader refuses (a resolution_date in 3000, naive timestamps) is refused, one line each, exit 1."""
    markets = factories.markets(40)
    snaps = factories.snapshots(markets)
    accepted = _write_batch(tmp_path / "accepted", markets=markets.assign(outcome=markets["outcome"].astype("float64")),
                            price_snapshots=snaps.assign(ts=snaps["ts"].dt.tz_convert("Asia/Kolkata")))
    passed = _validate(gate_settings, monkeypatch, str(accepted))
    assert passed.exit_code == 0, passed.output
    assert "validation passed (0 failing" in passed.output

    far = markets.assign(resolution_date=markets["resolution_date"].astype("datetime64[us, UTC]"))
    far.loc[0, "resolution_date"] = pd.Timestamp("3000-01-01", tz="UTC")
    naive = snaps.assign(ts=snaps["ts"].dt.tz_localize(None))
    refused = _validate(gate_settings, monkeypatch, str(_write_batch(tmp_path / "refused", markets=far,
                                                                     price_snapshots=naive)))
    assert refused.exit_code == 1, refused.output
    fail_lines = [line for line in refused.output.splitlines() if line.startswith("  FAIL")]
    assert len(fail_lines) == 2, refused.output
    assert fail_lines[0].startswith("  FAIL ingestion:timestamp_in_future on markets.resolution_date: ")
    assert "(1 rows)" in fail_lines[0] and "3000-01-01" in fail_lines[0]
    assert fail_lines[1].startswith("  FAIL ingestion:naive_timestamp on price_snapshots.ts: ")
    assert f"({len(snaps)} rows)" in fail_lines[1]
    as_json = json.loads(_validate(gate_settings, monkeypatch, "--json", str(tmp_path / "refused")).stdout)
    assert as_json["success"] is False
    assert [(f["file"], f["column"]) for f in as_json["failures"]] == [
        ("markets.parquet", "resolution_date"), ("price_snapshots.parquet", "ts")]

    naive_only = _write_batch(tmp_path / "naive", markets=markets, price_snapshots=naive)
    assert _validate(gate_settings, monkeypatch, str(naive_only)).exit_code == 1
    assert _validate(gate_settings, monkeypatch, "--assume-utc", str(naive_only)).exit_code == 0


def test_validate_command_without_a_gx_project_is_one_error_line(gate_settings, tmp_path: Path, monkeypatch) -> None:
    markets = factories.markets(10)
    batch = _write_batch(tmp_path / "batch", markets=markets)
    result = _validate(gate_settings, monkeypatch, str(batch), gx_dir=tmp_path / "no-project")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: No GX project at ") and "python -m validation init" in result.output


def test_decimal_speedup_keeps_answers() -> None:
    import_gx()
    from great_expectations import util

    assert util.does_ndarray_contain_decimal_dtype(np.array([1.0, 2.0])) is False
    assert util.does_ndarray_contain_decimal_dtype(np.array([decimal.Decimal("1.5"), 2.0], dtype=object)) is True
    assert util.does_ndarray_contain_decimal_dtype(np.array(["a", None], dtype=object)) is False
    converted = util.convert_pandas_series_decimal_to_float_dtype(pd.Series([decimal.Decimal("0.25")]))
    assert converted.tolist() == [0.25]


def test_jinja_speedup_renders_identically(gate_settings, monkeypatch) -> None:
    import jinja2
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import view as gx_view
    from great_expectations.render.view import DefaultJinjaPageView

    from validation.frames import markets_frame
    from validation.gate import expectation_parameters
    from validation.project import get_project

    checkpoint = get_project(gate_settings).checkpoints["markets"]
    run = checkpoint.run(batch_parameters={"dataframe": markets_frame(factories.markets(30))},
                         expectation_parameters=expectation_parameters(None, datetime.now(timezone.utc)))
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
    # The offline styles GX inlines into every page come with the project (the committed copy too).
    styles = Path("plugins", "custom_data_docs", "styles", "data_docs_custom_styles.css")
    assert f"Data Docs styles {styles}" in written
    assert (settings.gx_dir / styles).read_text() == (REPO_ROOT / "gx" / styles).read_text()
    assert "i.fa-times::before" in (settings.gx_dir / styles).read_text()
    assert (settings.gx_dir / "great_expectations.yml").read_text().count("analytics_enabled: false") == 1
    _add_stale_suite(settings, "markets.distribution")  # e.g. a suite since folded into markets.contract
    assert {"removed validation definition markets.distribution", "removed suite markets.distribution"} <= set(
        write_project(settings.gx_dir, settings))
    assert not (settings.gx_dir / "expectations" / "markets" / "distribution.json").exists()
    assert not (settings.gx_dir / "validation_definitions" / "markets.distribution.json").exists()
    before = {p: p.read_text() for p in settings.gx_dir.rglob("*.json")}
    assert write_project(settings.gx_dir, settings) == ["GX project already up to date"]
    assert {p: p.read_text() for p in settings.gx_dir.rglob("*.json")} == before  # no id churn
    markets = factories.markets(30)
    result = run_batch_checkpoint({"markets": markets, "price_snapshots": factories.snapshots(markets)}, "fresh",
                                  settings=settings)
    assert result.success, result.to_text()
    assert "i.fa-times::before" in Path(result.docs_page).read_text()  # styled offline


def _add_stale_suite(settings, name: str) -> None:
    from validation.project import BATCH_DEFINITION_NAME, DATASOURCE_NAME, _open_context, output_dir

    gx = import_gx()
    context = _open_context(settings.gx_dir, output_dir(settings))
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    batch_definition = context.data_sources.get(DATASOURCE_NAME).get_asset("markets").get_batch_definition(
        BATCH_DEFINITION_NAME)
    context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch_definition, suite=suite))
    assert (settings.gx_dir / "validation_definitions" / f"{name}.json").is_file()


def test_docs_severity_fix_is_scoped() -> None:
    """GX as shipped cannot rebuild an expectation its page renderer gave a Severity column; ours can."""
    import_gx()
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    as_shipped = ExpectationConfiguration.to_domain_obj.__wrapped__
    kwargs = {"column": "price", "min_value": 0.0, "max_value": 1.0}
    plain = ExpectationConfiguration(type="expect_column_values_to_be_between", kwargs=kwargs,
                                     meta={"rule": "r"}, notes="r", severity="warning")
    rendered = ExpectationConfiguration(type="expect_column_values_to_be_between",
                                        kwargs={**kwargs, "meta_properties_to_render": {"Severity": "severity"}},
                                        meta={"rule": "r"}, notes="r", severity="warning")
    assert plain.to_domain_obj() == as_shipped(plain)
    with pytest.raises(Exception, match="meta_properties_to_render"):
        as_shipped(rendered)
    rebuilt = rendered.to_domain_obj()
    assert rebuilt == as_shipped(plain)
    assert rebuilt.severity == "warning" and rebuilt.meta == {"rule": "r"}
    assert "meta_properties_to_render" in rendered.kwargs  # the renderer still reads it


def test_configuration_lookup_speedup_keeps_answers() -> None:
    """Every expectation of every suite: the patched kwargs lookups answer as GX's own do, with fresh objects."""
    from great_expectations.expectations.expectation import Expectation

    from validation.project import build_suite

    summary = {"result_format": {"result_format": "SUMMARY", "partial_unexpected_count": 5}}
    checked = 0
    for spec in suites.all_suites():
        for expectation in build_suite(spec).expectations:
            for name, args in (("_get_domain_kwargs", ()), ("_get_success_kwargs", ()),
                               ("_get_runtime_kwargs", ()), ("_get_runtime_kwargs", (summary,))):
                patched = getattr(Expectation, name)
                assert patched.__wrapped__ is not patched
                assert _canonical(patched(expectation, *args)) == _canonical(patched.__wrapped__(expectation, *args))
            keys = (*expectation.domain_keys, *expectation.success_keys, *expectation.runtime_keys)
            for key in keys:
                assert _canonical(expectation._get_success_kwarg(key, "default")) == _canonical(
                    Expectation._get_success_kwarg.__wrapped__(expectation, key, "default"))
            first = expectation._get_runtime_kwargs()
            first["result_format"]["partial_unexpected_count"] = -1  # a caller mutating its answer
            assert expectation._get_runtime_kwargs()["result_format"]["partial_unexpected_count"] != -1
            checked += 1
    assert checked == sum(len(s.expectations) for s in suites.all_suites())


def test_index_result_reuse_renders_the_same_index(gate_settings, monkeypatch) -> None:
    from great_expectations.data_context.store.validation_results_store import ValidationResultsStore
    from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder

    from validation import speedups
    from validation.docs import build_docs
    from validation.gate import run_batch_checkpoint

    markets = factories.markets(30)
    run_batch_checkpoint({"markets": markets}, "index-ok", settings=gate_settings)
    run_batch_checkpoint({"markets": markets.assign(platform="Bad")}, "index-bad", settings=gate_settings)
    reused = build_docs(gate_settings).read_text()
    cached = {text: id(result) for text, result in speedups._INDEX_RESULTS.items()}
    assert cached  # the index build went through the cache
    assert _strip_uuids(build_docs(gate_settings).read_text()) == _strip_uuids(reused)  # (page build time)
    assert {text: id(result) for text, result in speedups._INDEX_RESULTS.items() if text in cached} == cached
    with monkeypatch.context() as patch:  # GX as shipped: every index build deserializes every result
        patch.setattr(DefaultSiteIndexBuilder, "_add_validations_to_index_links",
                      DefaultSiteIndexBuilder._add_validations_to_index_links.__wrapped__)
        patch.setattr(ValidationResultsStore, "deserialize", ValidationResultsStore.deserialize.__wrapped__)
        as_shipped = build_docs(gate_settings).read_text()
    assert "batch-index-ok" in reused and "batch-index-bad" in reused
    assert _strip_uuids(reused) == _strip_uuids(as_shipped)
    # Outside index builds nothing is shared: each read is a new object.
    store = get_project(gate_settings).context.validation_results_store
    key = store.list_keys()[0]
    assert store.get(key) is not store.get(key)


def _grouped_snapshot_frames() -> dict[str, pd.DataFrame]:
    """Validation frames in several shapes: grouped by market (the fast paths) and not."""
    from validation.frames import market_lifetimes, observation_frame

    markets = factories.markets(40)
    snaps = factories.snapshots(markets, per_market=8)
    frame = observation_frame(snaps, "price_snapshots", market_lifetimes(markets, None))
    shuffled = frame.sample(frac=1.0, random_state=0)
    with_null = frame.copy()
    with_null.loc[3, "market_id"] = None
    mixed = frame.assign(market_id=frame["market_id"].where(frame.index % 50 != 0, 7))
    return {"grouped": frame, "shuffled": shuffled, "null id": with_null, "mixed types": mixed,
            "unhashable": frame.assign(extra=[{"k": i} for i in range(len(frame))]),
            "categorical": frame.assign(market_id=frame["market_id"].astype("category")),
            "no object column": frame.drop(columns=["market_id"]), "empty": frame.iloc[0:0]}


def test_fingerprint_speedup_gives_gx_fingerprint() -> None:
    import great_expectations.execution_engine.pandas_execution_engine as gx_pandas_engine

    from validation import speedups

    patched = gx_pandas_engine.hash_pandas_dataframe
    as_shipped = patched.__wrapped__
    for name, frame in _grouped_snapshot_frames().items():
        assert patched(frame) == as_shipped(frame), name
        assert patched.__wrapped_fast__(frame) == as_shipped(frame), name
        speedups.prefetch_fingerprint(frame)  # computed on the worker thread, taken by GX's call
        assert id(frame) in speedups._PREFETCHED
        assert patched(frame) == as_shipped(frame), name
        assert id(frame) not in speedups._PREFETCHED
    frame = _grouped_snapshot_frames()["grouped"]
    changed = frame.copy()
    changed.loc[100, "price"] = 0.123
    assert patched(changed) != patched(frame)  # still a fingerprint of every value
    speedups.prefetch_fingerprint(frame)
    speedups.discard_prefetched(frame)
    assert id(frame) not in speedups._PREFETCHED


def test_stored_result_carries_gx_fingerprint(gate_settings) -> None:
    import great_expectations.execution_engine.pandas_execution_engine as gx_pandas_engine

    from validation.frames import market_lifetimes, observation_frame
    from validation.gate import run_batch_checkpoint

    markets = factories.markets(30)
    snaps = factories.snapshots(markets)
    result = run_batch_checkpoint({"price_snapshots": snaps}, "fingerprint", settings=gate_settings,
                                  published_markets=markets)
    assert result.success, result.to_text()
    page = Path(result.docs_page).read_text()
    frame = observation_frame(snaps, "price_snapshots", market_lifetimes(None, markets))
    assert gx_pandas_engine.hash_pandas_dataframe.__wrapped__(frame) in page  # Batch Markers on the page


def _compound_unique_metric():
    from great_expectations.expectations.metrics.multicolumn_map_metrics.compound_columns_unique import (
        CompoundColumnsUnique,
    )
    from great_expectations.expectations.registry import _registered_metrics

    from validation.speedups import COMPOUND_UNIQUE_METRIC

    holder = _registered_metrics[COMPOUND_UNIQUE_METRIC]["providers"]["PandasExecutionEngine"][1]
    while "metric_fn" in holder.__code__.co_freevars:
        holder = holder.__closure__[holder.__code__.co_freevars.index("metric_fn")].cell_contents
    return CompoundColumnsUnique, holder


def test_compound_unique_speedup_gives_gx_answer() -> None:
    provider, patched = _compound_unique_metric()
    as_shipped = patched.__wrapped__
    assert patched is not as_shipped and "duplicated" in as_shipped.__code__.co_names
    base = _grouped_snapshot_frames()["grouped"][["market_id", "ts"]].reset_index(drop=True)
    ts_of = base["ts"]
    cases = {
        "grouped unique": base,
        "shuffled": base.sample(frac=1.0, random_state=0),
        "duplicate in a run": base.assign(ts=ts_of.where(base.index != 5, ts_of[4])),
        "market in two runs": pd.concat([base, base.iloc[[0]]], ignore_index=True),
        "market in two runs, no duplicate": pd.concat(
            [base, base.iloc[[0]].assign(ts=ts_of[0] - pd.Timedelta(days=9))], ignore_index=True),
        "decreasing within a run": base.assign(ts=ts_of.where(base.index != 5, ts_of[3] - pd.Timedelta(hours=1))),
        "NaT": base.assign(ts=ts_of.where(base.index % 7 != 0)),
        "null id": base.assign(market_id=base["market_id"].where(base.index % 7 != 0, None)),
        "naive ts": base.assign(ts=ts_of.dt.tz_localize(None)),
        "int second column": base.assign(ts=np.arange(len(base)) % 8),
        "int second column, duplicate": base.assign(ts=np.arange(len(base)) % 8 // 2),
        "three columns": base.assign(extra=1),
        "one row": base.iloc[:1],
        "empty": base.iloc[0:0],
    }
    verdicts = {}
    for name, frame in cases.items():
        expected = as_shipped(provider, frame)
        pd.testing.assert_series_equal(patched(provider, frame), expected, obj=name)
        verdicts[name] = bool(expected.all())
    assert not verdicts["duplicate in a run"] and not verdicts["market in two runs"]
    assert verdicts["grouped unique"] and verdicts["market in two runs, no duplicate"]


def test_grouped_batch_with_duplicate_key_is_refused(gate_settings) -> None:
    """The fast uniqueness path only ever proves uniqueness; a grouped batch's duplicate still refuses."""
    from validation.gate import run_batch_checkpoint

    markets = factories.markets(30)
    snaps = factories.snapshots(markets)
    later = snaps.iloc[[len(snaps) - 1, 0]]  # m0000's first key again, after another market's run
    duplicated = pd.concat([snaps, later], ignore_index=True)
    result = run_batch_checkpoint({"price_snapshots": duplicated}, "grouped-duplicate", settings=gate_settings,
                                  published_markets=markets)
    assert [(f["expectation"], f["column"], f["unexpected_count"]) for f in result.failures] == [
        ("expect_compound_columns_to_be_unique", "market_id,ts", 4)]


def _readers_see_only_whole_pages(backend_cls, directory: Path) -> tuple[int, int]:
    """Two threads rewrite one page with 2 MB bodies while this thread reads it; (reads, partial reads)."""
    pages = [b"A" * 2_000_000, b"B" * 2_000_000]
    backend = backend_cls(base_directory=str(directory))
    backend._set(("index.html",), pages[0])
    stop = threading.Event()

    def write(body: bytes) -> None:
        while not stop.is_set():
            backend._set(("index.html",), body)

    writers = [threading.Thread(target=write, args=(body,)) for body in pages]
    for w in writers:
        w.start()
    reads = partial = 0
    try:
        for _ in range(400):
            reads += 1
            partial += (directory / "index.html").read_bytes() not in pages
    finally:
        stop.set()
        for w in writers:
            w.join()
    return reads, partial


def test_docs_pages_are_replaced_atomically(tmp_path: Path) -> None:
    """GX writes pages in place: a reader during a checkpoint run could get half an index.html."""
    from great_expectations.data_context.store.tuple_store_backend import TupleFilesystemStoreBackend

    from validation.gx_store import AtomicTupleFilesystemStoreBackend

    reads, partial = _readers_see_only_whole_pages(AtomicTupleFilesystemStoreBackend, tmp_path / "atomic")
    assert reads == 400 and partial == 0
    assert not [p.name for p in (tmp_path / "atomic").iterdir() if p.name.endswith(".tmp")]  # none left behind
    # The same harness sees GX's own backend tear pages, so it can tell the difference.
    _, torn = _readers_see_only_whole_pages(TupleFilesystemStoreBackend, tmp_path / "in_place")
    assert torn > 0


def test_gate_writes_docs_through_the_atomic_backend(gate_settings, monkeypatch) -> None:
    from validation.gate import run_batch_checkpoint
    from validation.gx_store import AtomicTupleFilesystemStoreBackend

    written: list[str] = []
    original = AtomicTupleFilesystemStoreBackend._set

    def spy(self, key, value, **kwargs):
        path = original(self, key, value, **kwargs)
        written.append(path)
        return path

    monkeypatch.setattr(AtomicTupleFilesystemStoreBackend, "_set", spy)
    result = run_batch_checkpoint({"markets": factories.markets(10)}, "atomic-docs", settings=gate_settings)
    assert result.docs_page in written and any(p.endswith("index.html") for p in written)


def _page_of(validation_result) -> str:
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(validation_result))


@pytest.mark.slow
def test_docs_pages_escape_batch_values(gate_settings, monkeypatch) -> None:
    """GX 1.24.1 puts the values it found in a batch into the page as markup; our pages show them as text."""
    from great_expectations.render.renderer.content_block import validation_results_table_content_block as table

    from validation.frames import markets_frame
    from validation.gate import expectation_parameters, run_batch_checkpoint

    markets = factories.markets(20)
    markets.loc[0, "event_type"] = "<b>x</b>"  # an unexpected value
    markets.loc[1, "platform"] = "Bad<script>alert(1)</script>"
    markets.loc[2, "market_id"] = "<u>m1</u>"  # a duplicated key: its unexpected value is a {column: value} dict
    markets = pd.concat([markets, markets.iloc[[2]]], ignore_index=True)
    result = run_batch_checkpoint({"markets": markets}, "markup-values", settings=gate_settings)
    assert {f["column"] for f in result.failures} == {"event_type", "platform", "market_id,updated_at"}
    page = Path(result.docs_page).read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "&lt;u&gt;m1&lt;/u&gt;" in page and "<u>m1</u>" not in page
    assert "Bad&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page

    # The same result rendered by GX as shipped carries the markup (what the fix is for) ...
    run = get_project(gate_settings).checkpoints["markets"].run(
        batch_parameters={"dataframe": markets_frame(markets)},
        expectation_parameters=expectation_parameters(None, datetime.now(timezone.utc)))
    validation_result = next(iter(run.run_results.values()))
    fixed = _page_of(validation_result)
    with monkeypatch.context() as patch:
        patch.setattr(table, "get_renderer_impl", table.get_renderer_impl.__wrapped__)
        as_shipped = _page_of(validation_result)
    assert "<b>x</b>" in as_shipped and "<b>x</b>" not in fixed
    # ... and a page without markup in its values is the same with and without the fix.
    plain = markets_frame(factories.markets(20).assign(platform="Bad"))
    plain_result = next(iter(get_project(gate_settings).checkpoints["markets"].run(
        batch_parameters={"dataframe": plain},
        expectation_parameters=expectation_parameters(None, datetime.now(timezone.utc))).run_results.values()))
    fixed_plain = _page_of(plain_result)
    with monkeypatch.context() as patch:
        patch.setattr(table, "get_renderer_impl", table.get_renderer_impl.__wrapped__)
        shipped_plain = _page_of(plain_result)
    assert "Bad" in fixed_plain and _strip_uuids(fixed_plain) == _strip_uuids(shipped_plain)


def test_docs_serve_on_a_busy_port_is_one_error_line(gate_settings, monkeypatch) -> None:
    import socket

    from typer.testing import CliRunner

    from config.settings import get_settings
    from validation.cli import app

    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    monkeypatch.setenv("PM_DATA_DIR", str(gate_settings.data_dir))
    try:
        for args, env_port in ((["docs", "--serve", "--port", str(port)], None), (["docs", "--serve"], str(port))):
            if env_port:
                monkeypatch.setenv("PM_DOCS_PORT", env_port)
            get_settings.cache_clear()
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
            assert result.output.splitlines() == [
                f"error: cannot serve Data Docs on 127.0.0.1:{port}: Address already in use "
                "(choose another port with --port or the PM_DOCS_PORT setting)"]
    finally:
        busy.close()
        get_settings.cache_clear()

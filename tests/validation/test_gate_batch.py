"""The batch gate (ingestion -> validation): each bad batch kind is refused, naming its expectation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from tests.validation import factories
from validation.gate import GateResult, UnknownTable, run_batch_checkpoint
from validation.project import SEVERITY_LABELS
from validation.suites import TIMESTAMP_COLUMNS, Thresholds, all_suites

Tables = dict[str, pd.DataFrame]


def clean_tables() -> Tables:
    markets = factories.markets(120)
    return {"markets": markets, "price_snapshots": factories.snapshots(markets), "polls": factories.polls(markets)}


def failing(result: GateResult) -> set[tuple[str, str, str | None]]:
    return {(f["table"], f["expectation"], f["column"]) for f in result.failures}


def _set(table: str, column: str, row: int, value) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        frame = t[table].copy()
        frame[column] = frame[column].astype(object) if isinstance(value, str) and frame[column].dtype != object \
            else frame[column]
        frame.loc[row, column] = value
        t[table] = frame
    return mutate


def _drop_column(table: str, column: str) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        t[table] = t[table].drop(columns=[column])
    return mutate


def _astype(table: str, column: str, dtype: str) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        t[table] = t[table].assign(**{column: t[table][column].astype(dtype)})
    return mutate


def _naive_ts(t: Tables) -> None:
    t["price_snapshots"] = t["price_snapshots"].assign(ts=t["price_snapshots"]["ts"].dt.tz_localize(None))


def _duplicate_first_row(table: str) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        frame = t[table]
        dup = frame.iloc[[0]].copy()
        if "price" in dup.columns:
            dup["price"] = 0.5  # same key, different values
        t[table] = pd.concat([frame, dup], ignore_index=True)
    return mutate


def _unknown_market(t: Tables) -> None:
    frame = t["price_snapshots"].copy()
    frame.loc[3, "market_id"] = "never-seen"
    t["price_snapshots"] = frame


def _before_creation(t: Tables) -> None:
    frame = t["price_snapshots"].copy()
    created = t["markets"].set_index("market_id")["created_at"]
    frame.loc[0, "ts"] = created[frame.loc[0, "market_id"]] - pd.Timedelta(hours=1)
    t["price_snapshots"] = frame


def _after_resolution(t: Tables) -> None:
    frame = t["price_snapshots"].copy()
    resolved = t["markets"].set_index("market_id")["resolved_at"]
    row = frame.index[frame["market_id"].map(resolved).notna()][0]
    frame.loc[row, "ts"] = resolved[frame.loc[row, "market_id"]] + pd.Timedelta(days=1)
    t["price_snapshots"] = frame


def _outcome_without_resolution(t: Tables) -> None:
    frame = t["markets"].copy()
    open_row = frame.index[frame["resolved_at"].isna()][0]
    frame.loc[open_row, "outcome"] = 1
    t["markets"] = frame


def _resolution_without_outcome(t: Tables) -> None:
    frame = t["markets"].copy()
    resolved_row = frame.index[frame["resolved_at"].notna()][0]
    frame.loc[resolved_row, "outcome"] = pd.NA
    t["markets"] = frame


def _resolved_before_created(t: Tables) -> None:
    frame = t["markets"].copy()
    resolved_row = frame.index[frame["resolved_at"].notna()][0]
    frame.loc[resolved_row, "resolved_at"] = frame.loc[resolved_row, "created_at"] - pd.Timedelta(days=1)
    t["markets"] = frame
    t.pop("price_snapshots")
    t.pop("polls")


def _resolution_date_before_created(t: Tables) -> None:
    frame = t["markets"].copy()
    frame.loc[5, "resolution_date"] = frame.loc[5, "created_at"] - pd.Timedelta(days=1)
    t["markets"] = frame


def _empty_polls(t: Tables) -> None:
    t["polls"] = t["polls"].iloc[0:0]


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _open_market_row(t: Tables, table: str) -> int:
    """A row of ``table`` whose market is open (no resolution bounds its observations)."""
    open_ids = set(t["markets"].loc[t["markets"]["resolved_at"].isna(), "market_id"])
    frame = t[table]
    return int(frame.index[frame["market_id"].isin(open_ids)][0])


def _snapshot_before_2000(t: Tables) -> None:
    frame = t["price_snapshots"].copy()
    frame.loc[0, "ts"] = pd.Timestamp("1999-06-01", tz="UTC")
    t["price_snapshots"] = frame


def _poll_two_days_ahead(t: Tables) -> None:
    frame = t["polls"].copy()
    frame.loc[_open_market_row(t, "polls"), "ts"] = _now() + pd.Timedelta(days=2)
    t["polls"] = frame


def _market_created_far_ahead(t: Tables) -> None:
    frame = t["markets"].copy()
    row = frame.index[frame["resolved_at"].isna()][0]
    frame.loc[row, "created_at"] = _now() + pd.DateOffset(years=10)
    frame.loc[row, "resolution_date"] = frame.loc[row, "created_at"] + pd.Timedelta(days=60)
    t["markets"] = frame


def _market_resolved_ahead(t: Tables) -> None:
    frame = t["markets"].copy()
    row = frame.index[frame["resolved_at"].notna()][0]
    frame.loc[row, "resolved_at"] = _now() + pd.Timedelta(days=3)
    t["markets"] = frame


def _market_updated_before_2000(t: Tables) -> None:
    frame = t["markets"].copy()
    frame.loc[4, "updated_at"] = pd.Timestamp("1999-12-31 23:59", tz="UTC")
    t["markets"] = frame


def _resolution_date_before_2000(t: Tables) -> None:
    frame = t["markets"].copy()
    frame.loc[6, "resolution_date"] = pd.Timestamp("1998-01-01", tz="UTC")
    t["markets"] = frame


M, S, P = "markets", "price_snapshots", "polls"
BAD_BATCHES = {
    # name: (mutation, expected failing (table, expectation, column) — exactly these)
    "missing column": (_drop_column(S, "price"), {(S, "expect_column_to_exist", "price")}),
    "missing key column": (_drop_column(M, "updated_at"), {(M, "expect_column_to_exist", "updated_at")}),
    "wrong type float as int": (_astype(S, "volume_24h", "int64"), {(S, "expect_column_type_to_be", "volume_24h")}),
    "wrong type int as float": (_astype(P, "n_polls", "float64"), {(P, "expect_column_type_to_be", "n_polls")}),
    "wrong type naive timestamps": (_naive_ts, {(S, "expect_column_type_to_be", "ts")}),
    "price out of range": (_set(S, "price", 2, 1.5), {(S, "expect_column_values_to_be_between", "price")}),
    "negative volume": (_set(S, "volume_24h", 4, -1.0), {(S, "expect_column_values_to_be_between", "volume_24h")}),
    "infinite volume": (_set(S, "volume_24h", 4, np.inf), {(S, "expect_column_values_to_be_between", "volume_24h")}),
    "null price": (_set(S, "price", 1, np.nan), {(S, "expect_column_values_to_not_be_null", "price")}),
    "poll_trend out of range": (_set(P, "poll_trend", 0, 2.0), {(P, "expect_column_values_to_be_between", "poll_trend")}),
    "negative n_polls": (_set(P, "n_polls", 0, -3), {(P, "expect_column_values_to_be_between", "n_polls")}),
    "duplicate snapshot key": (_duplicate_first_row(S), {(S, "expect_compound_columns_to_be_unique", "market_id,ts")}),
    "duplicate poll key": (_duplicate_first_row(P), {(P, "expect_compound_columns_to_be_unique", "market_id,ts")}),
    "duplicate market version": (_duplicate_first_row(M),
                                 {(M, "expect_compound_columns_to_be_unique", "market_id,updated_at")}),
    "unknown market": (_unknown_market, {(S, "expect_column_values_to_be_in_set", "_market_known")}),
    "null market_id": (_set(S, "market_id", 5, None), {(S, "expect_column_values_to_be_in_set", "_market_known")}),
    "snapshot before creation": (_before_creation,
                                 {(S, "expect_column_pair_values_a_to_be_greater_than_b", "ts,_market_created_at")}),
    "snapshot after resolution": (_after_resolution,
                                  {(S, "expect_column_pair_values_a_to_be_greater_than_b", "_market_closes_at,ts")}),
    "outcome without resolution": (_outcome_without_resolution,
                                   {(M, "expect_column_pair_values_to_be_equal", "_outcome_is_null,_resolved_at_is_null")}),
    "resolution without outcome": (_resolution_without_outcome,
                                   {(M, "expect_column_pair_values_to_be_equal", "_outcome_is_null,_resolved_at_is_null")}),
    "outcome not 0/1": (_set(M, "outcome", 0, 2), {(M, "expect_column_values_to_be_in_set", "outcome")}),
    "unknown event_type": (_set(M, "event_type", 1, "politics"), {(M, "expect_column_values_to_be_in_set", "event_type")}),
    "uppercase event_type": (_set(M, "event_type", 1, "Election"), {(M, "expect_column_values_to_be_in_set", "event_type")}),
    "uppercase platform": (_set(M, "platform", 2, "Kalshi"), {(M, "expect_column_values_to_match_regex", "platform")}),
    "empty platform": (_set(M, "platform", 2, ""), {(M, "expect_column_values_to_match_regex", "platform")}),
    "market_id too long": (_set(M, "market_id", 3, "x" * 129),
                           {(M, "expect_column_value_lengths_to_be_between", "market_id"),
                            # its snapshots now point at a market the batch no longer has
                            (S, "expect_column_values_to_be_in_set", "_market_known")}),
    "resolved before created": (_resolved_before_created,
                                {(M, "expect_column_pair_values_a_to_be_greater_than_b", "resolved_at,created_at")}),
    "resolution_date before created": (_resolution_date_before_created,
                                       {(M, "expect_column_pair_values_a_to_be_greater_than_b",
                                         "resolution_date,created_at")}),
    "empty table": (_empty_polls, {(P, "expect_table_row_count_to_be_between", None)}),
    # DATA_CONTRACT "Timestamps": before 2000-01-01 or more than one day after validation time.
    "snapshot ts before 2000": (_snapshot_before_2000,
                                {(S, "expect_column_values_to_be_between", "ts"),
                                 # 1999 is also before its market's creation (2024)
                                 (S, "expect_column_pair_values_a_to_be_greater_than_b", "ts,_market_created_at")}),
    "poll ts two days ahead": (_poll_two_days_ahead, {(P, "expect_column_values_to_be_between", "ts")}),
    "market created_at far ahead": (_market_created_far_ahead,
                                    {(M, "expect_column_values_to_be_between", "created_at")}),
    "market resolved_at ahead": (_market_resolved_ahead, {(M, "expect_column_values_to_be_between", "resolved_at")}),
    "market updated_at before 2000": (_market_updated_before_2000,
                                      {(M, "expect_column_values_to_be_between", "updated_at")}),
    "resolution_date before 2000": (_resolution_date_before_2000,
                                    {(M, "expect_column_values_to_be_between", "resolution_date"),
                                     (M, "expect_column_pair_values_a_to_be_greater_than_b",
                                      "resolution_date,created_at")}),
}


def test_clean_batch_passes(gate_settings) -> None:
    result = run_batch_checkpoint(clean_tables(), "clean", settings=gate_settings)
    assert result.success, result.to_text()
    assert result.failures == []
    assert result.warnings == []
    assert result.docs_page is not None and Path(result.docs_page).is_file()


def test_any_lowercase_platform_passes(gate_settings) -> None:
    # The contract asks for "lowercase, non-empty", nothing more: spaces and punctuation are fine.
    tables = clean_tables()
    frame = tables["markets"].copy()
    frame.loc[frame.index[:3], "platform"] = ["poly market", "kalshi.us", "prédictit"]
    tables["markets"] = frame
    result = run_batch_checkpoint(tables, "lowercase-platforms", settings=gate_settings)
    assert result.success, result.to_text()


@pytest.mark.parametrize("kind", list(BAD_BATCHES))
def test_bad_batch_is_refused_naming_the_expectation(gate_settings, kind: str) -> None:
    mutate, expected = BAD_BATCHES[kind]
    tables = clean_tables()
    mutate(tables)
    # Run only the tables the case is about (plus markets, which observations are checked against).
    keep = {table for table, _, _ in expected} | {M}
    tables = {name: frame for name, frame in tables.items() if name in keep}
    result = run_batch_checkpoint(tables, f"bad-{kind.replace(' ', '-')}", settings=gate_settings)
    assert not result.success
    assert failing(result) == expected, result.to_text()
    for failure in result.failures:
        assert failure["rule"], failure
        assert failure["docs_page"] and Path(failure["docs_page"]).is_file()
    assert result.docs_page in {f["docs_page"] for f in result.failures}


def test_failure_names_rows_and_counts(gate_settings) -> None:
    tables = clean_tables()
    _unknown_market(tables)
    result = run_batch_checkpoint(tables, "unknown-market-details", settings=gate_settings)
    (failure,) = result.failures
    assert failure["unexpected_count"] == 1
    assert failure["rule"].startswith("market_id is not null and exists in markets")
    assert failure["examples"][0]["market_id"] == "never-seen"  # the example row carries its key
    json.dumps(result.to_dict())  # reason files are JSON


def test_observations_checked_against_published_markets(gate_settings) -> None:
    tables = clean_tables()
    markets = tables.pop("markets")
    published = markets[["market_id", "created_at", "resolved_at", "updated_at"]]
    ok = run_batch_checkpoint(tables, "published-ok", settings=gate_settings, published_markets=published)
    assert ok.success, ok.to_text()
    missing = run_batch_checkpoint(tables, "published-missing", settings=gate_settings,
                                   published_markets=published.iloc[1:])
    assert {f["column"] for f in missing.failures} == {"_market_known"}


def test_published_markets_read_from_offline_store(gate_settings, tmp_path: Path) -> None:
    tables = clean_tables()
    markets = tables.pop("markets")
    store = tmp_path / "offline"
    (store / "markets" / "month=2024-01").mkdir(parents=True)
    markets.to_parquet(store / "markets" / "month=2024-01" / "b1.parquet", index=False)
    from dataclasses import replace

    settings = replace(gate_settings, offline_store_dir=store)
    result = run_batch_checkpoint(tables, "from-store", settings=settings)
    assert result.success, result.to_text()
    empty_store = replace(gate_settings, offline_store_dir=tmp_path / "nothing")
    refused = run_batch_checkpoint(tables, "no-store", settings=empty_store)
    assert {f["column"] for f in refused.failures} == {"_market_known"}


def test_newest_market_version_sets_the_lifetime(gate_settings) -> None:
    markets = factories.markets(20, resolved_share=0.0)
    snaps = factories.snapshots(markets, per_market=3)
    # A later version resolves market m0000 one hour after its first snapshot.
    first_ts = snaps.loc[snaps["market_id"] == "m0000", "ts"].min()
    resolved = markets.iloc[[0]].copy()
    resolved["resolved_at"] = first_ts + pd.Timedelta(hours=1)
    resolved["outcome"] = pd.array([1], dtype="Int8")
    resolved["updated_at"] = first_ts + pd.Timedelta(hours=1)
    result = run_batch_checkpoint({"markets": pd.concat([markets, resolved], ignore_index=True),
                                   "price_snapshots": snaps}, "versions", settings=gate_settings)
    assert failing(result) == {(S, "expect_column_pair_values_a_to_be_greater_than_b", "_market_closes_at,ts")}
    assert result.failures[0]["unexpected_count"] == 2


def test_distribution_checks_warn_without_refusing(gate_settings) -> None:
    tables = clean_tables()
    tables["price_snapshots"] = tables["price_snapshots"].assign(price=0.01)  # mean and spread far off
    result = run_batch_checkpoint(tables, "skewed-prices", settings=gate_settings)
    assert result.success, result.to_text()
    warned = {(w["expectation"], w["column"]) for w in result.warnings}
    assert warned == {("expect_column_mean_to_be_between", "price"), ("expect_column_stdev_to_be_between", "price")}
    assert all(w["severity"] == "warning" for w in result.warnings)
    mean_warning = next(w for w in result.warnings if w["expectation"] == "expect_column_mean_to_be_between")
    assert mean_warning["observed_value"] == pytest.approx(0.01)


@pytest.mark.slow
def test_distribution_checks_need_enough_rows(gate_settings) -> None:
    """One snapshot has no spread (GX observes None): too few rows to judge a distribution, so no warning."""
    tables = clean_tables()
    one = {"markets": tables["markets"], "price_snapshots": tables["price_snapshots"].iloc[[3]]}
    result = run_batch_checkpoint(one, "one-snapshot", settings=gate_settings)
    assert result.success and result.warnings == [], result.to_text()
    assert Thresholds().distribution_min_rows > 1
    counted = run_batch_checkpoint(one, "one-snapshot-counted", settings=gate_settings,
                                   thresholds=Thresholds(distribution_min_rows=1))
    assert [(w["expectation"], w["observed_value"]) for w in counted.warnings] == [
        ("expect_column_stdev_to_be_between", None)]
    # Markets: 10 resolved of 10 is a share of 1.0, judged only from distribution_min_rows markets.
    resolved = factories.markets(10, resolved_share=1.0)
    assert run_batch_checkpoint({"markets": resolved}, "ten-resolved", settings=gate_settings).warnings == []
    judged = run_batch_checkpoint({"markets": resolved}, "ten-resolved-judged", settings=gate_settings,
                                  thresholds=Thresholds(distribution_min_rows=10))
    assert [(w["column"], w["observed_value"]) for w in judged.warnings] == [("_is_resolved", 1.0)]
    assert judged.docs_page == judged.warnings[0]["docs_page"]


def test_warning_thresholds_are_parameters(gate_settings) -> None:
    tables = clean_tables()  # half the markets are resolved
    strict = Thresholds(resolved_share_max=0.2)
    warned = run_batch_checkpoint(tables, "strict-share", settings=gate_settings, thresholds=strict)
    assert warned.success
    assert [(w["table"], w["expectation"], w["column"]) for w in warned.warnings] == [
        (M, "expect_column_mean_to_be_between", "_is_resolved")]
    relaxed = run_batch_checkpoint(tables, "relaxed-share", settings=gate_settings,
                                   thresholds=Thresholds(resolved_share_max=0.9))
    assert relaxed.warnings == []


def test_row_count_bounds_are_parameters(gate_settings) -> None:
    tables = {"markets": factories.markets(30)}
    result = run_batch_checkpoint(tables, "too-many", settings=gate_settings,
                                  thresholds=Thresholds(markets_rows_max=10))
    assert failing(result) == {(M, "expect_table_row_count_to_be_between", None)}
    assert result.failures[0]["observed_value"] == 30


def test_string_dtype_and_microsecond_timestamps_are_accepted(gate_settings) -> None:
    tables = clean_tables()
    markets = tables["markets"]
    tables["markets"] = markets.assign(market_id=markets["market_id"].astype("string"),
                                       created_at=markets["created_at"].astype("datetime64[us, UTC]"))
    result = run_batch_checkpoint(tables, "string-dtype", settings=gate_settings)
    assert result.success, result.to_text()


def test_docs_page_contains_the_failing_expectation(gate_settings) -> None:
    tables = clean_tables()
    _set(S, "price", 2, 1.5)(tables)
    result = run_batch_checkpoint(tables, "docs-check", settings=gate_settings)
    html = Path(result.docs_page).read_text()
    assert "price_snapshots.contract" in html
    assert "batch-docs-check" in html
    assert "1.5" in html  # the unexpected value is shown
    assert "values must be greater than or equal to" in html
    index = Path(gate_settings.data_dir) / "gx" / "data_docs" / "local_site" / "index.html"
    assert index.is_file() and "batch-docs-check" in index.read_text()


def test_every_timestamp_column_has_a_range(gate_settings) -> None:
    """Each batch table's timestamp columns: lower bound a constant, upper bound the run-time parameter."""
    suites = {s.table: s for s in all_suites()}
    for table in (M, S, P):
        ranges = {e.kwargs["column"]: e.kwargs for e in suites[table].expectations
                  if e.type == "ExpectColumnValuesToBeBetween" and e.kwargs["column"] in TIMESTAMP_COLUMNS[table]}
        assert set(ranges) == set(TIMESTAMP_COLUMNS[table]), table
        for column, kwargs in ranges.items():
            assert kwargs["min_value"] == pd.Timestamp("2000-01-01", tz="UTC")
            if (table, column) == (M, "resolution_date"):
                assert "max_value" not in kwargs  # scheduled: may be far ahead
            else:
                assert kwargs["max_value"] == {"$PARAMETER": "max_timestamp"}


def test_resolution_date_years_ahead_passes(gate_settings) -> None:
    tables = clean_tables()
    markets = tables["markets"].copy()
    is_open = markets["resolved_at"].isna()
    markets.loc[is_open, "resolution_date"] = _now() + pd.DateOffset(years=5)
    tables["markets"] = markets
    result = run_batch_checkpoint(tables, "resolution-ahead", settings=gate_settings)
    assert result.success, result.to_text()
    assert result.failures == []


def test_future_bound_is_one_day_after_validation_time(gate_settings) -> None:
    tables = clean_tables()
    markets = tables.pop("markets")
    snaps = tables["price_snapshots"].copy()
    row = _open_market_row({"markets": markets, "price_snapshots": snaps}, "price_snapshots")
    ts = pd.Timestamp("2024-03-01", tz="UTC")  # after every snapshot of the clean batch
    snaps.loc[row, "ts"] = ts
    published = markets[["market_id", "created_at", "resolved_at", "updated_at"]]
    within = run_batch_checkpoint({"price_snapshots": snaps}, "ts-within-a-day", settings=gate_settings,
                                  published_markets=published, now=(ts - pd.Timedelta(hours=23)).to_pydatetime())
    assert within.success, within.to_text()
    ahead = run_batch_checkpoint({"price_snapshots": snaps}, "ts-two-days-ahead", settings=gate_settings,
                                 published_markets=published, now=(ts - pd.Timedelta(days=2)).to_pydatetime())
    assert failing(ahead) == {(S, "expect_column_values_to_be_between", "ts")}
    (failure,) = ahead.failures
    assert failure["unexpected_count"] == 1
    assert failure["examples"][0]["ts"] == ts.isoformat()
    assert "2000-01-01" in failure["rule"]


def _table_row(html: str, text: str) -> str:
    """The validation page's table row (status cell to Severity cell) whose text (tags aside) holds ``text``."""
    words = (re.escape(w) for w in text.split())
    at = re.search(r"(?:\s|<[^>]*>)*".join(words), html).start()
    start = [m.start() for m in re.finditer(r'<td id="[^"]*-cell-\d+-1"', html[:at])][-1]
    end = min(html.index(label, at) + len(label) for label in SEVERITY_LABELS.values() if label in html[at:])
    return html[start:end]


def test_docs_page_shows_the_timestamp_range_failure(gate_settings) -> None:
    tables = clean_tables()
    _snapshot_before_2000(tables)
    result = run_batch_checkpoint(tables, "docs-ts-range", settings=gate_settings)
    html = Path(result.docs_page).read_text()
    row = _table_row(html, "values must be greater than or equal to 2000-01-01T00:00:00+00:00 and less than")
    assert "text-danger" in row  # marked failed
    assert "1999-06-01" in row  # the unexpected value is shown
    assert "1 unexpected values found" in row
    assert row.endswith(SEVERITY_LABELS["critical"])


def test_docs_page_marks_warning_only_checks(gate_settings) -> None:
    tables = clean_tables()
    tables["price_snapshots"] = tables["price_snapshots"].assign(price=0.01)
    result = run_batch_checkpoint(tables, "docs-warnings", settings=gate_settings)
    assert result.success and len(result.warnings) == 2
    html = Path(result.warnings[0]["docs_page"]).read_text()
    assert re.search(r"<th[^>]*>\s*Severity\s*</th>", html)
    mean_row = _table_row(html, "mean must be greater than or equal to")
    assert "text-danger" in mean_row and mean_row.endswith(SEVERITY_LABELS["warning"])
    price_range_row = _table_row(html, "values must be greater than or equal to 0.0 and less than or equal to 1.0")
    assert "text-success" in price_range_row and price_range_row.endswith(SEVERITY_LABELS["critical"])


def test_copy_on_write_run_gives_the_same_verdict(gate_settings, monkeypatch) -> None:
    """The gate runs GX under pandas Copy-on-Write for speed: same failures and examples as without it."""
    import validation.gate as gate

    tables = clean_tables()
    for mutate in (_set(S, "price", 2, 1.5), _unknown_market, _snapshot_before_2000, _set(P, "poll_trend", 0, 2.0),
                   _outcome_without_resolution):
        mutate(tables)
    before = {name: frame.copy() for name, frame in tables.items()}
    now = _now().to_pydatetime()  # one validation time: the timestamp bounds reported are the same
    with_cow = run_batch_checkpoint(tables, "cow-on", settings=gate_settings, now=now)
    assert pd.get_option("mode.copy_on_write") is False  # scoped to the run
    monkeypatch.setattr(gate, "GX_RUN_PANDAS_OPTIONS", ("mode.copy_on_write", False))
    without = run_batch_checkpoint(tables, "cow-off", settings=gate_settings, now=now)

    def verdict(result: GateResult) -> list:
        return sorted(json.dumps({k: v for k, v in f.items() if k != "docs_page"}, sort_keys=True)
                      for f in result.failures + result.warnings)

    assert len(with_cow.failures) >= 5
    assert verdict(with_cow) == verdict(without)
    for name, frame in tables.items():  # the caller's frames are untouched
        pd.testing.assert_frame_equal(frame, before[name])


def test_unknown_table_is_an_error(gate_settings) -> None:
    with pytest.raises(UnknownTable, match="snapshots"):
        run_batch_checkpoint({"snapshots": pd.DataFrame()}, "x", settings=gate_settings)


def test_numbers_in_string_columns_are_refused(gate_settings) -> None:
    """An object column may hold numbers; GX's dtype check and its stringifying checks would pass them."""
    markets = factories.markets(20)
    markets["market_id"] = markets["market_id"].astype(object)
    markets.loc[3, "market_id"] = 7
    markets.loc[5, "platform"] = 7
    markets.loc[6, "question"] = None
    result = run_batch_checkpoint({"markets": markets}, "numbers-as-strings", settings=gate_settings)
    assert not result.success
    assert {(f["column"], f["unexpected_count"]) for f in result.failures} == {
        ("_market_id_is_str", 1), ("_platform_is_str", 1), ("_question_is_str", 1)}


def test_a_newer_published_version_sets_the_lifetime_of_a_market_the_batch_also_carries(gate_settings,
                                                                                          tmp_path: Path) -> None:
    """The store holds m0000 resolved; the batch repeats its older, open version plus a snapshot after
    that resolution. Read from the store or passed in, the published version must count."""
    from dataclasses import replace

    markets = factories.markets(20, resolved_share=0.0)
    snaps = factories.snapshots(markets, per_market=3)
    last = snaps.loc[snaps["market_id"] == "m0000", "ts"].max()
    resolved = markets.iloc[[0]].copy()
    resolved["resolved_at"] = last - pd.Timedelta(hours=1)
    resolved["outcome"] = pd.array([1], dtype="Int8")
    resolved["updated_at"] = last - pd.Timedelta(hours=1)
    store = tmp_path / "offline"
    (store / "markets" / "month=2024-02").mkdir(parents=True)
    resolved.to_parquet(store / "markets" / "month=2024-02" / "b0.parquet", index=False)
    settings = replace(gate_settings, offline_store_dir=store)
    wanted = {(S, "expect_column_pair_values_a_to_be_greater_than_b", "_market_closes_at,ts")}
    from_store = run_batch_checkpoint({"markets": markets, "price_snapshots": snaps}, "older-version-store",
                                      settings=settings)
    passed_in = run_batch_checkpoint({"markets": markets, "price_snapshots": snaps}, "older-version-passed",
                                     settings=gate_settings, published_markets=resolved)
    assert failing(from_store) == failing(passed_in) == wanted


def test_odd_or_long_batch_ids_get_their_own_page(gate_settings) -> None:
    from validation.gate import MAX_RUN_NAME, run_name_for_docs

    markets = factories.markets(10)
    long_id = "b" * 250
    result = run_batch_checkpoint({"markets": markets.assign(platform="Bad")}, long_id, settings=gate_settings)
    assert not result.success and Path(result.docs_page).is_file()
    names = {run_name_for_docs(n) for n in ("batch-a/b", "batch-a b", "batch-a-b", "batch-é", "batch-ü")}
    assert len(names) == 5 and "batch-a-b" in names  # a safe name is kept as it is
    assert all(len(n) <= MAX_RUN_NAME and re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)


@pytest.mark.slow
def test_docs_page_exists_for_a_run_older_than_the_newest_twenty(gate_settings) -> None:
    """The index lists the newest 20 runs only; every run's own page must still be written."""
    import datetime as dt

    markets = factories.markets(10)
    now = dt.datetime.now(dt.timezone.utc)
    for i in range(20):
        run_batch_checkpoint({"markets": markets}, f"recent-{i}", settings=gate_settings, now=now + dt.timedelta(seconds=i))
    late = run_batch_checkpoint({"markets": markets.assign(platform="Bad")}, "late-arrival", settings=gate_settings,
                                now=now - dt.timedelta(hours=1))
    assert not late.success
    html = Path(late.docs_page).read_text()
    assert "batch-late-arrival" in html and "regular expression" in html and "Bad" in html

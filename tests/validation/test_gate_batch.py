"""The batch gate (ingestion -> validation): each bad batch kind is refused, naming its expectation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from tests.validation import factories
from validation.gate import GateResult, UnknownTable, run_batch_checkpoint
from validation.suites import Thresholds

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


def test_unknown_table_is_an_error(gate_settings) -> None:
    with pytest.raises(UnknownTable, match="snapshots"):
        run_batch_checkpoint({"snapshots": pd.DataFrame()}, "x", settings=gate_settings)

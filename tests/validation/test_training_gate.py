"""The training-set gate: training refuses to fit on a set that fails it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.validation import factories
from validation.gate import run_training_set_checkpoint
from validation.suites import Thresholds


def failing(result) -> set[tuple[str, str | None]]:
    return {(f["expectation"], f["column"]) for f in result.failures}


def test_clean_training_set_passes(gate_settings) -> None:
    result = run_training_set_checkpoint(factories.training_set(), "clean", settings=gate_settings)
    assert result.success, result.to_text()
    assert result.failures == [] and result.warnings == []


def test_poll_features_are_optional_but_checked_when_present(gate_settings) -> None:
    df = factories.training_set()
    df["poll_average"] = np.where(np.arange(len(df)) % 2 == 0, 0.5, np.nan)
    df["poll_trend"] = 0.0
    df["n_polls"] = 3
    assert run_training_set_checkpoint(df, "with-polls", settings=gate_settings).success
    df.loc[0, "poll_average"] = 1.2
    result = run_training_set_checkpoint(df, "bad-polls", settings=gate_settings)
    assert failing(result) == {("expect_column_values_to_be_between", "poll_average")}


@pytest.mark.parametrize("offset", [pd.Timedelta(0), pd.Timedelta(hours=2)], ids=["at", "after"])
def test_leaked_example_is_refused(gate_settings, offset: pd.Timedelta) -> None:
    df = factories.training_set()
    df.loc[7, "ts"] = df.loc[7, "resolved_at"] + offset  # an example at/after its market's resolution
    result = run_training_set_checkpoint(df, f"leak-{offset.seconds}", settings=gate_settings)
    assert not result.success
    assert failing(result) == {("expect_column_pair_values_a_to_be_greater_than_b", "resolved_at,ts")}
    (failure,) = result.failures
    assert failure["unexpected_count"] == 1
    assert "ts < resolved_at" in failure["rule"]
    assert failure["examples"][0]["market_id"] == df.loc[7, "market_id"]


def test_duplicate_example_is_refused(gate_settings) -> None:
    df = factories.training_set()
    df = pd.concat([df, df.iloc[[3]]], ignore_index=True)
    result = run_training_set_checkpoint(df, "dup", settings=gate_settings)
    assert failing(result) == {("expect_compound_columns_to_be_unique", "market_id,ts")}


def test_label_imbalance_is_refused(gate_settings) -> None:
    df = factories.training_set()
    df["outcome"] = pd.array(np.ones(len(df), dtype="int8"), dtype="Int8")
    result = run_training_set_checkpoint(df, "all-ones", settings=gate_settings)
    assert failing(result) == {("expect_column_mean_to_be_between", "outcome")}
    assert result.failures[0]["observed_value"] == pytest.approx(1.0)
    relaxed = Thresholds(training_label_mean_max=1.0)
    assert run_training_set_checkpoint(df, "all-ones-ok", settings=gate_settings, thresholds=relaxed).success


def test_feature_null_rate_is_bounded(gate_settings) -> None:
    df = factories.training_set()
    df.loc[df.index[: len(df) * 3 // 4], "price_volatility_30d"] = np.nan
    result = run_training_set_checkpoint(df, "nulls", settings=gate_settings)
    assert failing(result) == {("expect_column_proportion_of_non_null_values_to_be_between", "price_volatility_30d")}
    assert result.failures[0]["observed_value"] == pytest.approx(0.25)


def test_missing_label_and_feature_are_refused(gate_settings) -> None:
    df = factories.training_set().drop(columns=["outcome", "volume_mean_7d"])
    result = run_training_set_checkpoint(df, "missing", settings=gate_settings)
    assert failing(result) == {("expect_column_to_exist", "outcome"), ("expect_column_to_exist", "volume_mean_7d")}


def test_unresolved_example_is_refused(gate_settings) -> None:
    df = factories.training_set()
    df.loc[2, "resolved_at"] = pd.NaT
    df.loc[2, "outcome"] = pd.NA
    result = run_training_set_checkpoint(df, "open-market", settings=gate_settings)
    assert failing(result) == {("expect_column_values_to_not_be_null", "resolved_at"),
                               ("expect_column_values_to_not_be_null", "outcome")}


def test_too_few_examples_is_refused(gate_settings) -> None:
    df = factories.training_set(n_markets=5, per_market=2)
    result = run_training_set_checkpoint(df, "tiny", settings=gate_settings)
    assert failing(result) == {("expect_table_row_count_to_be_between", None)}


@pytest.mark.parametrize("column", ["price_change_1d", "price_change_7d", "price_volatility_7d",
                                    "price_volatility_30d", "volume_mean_7d", "volume_24h"])
def test_infinite_feature_is_refused(gate_settings, column: str) -> None:
    """Features are finite (or null): +inf passes a lower bound only, -inf an upper bound only."""
    df = factories.training_set()
    df.loc[5, column] = np.inf
    df.loc[6, column] = -np.inf
    result = run_training_set_checkpoint(df, f"inf-{column}", settings=gate_settings)
    assert failing(result) == {("expect_column_values_to_be_between", column)}
    assert result.failures[0]["unexpected_count"] == 2

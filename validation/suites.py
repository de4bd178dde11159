"""Expectation suites as code, derived from ../shared/DATA_CONTRACT.md.

This module is plain Python (no Great Expectations import): each suite is a list of
:class:`ExpectationSpec` (GX class name + kwargs + the contract rule it enforces).
``validation.project`` turns them into GX objects and writes them to the committed GX
project in ``gx/``; a test checks that the committed JSON matches this code.

One suite per table (``<table>.contract``), each expectation with one of two severities
(GX's own ``severity`` field, see :data:`GX_SEVERITY`):
- ``error`` (GX ``critical``): the contract; a failure refuses the batch (ingestion quarantines it).
- ``warning`` (GX ``warning``): distribution checks (price mean/spread, share of resolved
  markets); a failure is reported, never refuses, and only for a table of at least
  ``Thresholds.distribution_min_rows`` rows (the spread of one price is undefined, the mean of a
  few says nothing about drift).
One suite rather than a contract and a distribution suite: GX's cost per validation result
(freshness checks, result storing, a Data Docs page) is paid once per batch, not twice.
Thresholds are GX suite parameters (``{"$PARAMETER": name}``) whose values come from
:class:`Thresholds` at run time, so they can be tuned without editing the suite; so is the
newest acceptable timestamp (``max_timestamp``: validation time + one day), so the committed
suites do not depend on when they were written.

Columns starting with ``_`` are derived by ``validation.frames`` (joins with the market's
lifetime, null indicators) so cross-column and cross-table rules are vectorized
column-pair expectations.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

KNOWN_EVENT_TYPES = ("election", "sports", "economics", "crypto", "weather", "science", "other")
# Lowercase and non-empty, as the contract says (spaces and punctuation are allowed; Unicode case is
# checked by ingestion, which runs first).
PLATFORM_REGEX = r"^[^A-Z]+$"
MARKET_ID_MAX_LEN = 128
# Upper bound of a float column that is only required to be finite: +inf is the only value above it
# (GX's between-check has no "finite" option; NaN is a null, checked by the null rules).
FINITE_MAX = sys.float_info.max

TABLES = ("markets", "price_snapshots", "polls")
TRAINING_SET = "training_set"
ERROR = "error"
WARNING = "warning"
# Our severities as GX 1.x FailureSeverity values (GX's own ``severity`` field of each expectation).
GX_SEVERITY = {ERROR: "critical", WARNING: "warning"}

# DATA_CONTRACT "Timestamps": values before 2000-01-01 or more than one day in the future are refused.
# A datetime, as GX holds it once loaded (the suite JSON stores it as an ISO string).
EARLIEST_TIMESTAMP = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
FUTURE_TOLERANCE = dt.timedelta(days=1)
MAX_TIMESTAMP_PARAMETER = "max_timestamp"
# Scheduled times, legitimately far ahead for an open market: only the lower bound applies.
SCHEDULED_TIMESTAMP_COLUMNS = {"markets": ("resolution_date",)}

# Pandas dtypes of typed frames. Strings are object dtype (pandas' StringDtype is converted
# to object by validation.frames before validation, so both spellings are accepted).
TIMESTAMP_DTYPE = "datetime64[ns, UTC]"
STRING_DTYPE = "object"

MARKETS_COLUMNS = ("market_id", "question", "event_type", "platform", "created_at", "resolution_date",
                   "resolved_at", "outcome", "updated_at")
PRICE_SNAPSHOTS_COLUMNS = ("market_id", "ts", "price", "volume_24h")
POLLS_COLUMNS = ("market_id", "ts", "poll_average", "poll_trend", "n_polls")
TIMESTAMP_COLUMNS = {
    "markets": ("created_at", "resolution_date", "resolved_at", "updated_at"),
    "price_snapshots": ("ts",),
    "polls": ("ts",),
    TRAINING_SET: ("ts", "resolved_at"),
}
# markets columns whose every value must be a str (validation.frames derives `_<column>_is_str`);
# event_type's allowed-values check already refuses anything else.
STRING_VALUE_COLUMNS = ("market_id", "question", "platform")
REQUIRED_COLUMNS = {"markets": MARKETS_COLUMNS, "price_snapshots": PRICE_SNAPSHOTS_COLUMNS,
                    "polls": POLLS_COLUMNS}

# Training set: one row per price snapshot of a resolved market (DATA_CONTRACT "Learning examples").
TRAINING_KEY_COLUMNS = ("market_id", "ts", "resolved_at", "outcome")
# price_features columns (docs/architecture.md): always joined, so always required.
TRAINING_PRICE_FEATURES = ("price", "volume_24h", "price_change_1d", "price_change_7d",
                           "price_volatility_7d", "price_volatility_30d", "volume_mean_7d")
# poll features are optional (markets without polling): added as all-null when absent.
TRAINING_POLL_FEATURES = ("poll_average", "poll_trend", "n_polls")


@dataclass(frozen=True)
class Thresholds:
    """Run-time values of the suite parameters (``$PARAMETER``) used by the suites."""

    # Row-count bounds (refuse): an empty table or an absurdly large one is a broken export.
    markets_rows_min: int = 1
    markets_rows_max: int = 10_000_000
    price_snapshots_rows_min: int = 1
    price_snapshots_rows_max: int = 200_000_000
    polls_rows_min: int = 1
    polls_rows_max: int = 200_000_000
    # Distribution (warn only), reported from this many rows in the table.
    distribution_min_rows: int = 30
    price_mean_min: float = 0.05
    price_mean_max: float = 0.95
    price_stdev_min: float = 0.01
    price_stdev_max: float = 0.49
    resolved_share_min: float = 0.0
    resolved_share_max: float = 0.95
    # Training set (refuse).
    training_rows_min: int = 50
    training_label_mean_min: float = 0.05
    training_label_mean_max: float = 0.95
    # Minimum share of non-null values for price features (rolling windows are null early on).
    training_price_min_non_null: float = 1.0
    training_rolling_min_non_null: float = 0.5

    def as_parameters(self) -> dict[str, Any]:
        return asdict(self)


def max_timestamp(now: dt.datetime) -> str:
    """Value of the ``max_timestamp`` suite parameter for a validation at ``now`` (aware)."""
    return (now.astimezone(dt.timezone.utc) + FUTURE_TOLERANCE).isoformat()


@dataclass(frozen=True)
class ExpectationSpec:
    """One GX expectation: its class name in ``great_expectations.expectations``, kwargs, rule, severity."""

    type: str
    kwargs: dict[str, Any]
    rule: str
    severity: str = ERROR

    @property
    def column(self) -> str | None:
        if "column" in self.kwargs:
            return self.kwargs["column"]
        if "column_A" in self.kwargs:
            return f"{self.kwargs['column_A']},{self.kwargs['column_B']}"
        if "column_list" in self.kwargs:
            return ",".join(self.kwargs["column_list"])
        return None


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    table: str
    expectations: tuple[ExpectationSpec, ...] = field(default_factory=tuple)


def _p(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


def _e(expectation: str, rule: str, **kwargs: Any) -> ExpectationSpec:
    return ExpectationSpec(type=expectation, kwargs=kwargs, rule=rule)


def _warn(expectation: str, rule: str, **kwargs: Any) -> ExpectationSpec:
    return ExpectationSpec(type=expectation, kwargs=kwargs, rule=rule, severity=WARNING)


def _timestamp_ranges(table: str) -> list[ExpectationSpec]:
    """Every timestamp column is at or after 2000-01-01 and, unless scheduled, at most a day ahead."""
    specs = []
    for column in TIMESTAMP_COLUMNS[table]:
        if column in SCHEDULED_TIMESTAMP_COLUMNS.get(table, ()):
            specs.append(_e("ExpectColumnValuesToBeBetween", f"`{column}` is not before 2000-01-01 (a scheduled "
                            "date: may be far in the future)", column=column, min_value=EARLIEST_TIMESTAMP))
        else:
            specs.append(_e("ExpectColumnValuesToBeBetween", f"`{column}` is not before 2000-01-01 nor more than "
                            "one day after validation time", column=column, min_value=EARLIEST_TIMESTAMP,
                            max_value=_p(MAX_TIMESTAMP_PARAMETER)))
    return specs


def _exist_and_type(columns: dict[str, str]) -> list[ExpectationSpec]:
    specs: list[ExpectationSpec] = []
    for column, dtype in columns.items():
        specs.append(_e("ExpectColumnToExist", f"required column `{column}` is present", column=column))
        specs.append(_e("ExpectColumnTypeToBe", f"`{column}` has type {dtype}", column=column, type_=dtype))
    return specs


def _not_null(*columns: str) -> list[ExpectationSpec]:
    return [_e("ExpectColumnValuesToNotBeNull", f"`{c}` is never null", column=c) for c in columns]


def _observation_rules(table: str) -> list[ExpectationSpec]:
    """Rules shared by price_snapshots and polls: key, market exists, within the market's lifetime."""
    return [
        # ignore_row_if="never": nulls are refused by their own expectation, and GX's default
        # ("all_values_are_missing") copies the whole frame through dropna.
        _e("ExpectCompoundColumnsToBeUnique", "(market_id, ts) is unique", column_list=["market_id", "ts"],
           ignore_row_if="never"),
        _e("ExpectColumnValuesToBeInSet", "market_id is not null and exists in markets (this batch or an earlier one)",
           column="_market_known", value_set=[True]),
        # Lifetime columns are never null (validation.frames): no ignore_row_if, so no dropna copy.
        _e("ExpectColumnPairValuesAToBeGreaterThanB", "ts is at or after the market's created_at",
           column_A="ts", column_B="_market_created_at", or_equal=True, ignore_row_if="neither"),
        _e("ExpectColumnPairValuesAToBeGreaterThanB", "ts is not after the market's resolved_at",
           column_A="_market_closes_at", column_B="ts", or_equal=True, ignore_row_if="neither"),
        _e("ExpectTableRowCountToBeBetween", f"{table} row count within bounds",
           min_value=_p(f"{table}_rows_min"), max_value=_p(f"{table}_rows_max")),
    ]


def markets_contract() -> SuiteSpec:
    types = {"market_id": STRING_DTYPE, "question": STRING_DTYPE, "event_type": STRING_DTYPE,
             "platform": STRING_DTYPE, "created_at": TIMESTAMP_DTYPE, "resolution_date": TIMESTAMP_DTYPE,
             "resolved_at": TIMESTAMP_DTYPE, "outcome": "Int8", "updated_at": TIMESTAMP_DTYPE}
    specs = _exist_and_type(types)
    specs += _not_null("market_id", "event_type", "platform", "created_at", "resolution_date", "updated_at")
    specs += [_e("ExpectColumnValuesToBeInSet", f"every `{c}` value is a string (not a number or null)",
                 column=f"_{c}_is_str", value_set=[True]) for c in STRING_VALUE_COLUMNS]
    specs += _timestamp_ranges("markets")
    specs += [
        _e("ExpectColumnValueLengthsToBeBetween", f"market_id is non-empty, at most {MARKET_ID_MAX_LEN} characters",
           column="market_id", min_value=1, max_value=MARKET_ID_MAX_LEN),
        _e("ExpectColumnValuesToBeInSet", "event_type is lowercase and known (unknown values are mapped to "
           "`other` by ingestion before the gate)", column="event_type", value_set=list(KNOWN_EVENT_TYPES)),
        _e("ExpectColumnValuesToMatchRegex", "platform is lowercase and non-empty", column="platform",
           regex=PLATFORM_REGEX),
        _e("ExpectColumnValuesToBeInSet", "outcome is 0 or 1 (or null)", column="outcome", value_set=[0, 1]),
        _e("ExpectColumnPairValuesToBeEqual", "outcome is null exactly when resolved_at is null",
           column_A="_outcome_is_null", column_B="_resolved_at_is_null"),
        _e("ExpectColumnPairValuesAToBeGreaterThanB", "resolution_date is at or after created_at",
           column_A="resolution_date", column_B="created_at", or_equal=True,
           ignore_row_if="either_value_is_missing"),
        _e("ExpectColumnPairValuesAToBeGreaterThanB", "resolved_at is at or after created_at",
           column_A="resolved_at", column_B="created_at", or_equal=True, ignore_row_if="either_value_is_missing"),
        _e("ExpectCompoundColumnsToBeUnique", "(market_id, updated_at) is unique",
           column_list=["market_id", "updated_at"], ignore_row_if="never"),
        _e("ExpectTableRowCountToBeBetween", "markets row count within bounds",
           min_value=_p("markets_rows_min"), max_value=_p("markets_rows_max")),
        # Distribution: warns only.
        _warn("ExpectColumnMeanToBeBetween", "share of resolved markets within expected bounds",
              column="_is_resolved", min_value=_p("resolved_share_min"), max_value=_p("resolved_share_max")),
    ]
    return SuiteSpec("markets.contract", "markets", tuple(specs))


def price_snapshots_contract() -> SuiteSpec:
    types = {"market_id": STRING_DTYPE, "ts": TIMESTAMP_DTYPE, "price": "float64", "volume_24h": "float64"}
    specs = _exist_and_type(types)
    # market_id nulls are caught by the market-exists rule (a null id is no known market).
    specs += _not_null("ts", "price", "volume_24h")
    specs += _timestamp_ranges("price_snapshots")
    specs += [
        _e("ExpectColumnValuesToBeBetween", "price is in [0, 1]", column="price", min_value=0.0, max_value=1.0),
        _e("ExpectColumnValuesToBeBetween", "volume_24h is a finite number, at least 0", column="volume_24h",
           min_value=0.0, max_value=FINITE_MAX),
    ]
    specs += _observation_rules("price_snapshots")
    specs += [  # distribution: warns only
        _warn("ExpectColumnMeanToBeBetween", "mean price within expected bounds", column="price",
              min_value=_p("price_mean_min"), max_value=_p("price_mean_max")),
        _warn("ExpectColumnStdevToBeBetween", "price spread (standard deviation) within expected bounds",
              column="price", min_value=_p("price_stdev_min"), max_value=_p("price_stdev_max")),
    ]
    return SuiteSpec("price_snapshots.contract", "price_snapshots", tuple(specs))


def polls_contract() -> SuiteSpec:
    types = {"market_id": STRING_DTYPE, "ts": TIMESTAMP_DTYPE, "poll_average": "float64",
             "poll_trend": "float64", "n_polls": "int64"}
    specs = _exist_and_type(types)
    specs += _not_null("ts", "poll_average", "poll_trend", "n_polls")
    specs += _timestamp_ranges("polls")
    specs += [
        _e("ExpectColumnValuesToBeBetween", "poll_average is in [0, 1]", column="poll_average",
           min_value=0.0, max_value=1.0),
        _e("ExpectColumnValuesToBeBetween", "poll_trend is in [-1, 1]", column="poll_trend",
           min_value=-1.0, max_value=1.0),
        _e("ExpectColumnValuesToBeBetween", "n_polls is at least 0", column="n_polls", min_value=0),
    ]
    specs += _observation_rules("polls")
    return SuiteSpec("polls.contract", "polls", tuple(specs))


def training_set_contract() -> SuiteSpec:
    types = {"market_id": STRING_DTYPE, "ts": TIMESTAMP_DTYPE, "resolved_at": TIMESTAMP_DTYPE, "outcome": "Int8"}
    specs = _exist_and_type(types)
    specs += [_e("ExpectColumnToExist", f"feature `{c}` is present", column=c) for c in TRAINING_PRICE_FEATURES]
    specs += _not_null("market_id", "ts", "resolved_at", "outcome")
    specs += [
        _e("ExpectColumnValuesToBeInSet", "label (outcome) is 0 or 1", column="outcome", value_set=[0, 1]),
        _e("ExpectColumnMeanToBeBetween", "label balance within bounds", column="outcome",
           min_value=_p("training_label_mean_min"), max_value=_p("training_label_mean_max")),
        _e("ExpectColumnPairValuesAToBeGreaterThanB",
           "no example at or after its market's resolution (ts < resolved_at)",
           column_A="resolved_at", column_B="ts", or_equal=False, ignore_row_if="either_value_is_missing"),
        _e("ExpectCompoundColumnsToBeUnique", "no duplicate (market_id, ts) example",
           column_list=["market_id", "ts"], ignore_row_if="never"),
        _e("ExpectTableRowCountToBeBetween", "enough examples to train on",
           min_value=_p("training_rows_min")),
    ]
    for column in TRAINING_PRICE_FEATURES:
        param = "training_price_min_non_null" if column in ("price", "volume_24h") else "training_rolling_min_non_null"
        specs.append(_e("ExpectColumnProportionOfNonNullValuesToBeBetween", f"null rate of feature `{column}` "
                        "within bounds", column=column, min_value=_p(param), max_value=1.0))
    specs += [
        _e("ExpectColumnValuesToBeBetween", "feature price is in [0, 1]", column="price", min_value=0.0, max_value=1.0),
        _e("ExpectColumnValuesToBeBetween", "feature volume_24h is a finite number, at least 0", column="volume_24h",
           min_value=0.0, max_value=FINITE_MAX),
        _e("ExpectColumnValuesToBeBetween", "feature volume_mean_7d is a finite number, at least 0 (or null)",
           column="volume_mean_7d", min_value=0.0, max_value=FINITE_MAX),
        _e("ExpectColumnValuesToBeBetween", "feature price_volatility_7d is a finite number, at least 0 (or null)",
           column="price_volatility_7d", min_value=0.0, max_value=FINITE_MAX),
        _e("ExpectColumnValuesToBeBetween", "feature price_volatility_30d is a finite number, at least 0 (or null)",
           column="price_volatility_30d", min_value=0.0, max_value=FINITE_MAX),
        _e("ExpectColumnValuesToBeBetween", "feature price_change_1d is a finite number (or null)",
           column="price_change_1d", min_value=-FINITE_MAX, max_value=FINITE_MAX),
        _e("ExpectColumnValuesToBeBetween", "feature price_change_7d is a finite number (or null)",
           column="price_change_7d", min_value=-FINITE_MAX, max_value=FINITE_MAX),
        _e("ExpectColumnValuesToBeBetween", "feature poll_average is in [0, 1] (or null)", column="poll_average",
           min_value=0.0, max_value=1.0),
        _e("ExpectColumnValuesToBeBetween", "feature poll_trend is in [-1, 1] (or null)", column="poll_trend",
           min_value=-1.0, max_value=1.0),
        _e("ExpectColumnValuesToBeBetween", "feature n_polls is at least 0 (or null)", column="n_polls",
           min_value=0),
    ]
    return SuiteSpec("training_set.contract", TRAINING_SET, tuple(specs))


def all_suites() -> tuple[SuiteSpec, ...]:
    return (markets_contract(), price_snapshots_contract(), polls_contract(), training_set_contract())


def suites_for(table: str) -> tuple[SuiteSpec, ...]:
    return tuple(s for s in all_suites() if s.table == table)


def checkpoint_name(table: str) -> str:
    """One checkpoint per table: a GX checkpoint run takes one set of batch parameters (one frame)."""
    return f"{table}_gate"

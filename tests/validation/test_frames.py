"""Validation frames (pure pandas, no GX): the derived columns the suites rely on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.validation import factories
from validation.frames import market_lifetimes, markets_frame, normalize, observation_frame


def test_observation_frame_lifetime_columns() -> None:
    markets = factories.markets(4, resolved_share=0.5)  # m0000, m0001 resolved; m0002, m0003 open
    snaps = factories.snapshots(markets, per_market=1)
    snaps.loc[3, "market_id"] = "nope"
    frame = observation_frame(snaps, "price_snapshots", market_lifetimes(markets, None))
    assert frame["_market_known"].tolist() == [True, True, True, False]
    assert frame.loc[0, "_market_created_at"] == markets.loc[0, "created_at"]
    assert frame.loc[0, "_market_closes_at"] == markets.loc[0, "resolved_at"]
    assert frame.loc[2, "_market_closes_at"] == pd.Timestamp.max.tz_localize("UTC").as_unit("ns")  # open market
    assert frame.loc[3, "_market_created_at"] == frame.loc[3, "ts"] == frame.loc[3, "_market_closes_at"]
    assert frame[["_market_created_at", "_market_closes_at"]].notna().all().all()
    assert list(snaps.columns) == ["market_id", "ts", "price", "volume_24h"]  # input untouched


def test_lifetime_from_newest_version_and_published_markets() -> None:
    markets = factories.markets(3, resolved_share=0.0)
    resolved_version = markets.iloc[[1]].assign(
        resolved_at=markets.loc[1, "created_at"] + pd.Timedelta(days=2),
        updated_at=markets.loc[1, "created_at"] + pd.Timedelta(days=2))
    published = markets.iloc[[2]]
    lifetimes = market_lifetimes(pd.concat([markets.iloc[:2], resolved_version]), published)
    assert sorted(lifetimes.index) == ["m0000", "m0001", "m0002"]
    assert lifetimes.loc["m0001", "resolved_at"] == resolved_version["resolved_at"].iloc[0]
    assert pd.isna(lifetimes.loc["m0000", "resolved_at"])


def test_markets_frame_indicators() -> None:
    frame = markets_frame(factories.markets(4, resolved_share=0.5))
    assert frame["_resolved_at_is_null"].tolist() == [False, False, True, True]
    assert frame["_outcome_is_null"].tolist() == [False, False, True, True]
    assert frame["_is_resolved"].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_normalize_changes_representation_only() -> None:
    frame = pd.DataFrame({"market_id": pd.array(["a"], dtype="string"),
                          "ts": pd.Series(pd.to_datetime(["2024-01-01T00:00:00Z"])).astype("datetime64[us, UTC]"),
                          "naive": pd.to_datetime(["2024-01-01"])})
    out = normalize(frame, "price_snapshots")
    assert out["market_id"].dtype == object and out["ts"].dtype == "datetime64[ns, UTC]"
    assert out["naive"].dtype == "datetime64[ns]"  # not a timestamp column of this table: untouched
    assert frame["market_id"].dtype == "string"


def test_lookup_positions_is_get_indexer_for_any_order() -> None:
    from validation.frames import lookup_positions

    index = pd.Index(["a", "b", "c"], dtype=object)
    grouped = np.array(["a"] * 4 + ["x"] * 3 + ["c"] * 5 + ["a"] * 2 + ["b"] * 3, dtype=object)
    cases = {
        "grouped": grouped,
        "shuffled": np.random.default_rng(0).permutation(grouped),
        "with null": np.array(["a", "a", None, None, "b", "b", "b"], dtype=object),
        "non-str objects": np.array(["a", "a", 1, 1, 1, "c", "c"], dtype=object),
        "empty": np.array([], dtype=object),
    }
    for name, values in cases.items():
        assert lookup_positions(index, values).tolist() == index.get_indexer(values).tolist(), name


def test_observation_frame_same_for_grouped_and_shuffled_rows() -> None:
    markets = factories.markets(30, resolved_share=0.5)
    snaps = factories.snapshots(markets, per_market=6)
    snaps.loc[7, "market_id"] = "unknown"
    lifetimes = market_lifetimes(markets, None)
    order = np.random.default_rng(1).permutation(len(snaps))
    grouped = observation_frame(snaps, "price_snapshots", lifetimes)
    shuffled = observation_frame(snaps.iloc[order], "price_snapshots", lifetimes)
    pd.testing.assert_frame_equal(grouped.iloc[order], shuffled)
    assert grouped["_market_created_at"].dtype == "datetime64[ns, UTC]"
    assert not grouped.loc[7, "_market_known"] and grouped["_market_known"].sum() == len(snaps) - 1

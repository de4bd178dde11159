"""Validation frames (pure pandas, no GX): the derived columns the suites rely on."""

from __future__ import annotations

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

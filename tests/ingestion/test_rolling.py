"""Rolling price features: exact definitions, point-in-time correctness, multi-batch == one batch."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings as settings_, strategies as st

from config.settings import Settings
from ingestion.ingest import ingest_batch as _ingest_batch
from ingestion.rolling import PRICE_FEATURES, compute_price_features
from ingestion.store import latest_rows, read_published
from tests.ingestion.factories import T0, markets_frame, write_batch

NOW = pd.Timestamp("2024-12-01", tz="UTC")
DAY = pd.Timedelta(days=1)
# Contract + rolling logic only; the Great Expectations gate is covered in test_gate_wiring.py.
ingest_batch = partial(_ingest_batch, run_gate=False)


def _irregular_snapshots(n_markets: int = 4, n: int = 60, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_markets):
        gaps = rng.exponential(scale=14 * 3600, size=n).astype("int64") + 60  # irregular, ~14 h apart
        ts = T0 + pd.Timedelta(hours=i) + pd.to_timedelta(np.cumsum(gaps), unit="s")
        frames.append(pd.DataFrame({"market_id": f"m{i:03d}", "ts": ts.astype("datetime64[us, UTC]"),
                                    "price": rng.uniform(0.01, 0.99, n),
                                    "volume_24h": rng.uniform(0, 1e4, n)}))
    return pd.concat(frames, ignore_index=True)


def _reference(df: pd.DataFrame) -> pd.DataFrame:
    """The definitions, written as a plain loop (slow, obviously right)."""
    out = []
    for _, g in df.sort_values(["market_id", "ts"]).groupby("market_id", sort=True):
        for _, row in g.iterrows():
            past = g[g["ts"] <= row["ts"]]
            rec = {"market_id": row["market_id"], "ts": row["ts"]}
            for name, lag in (("price_change_1d", DAY), ("price_change_7d", 7 * DAY)):
                before = past[past["ts"] <= row["ts"] - lag]
                rec[name] = row["price"] - before["price"].iloc[-1] if len(before) else np.nan
            for name, days in (("price_volatility_7d", 7), ("price_volatility_30d", 30)):
                window = past[past["ts"] > row["ts"] - days * DAY]["price"]
                rec[name] = float(np.std(window, ddof=1)) if len(window) >= 2 else np.nan
            rec["volume_mean_7d"] = float(past[past["ts"] > row["ts"] - 7 * DAY]["volume_24h"].mean())
            out.append(rec)
    return pd.DataFrame(out)


def test_features_match_the_definitions() -> None:
    snaps = _irregular_snapshots()
    got = compute_price_features(snaps.sample(frac=1, random_state=1))
    ref = _reference(snaps)
    assert list(got["market_id"]) == list(ref["market_id"]) and list(got["ts"]) == list(ref["ts"])
    for name in PRICE_FEATURES:
        np.testing.assert_allclose(got[name].to_numpy(), ref[name].to_numpy(), rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=name)
    assert got["price_change_1d"].notna().sum() > 100 and got["price_volatility_7d"].notna().sum() > 100


def test_window_edges() -> None:
    """Lag lookup includes exactly ts - 1d; the volatility window (ts - 7d, ts] excludes exactly ts - 7d."""
    ts = pd.Series([T0, T0 + DAY, T0 + 7 * DAY], dtype="datetime64[us, UTC]")
    df = pd.DataFrame({"market_id": "a", "ts": ts, "price": [0.2, 0.5, 0.9],
                       "volume_24h": [10.0, 20.0, 60.0]})
    got = compute_price_features(df).set_index("ts")
    assert np.isnan(got.loc[T0, "price_change_1d"]) and np.isnan(got.loc[T0, "price_volatility_7d"])
    assert got.loc[T0 + DAY, "price_change_1d"] == pytest.approx(0.3)
    assert np.isnan(got.loc[T0 + DAY, "price_change_7d"])
    assert got.loc[T0 + 7 * DAY, "price_change_7d"] == pytest.approx(0.7)  # the row at exactly ts - 7d
    assert got.loc[T0 + 7 * DAY, "price_change_1d"] == pytest.approx(0.4)  # last at or before ts - 1d
    assert got.loc[T0 + 7 * DAY, "price_volatility_7d"] == pytest.approx(np.std([0.5, 0.9], ddof=1))
    assert got.loc[T0 + 7 * DAY, "price_volatility_30d"] == pytest.approx(np.std([0.2, 0.5, 0.9], ddof=1))
    assert got.loc[T0 + 7 * DAY, "volume_mean_7d"] == pytest.approx(40.0)


def test_point_in_time_later_rows_do_not_change_earlier_values() -> None:
    snaps = _irregular_snapshots()
    cutoff = snaps["ts"].quantile(0.5)
    base = compute_price_features(snaps)
    altered = snaps.copy()
    later = altered["ts"] > cutoff
    altered.loc[later, "price"] = 1 - altered.loc[later, "price"]
    altered.loc[later, "volume_24h"] *= 7
    extra = altered[later].copy()
    extra["ts"] = (extra["ts"] + pd.Timedelta(minutes=1)).astype("datetime64[us, UTC]")
    changed = compute_price_features(pd.concat([altered, extra], ignore_index=True))
    before = base[base["ts"] <= cutoff].reset_index(drop=True)
    before_changed = changed[changed["ts"] <= cutoff].reset_index(drop=True)
    pd.testing.assert_frame_equal(before, before_changed)
    # ... while values after the cutoff do change (so this test can fail).
    after = base[base["ts"] > cutoff].merge(changed, on=["market_id", "ts"], suffixes=("", "_alt"))
    assert len(after) > 50
    assert (after["price_volatility_7d"] - after["price_volatility_7d_alt"]).abs().max() > 0.01


def _other_store(settings: Settings, tmp_path: Path, name: str) -> Settings:
    return dataclasses.replace(settings, offline_store_dir=tmp_path / name / "offline",
                               quarantine_dir=tmp_path / name / "quarantine")


def _served(settings: Settings) -> pd.DataFrame:
    """What Feast would serve per (market_id, ts): the newest ingested_at."""
    rows = latest_rows(read_published(settings.offline_store_dir, "price_features"), ["market_id", "ts"])
    rows = rows.drop(columns=["ingested_at", "batch_id"])
    return rows.sort_values(["market_id", "ts"]).reset_index(drop=True)


def _markets_and_snapshots() -> tuple[pd.DataFrame, pd.DataFrame]:
    snaps = _irregular_snapshots(n_markets=3, n=50)
    markets = markets_frame(3, resolved=True, days=60)
    markets["created_at"] = markets["created_at"].astype("datetime64[us, UTC]")
    return markets, snaps[snaps["ts"] < markets["resolved_at"].min()]


def test_multi_batch_delivery_equals_one_batch(settings: Settings, tmp_path: Path) -> None:
    markets, snaps = _markets_and_snapshots()
    one = _other_store(settings, tmp_path, "one")
    assert ingest_batch(write_batch(tmp_path / "all", {"markets": markets, "price_snapshots": snaps}),
                        settings=one, now=NOW).accepted
    edges = snaps["ts"].quantile([0.3, 0.7]).tolist()
    parts = [snaps[snaps["ts"] <= edges[0]], snaps[(snaps["ts"] > edges[0]) & (snaps["ts"] <= edges[1])],
             snaps[snaps["ts"] > edges[1]]]
    for i, part in enumerate(parts):
        tables = {"price_snapshots": part} | ({"markets": markets} if i == 0 else {})
        result = ingest_batch(write_batch(tmp_path / f"part{i}", tables, "csv"), settings=settings,
                              now=NOW + i * pd.Timedelta(hours=1))
        assert result.accepted and result.feature_corrections == 0, result.to_text()
    pd.testing.assert_frame_equal(_served(settings), _served(one))
    assert len(read_published(settings.offline_store_dir, "price_features")) == len(snaps)


def test_late_earlier_observation_appends_corrections(settings: Settings, tmp_path: Path) -> None:
    markets, snaps = _markets_and_snapshots()
    one = _other_store(settings, tmp_path, "one")
    assert ingest_batch(write_batch(tmp_path / "all", {"markets": markets, "price_snapshots": snaps}),
                        settings=one, now=NOW).accepted
    late = snaps[snaps["market_id"] == "m001"].iloc[[5, 6]]
    on_time = {"markets": markets, "price_snapshots": snaps.drop(late.index)}
    first = ingest_batch(write_batch(tmp_path / "b1", on_time), settings=settings, now=NOW)
    files_before = {p: p.stat().st_mtime_ns for p in settings.offline_store_dir.rglob("*.parquet")}
    second = ingest_batch(write_batch(tmp_path / "b2", {"price_snapshots": late}), settings=settings,
                          now=NOW + DAY)
    assert second.accepted and second.feature_corrections > 0
    assert second.rows_published["price_features"] == 2 + second.feature_corrections
    # Old files untouched; corrections are rows of later snapshots of the same market only, newer ingested_at.
    assert all(p.stat().st_mtime_ns == m for p, m in files_before.items())
    stored = read_published(settings.offline_store_dir, "price_features")
    new_rows = stored[stored["batch_id"] == second.batch_id]
    assert set(new_rows["market_id"]) == {"m001"} and (new_rows["ts"] >= late["ts"].min()).all()
    assert (new_rows["ingested_at"] == NOW + DAY).all() and first.batch_id != second.batch_id
    pd.testing.assert_frame_equal(_served(settings), _served(one))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_simulated_batches_ingest_like_one_batch(settings: Settings, tmp_path: Path, fmt: str) -> None:
    """Realistic happy path: simulator output in 4 time-ordered batches == the same world in one batch."""
    from datetime import date

    from ingestion.simulate import SimulationConfig, generate

    cfg = dict(n_markets=120, start=date(2024, 1, 1), end=date(2024, 5, 1), seed=3, fmt=fmt)
    generate(SimulationConfig(**cfg, n_batches=4), tmp_path / "four", progress=False)
    generate(SimulationConfig(**cfg, n_batches=1), tmp_path / "single", progress=False)
    for batch in sorted((tmp_path / "four").glob("batch-*")):
        result = ingest_batch(batch, settings=settings, now=NOW)
        assert result.accepted, result.to_text()
    one = _other_store(settings, tmp_path, "one")
    [single] = sorted((tmp_path / "single").glob("batch-*"))
    assert ingest_batch(single, settings=one, now=NOW).accepted
    pd.testing.assert_frame_equal(_served(settings), _served(one))
    for table in ("markets", "poll_features"):
        a = read_published(settings.offline_store_dir, table).drop(columns=["ingested_at", "batch_id"])
        b = read_published(one.offline_store_dir, table).drop(columns=["ingested_at", "batch_id"])
        key = ["market_id", "updated_at" if table == "markets" else "ts"]
        pd.testing.assert_frame_equal(a.sort_values(key).reset_index(drop=True),
                                      b.sort_values(key).reset_index(drop=True))


def test_a_market_alone_gives_the_same_bits_as_beside_others() -> None:
    """What multi-batch equality rests on: a market's values depend on its own rows only."""
    snaps = _irregular_snapshots(n_markets=5)
    together = compute_price_features(snaps)
    for market in ["m000", "m002", "m004"]:
        alone = compute_price_features(snaps[snaps["market_id"] == market])
        pd.testing.assert_frame_equal(alone, together[together["market_id"] == market].reset_index(drop=True),
                                      check_exact=True)


@settings_(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 80), n_markets=st.integers(1, 4),
       cut=st.floats(0.0, 1.0))
def test_prefix_of_the_history_gives_the_same_bits(seed: int, n: int, n_markets: int, cut: float) -> None:
    """Property: features of rows up to any cutoff, computed from only those rows, are bit-identical."""
    snaps = _irregular_snapshots(n_markets=n_markets, n=n, seed=seed)
    cutoff = snaps["ts"].min() + (snaps["ts"].max() - snaps["ts"].min()) * cut
    full = compute_price_features(snaps)
    prefix = compute_price_features(snaps[snaps["ts"] <= cutoff])
    pd.testing.assert_frame_equal(prefix, full[full["ts"] <= cutoff].reset_index(drop=True), check_exact=True)

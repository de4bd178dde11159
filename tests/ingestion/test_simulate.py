"""The simulator writes the raw data contract exactly, deterministically, and a beatable market."""

from __future__ import annotations

import hashlib
import tempfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from ingestion import simulate
from ingestion.sim_world import EVENT_TYPES, PLATFORMS, POLL_WINDOW
from ingestion.simulate import SimulationConfig, generate

START, END, DRIFT = date(2024, 1, 1), date(2024, 7, 1), date(2024, 4, 1)
START_TS, END_TS = pd.Timestamp(START, tz="UTC"), pd.Timestamp(END, tz="UTC")
KEYS = {"markets": ["market_id", "updated_at"], "price_snapshots": ["market_id", "ts"],
        "polls": ["market_id", "ts"]}
TS_COLUMNS = {"markets": ["created_at", "resolution_date", "resolved_at", "updated_at"],
              "price_snapshots": ["ts"], "polls": ["ts"]}


def _cfg(**kw) -> SimulationConfig:
    base = dict(n_markets=300, start=START, end=END, seed=7, n_batches=4, fmt="parquet", drift_start=None)
    base.update(kw)
    return SimulationConfig(**base)


def _load(out: Path, fmt: str = "parquet") -> dict[str, pd.DataFrame]:
    """All batches of one data set, each row tagged with its 0-based batch number."""
    frames: dict[str, list[pd.DataFrame]] = {t: [] for t in KEYS}
    batch_dirs = sorted(out.glob("batch-*"))
    for b, d in enumerate(batch_dirs):
        for table in KEYS:
            path = d / f"{table}.{fmt}"
            if not path.exists():
                continue
            if fmt == "parquet":
                df = pd.read_parquet(path)
            else:
                df = pd.read_csv(path, dtype={"market_id": str, "question": str}, keep_default_na=False,
                                 na_values={"resolved_at": [""], "outcome": [""]})
                for c in TS_COLUMNS[table]:
                    df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
                if table == "markets":
                    df["question"] = df["question"].astype(str)
            df["batch"] = int(d.name.split("-")[1]) - 1
            frames[table].append(df)
    return {t: pd.concat(f, ignore_index=True) if f else pd.DataFrame() for t, f in frames.items()}


def _hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    out = tmp_path_factory.mktemp("sim") / "out"
    generate(_cfg(), out, progress=False)
    return out, _load(out)


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    out = tmp_path_factory.mktemp("sim") / "drift"
    generate(_cfg(drift_start=DRIFT), out, progress=False)
    return out, _load(out)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    cfg = _cfg(n_markets=150, n_batches=3)
    generate(cfg, tmp_path / "a", progress=False)
    generate(cfg, tmp_path / "b", progress=False)
    generate(_cfg(n_markets=150, n_batches=3, seed=8), tmp_path / "c", progress=False)
    a, b, c = _hashes(tmp_path / "a"), _hashes(tmp_path / "b"), _hashes(tmp_path / "c")
    assert "truth.parquet" in a and "batch-001/markets.parquet" in a
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)


def test_parquet_schema_is_the_contract(data) -> None:
    out, _ = data
    ts = pa.timestamp("us", tz="UTC")
    schema = pq.read_schema(out / "batch-001" / "markets.parquet")
    assert schema.names == ["market_id", "question", "event_type", "platform", "created_at",
                            "resolution_date", "resolved_at", "outcome", "updated_at"]
    assert all(schema.field(c).type == ts for c in TS_COLUMNS["markets"])
    assert pa.types.is_integer(schema.field("outcome").type)
    snap = pq.read_schema(out / "batch-001" / "price_snapshots.parquet")
    assert snap.names == ["market_id", "ts", "price", "volume_24h"] and snap.field("ts").type == ts
    polls = pq.read_schema(out / "batch-001" / "polls.parquet")
    assert polls.names == ["market_id", "ts", "poll_average", "poll_trend", "n_polls"]
    assert pa.types.is_integer(polls.field("n_polls").type)
    assert pq.read_schema(out / "truth.parquet").names == ["market_id", "ts", "true_probability"]


def test_markets_table_follows_contract(data) -> None:
    _, t = data
    m = t["markets"]
    assert m["market_id"].str.len().between(1, 128).all()
    assert set(m["event_type"]) == set(EVENT_TYPES)
    assert set(m["platform"]) == set(PLATFORMS)
    assert not m.duplicated(["market_id", "updated_at"]).any()
    assert (m["resolution_date"] >= m["created_at"]).all()
    resolved = m["resolved_at"].notna()
    assert (resolved == m["outcome"].notna()).all()
    assert set(m.loc[resolved, "outcome"].astype(int)) == {0, 1}
    assert (m.loc[resolved, "resolved_at"] >= m.loc[resolved, "created_at"]).all()
    assert (m.loc[resolved, "updated_at"] >= m.loc[resolved, "resolved_at"]).all()
    assert (m["updated_at"] >= m["created_at"]).all()
    for c in ("created_at", "resolved_at", "updated_at"):  # what happened lies inside the period
        assert (m[c].dropna() >= START_TS).all() and (m[c].dropna() < END_TS).all(), c
    # the *scheduled* resolution of a market still open at the end may lie beyond it
    assert (m["resolution_date"] >= START_TS).all()
    # creation attributes never change between versions
    per_market = m.groupby("market_id")[["question", "event_type", "platform", "created_at"]].nunique()
    assert (per_market == 1).all().all()


def test_market_versions_have_the_promised_shapes(data) -> None:
    _, t = data
    m = t["markets"].sort_values(["market_id", "updated_at"])
    n_versions = m.groupby("market_id").size()
    assert set(n_versions) == {1, 2, 3}
    first = m.groupby("market_id").head(1).set_index("market_id")
    last = m.groupby("market_id").tail(1).set_index("market_id")
    single = n_versions[n_versions == 1].index
    sent_once_resolved = single[first.loc[single, "resolved_at"].notna()]
    # creation versions are written at creation and are open
    multi = n_versions[n_versions > 1].index
    assert (first.loc[multi, "updated_at"] == first.loc[multi, "created_at"]).all()
    assert first.loc[multi, "resolved_at"].isna().all()
    # about 10% of resolved markets arrive once, resolved
    n_resolved = int(last["resolved_at"].notna().sum())
    assert 0.03 * n_resolved <= len(sent_once_resolved) <= 0.2 * n_resolved
    # some markets get a middle version that changes resolution_date
    three = n_versions[n_versions == 3].index
    assert len(three) > 0
    mid = m[m["market_id"].isin(three)].groupby("market_id").nth(1).set_index("market_id")
    assert mid["resolved_at"].isna().all()
    assert (mid["resolution_date"] != first.loc[mid.index, "resolution_date"]).all()
    # and some are still open at the end of the period
    assert 0 < int(last["resolved_at"].isna().sum()) < len(last) // 2


def _check_observations(obs: pd.DataFrame, m: pd.DataFrame, table: str,
                        lo: pd.Timestamp = START_TS, hi: pd.Timestamp = END_TS) -> None:
    assert not obs.duplicated(["market_id", "ts"]).any(), table
    life = m.groupby("market_id").agg(created_at=("created_at", "first"), resolved_at=("resolved_at", "max"),
                                      first_batch=("batch", "min"))
    j = obs.join(life, on="market_id")
    assert j["created_at"].notna().all(), f"{table}: market unknown to markets"
    assert (j["batch"] >= j["first_batch"]).all(), f"{table}: market arrives in a later batch"
    assert (j["ts"] >= j["created_at"]).all()
    closed = j["resolved_at"].notna()
    assert (j.loc[closed, "ts"] <= j.loc[closed, "resolved_at"]).all()
    assert (j["ts"] >= lo).all() and (j["ts"] < hi).all()


def test_snapshots_follow_contract(data) -> None:
    _, t = data
    s = t["price_snapshots"]
    assert len(s) > 30 * 300 / 3
    assert s["price"].between(0, 1).all() and s["price"].notna().all()
    assert (s["volume_24h"] >= 0).all() and s["volume_24h"].notna().all()
    _check_observations(s, t["markets"], "price_snapshots")


def test_polls_follow_contract_and_trend_is_the_7_day_change(data) -> None:
    _, t = data
    p = t["polls"]
    assert len(p) > 0
    assert p["poll_average"].between(0, 1).all()
    assert p["poll_trend"].between(-1, 1).all()
    assert (p["n_polls"] >= 0).all()
    _check_observations(p, t["markets"], "polls")
    # recompute: poll_average minus the latest reading >= 7 days earlier (else the market's first)
    p = p.sort_values(["market_id", "ts"]).reset_index(drop=True)
    for _, g in p.groupby("market_id"):
        ts = g["ts"].dt.tz_convert(None).to_numpy()
        avg = g["poll_average"].to_numpy()
        ref = np.searchsorted(ts, ts - np.timedelta64(POLL_WINDOW, "s"), side="right") - 1
        expected = avg - avg[np.maximum(ref, 0)]
        np.testing.assert_allclose(g["poll_trend"].to_numpy(), expected, atol=1e-9)


def test_polls_only_for_elections_and_every_long_election_has_them(data) -> None:
    _, t = data
    kind = t["markets"].groupby("market_id")["event_type"].first()
    assert set(kind[t["polls"]["market_id"].unique()]) == {"election"}
    with_snapshots = t["price_snapshots"].groupby("market_id").size()
    long_elections = [mid for mid in kind[kind == "election"].index if with_snapshots.get(mid, 0) >= 5]
    assert long_elections and set(long_elections) <= set(t["polls"]["market_id"])


def test_polls_are_noisy_but_informative(data) -> None:
    out, t = data
    truth = pd.read_parquet(out / "truth.parquet")
    p = t["polls"]
    # polls are taken 12 h after a snapshot; compare with the truth of that snapshot
    p = pd.merge_asof(p.sort_values("ts"), truth.sort_values("ts"), on="ts", by="market_id",
                      direction="backward")
    logit = np.log(p["true_probability"] / (1 - p["true_probability"])).clip(-8, 8)
    corr = np.corrcoef(p["poll_average"], logit)[0, 1]
    assert 0.4 < corr < 0.99  # informative, yet not the truth itself
    outcome = t["markets"].dropna(subset=["outcome"]).groupby("market_id")["outcome"].first()
    p = p.join(outcome, on="market_id").dropna(subset=["outcome"])
    by_outcome = p.groupby("outcome")["poll_average"].mean()
    assert by_outcome[1] > by_outcome[0] + 0.02


def test_volume_rises_toward_resolution(data) -> None:
    _, t = data
    current = t["markets"].sort_values("updated_at").groupby("market_id").tail(1).set_index("market_id")
    s = t["price_snapshots"].join(current[["resolution_date", "platform"]], on="market_id")
    days_left = (s["resolution_date"] - s["ts"]) / pd.Timedelta(days=1)
    late = s[days_left < 1].groupby("platform")["volume_24h"].median()
    early = s[days_left > 7].groupby("platform")["volume_24h"].median()
    assert (late > 1.5 * early).all()
    # and liquidity differs by platform: manifold (play money) is the thinnest
    assert s.groupby("platform")["volume_24h"].median().idxmin() == "manifold"


def test_batches_split_the_period_by_delivery_time(data) -> None:
    _, t = data
    k = 4
    width = (END_TS - START_TS) / k

    def slice_of(ts: pd.Series) -> pd.Series:
        return ((ts - START_TS) // width).astype(int)

    m = t["markets"]
    assert (slice_of(m["updated_at"]) == m["batch"]).all()
    n_versions = m.groupby("market_id").size()
    single_batch = m[m["market_id"].isin(n_versions[n_versions == 1].index) & m["resolved_at"].notna()] \
        .set_index("market_id")["batch"]
    for table in ("price_snapshots", "polls"):
        obs = t[table]
        sent_once = obs["market_id"].isin(single_batch.index)
        assert (slice_of(obs.loc[~sent_once, "ts"]) == obs.loc[~sent_once, "batch"]).all()
        # observations of markets sent once after resolution travel with that single row
        assert (obs.loc[sent_once, "market_id"].map(single_batch) == obs.loc[sent_once, "batch"]).all()
        assert sent_once.any() or table == "polls"
    assert set(t["price_snapshots"]["batch"]) == set(range(k))


def test_batching_only_routes_rows(tmp_path: Path, data) -> None:
    _, t4 = data
    generate(_cfg(n_batches=1), tmp_path / "one", progress=False)
    t1 = _load(tmp_path / "one")
    for table, keys in KEYS.items():
        a = t1[table].drop(columns="batch").sort_values(keys).reset_index(drop=True)
        b = t4[table].drop(columns="batch").sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)


def test_truth_is_beside_the_batches_and_covers_every_snapshot(data) -> None:
    out, t = data
    assert (out / "truth.parquet").is_file()
    assert not list(out.glob("batch-*/truth*"))
    assert sorted(p.name for p in out.iterdir()) == ["batch-001", "batch-002", "batch-003", "batch-004",
                                                      "truth.parquet"]
    truth = pd.read_parquet(out / "truth.parquet")
    assert truth["true_probability"].between(0, 1).all()
    assert not truth.duplicated(["market_id", "ts"]).any()
    snaps = t["price_snapshots"][["market_id", "ts"]].sort_values(["market_id", "ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(truth[["market_id", "ts"]].sort_values(["market_id", "ts"])
                                  .reset_index(drop=True), snaps)


def _examples(t: dict[str, pd.DataFrame], truth: pd.DataFrame) -> pd.DataFrame:
    """Learning examples (snapshots of resolved markets before resolution) with label, truth and
    the logit of the price averaged over the market's last 4 snapshots (a rolling feature)."""
    current = t["markets"].sort_values("updated_at").groupby("market_id").tail(1).set_index("market_id")
    ex = t["price_snapshots"].join(current[["resolved_at", "outcome", "platform", "event_type"]],
                                   on="market_id")
    ex = ex.sort_values(["market_id", "ts"]).reset_index(drop=True)
    price = ex["price"].clip(0.001, 0.999)
    ex["logit"] = np.log(price / (1 - price))
    ex["logit_mean_4"] = ex.groupby("market_id")["logit"].rolling(4, min_periods=1).mean().to_numpy()
    ex = ex[ex["resolved_at"].notna() & (ex["ts"] < ex["resolved_at"])]
    return ex.merge(truth, on=["market_id", "ts"], validate="one_to_one")


def test_market_price_is_worse_than_truth_but_informative(data) -> None:
    out, t = data
    ex = _examples(t, pd.read_parquet(out / "truth.parquet"))
    y = ex["outcome"].to_numpy(float)
    brier_market = float(np.mean((ex["price"] - y) ** 2))
    brier_truth = float(np.mean(ex["true_probability"] * (1 - ex["true_probability"])))
    assert brier_truth + 0.01 < brier_market < 0.25
    # truth is calibrated: its realised Brier is close to its expected value mean(p(1-p))
    assert abs(float(np.mean((ex["true_probability"] - y) ** 2)) - brier_truth) < 0.02


def test_platform_bias_is_visible_against_the_truth(data) -> None:
    out, t = data
    ex = _examples(t, pd.read_parquet(out / "truth.parquet"))
    err = (ex["price"] - ex["true_probability"]).groupby(ex["platform"]).mean()
    # yes-bias grows from polymarket to manifold (PLATFORM_INTERCEPT)
    assert err["manifold"] > err["predictit"] > err["polymarket"] and err["manifold"] > 0.03
    # favourite-longshot bias on predictit: favourites priced below their truth
    fav = ex[(ex["platform"] == "predictit") & (ex["true_probability"] > 0.8)]
    assert len(fav) > 20 and (fav["price"] - fav["true_probability"]).mean() < -0.02


@pytest.mark.slow
def test_a_calibrated_model_beats_the_market_on_unseen_markets(tmp_path: Path) -> None:
    """With enough markets, recalibrating a rolling price by platform gives Brier skill > 0.

    (With a few hundred markets the outcomes of a few long elections dominate and the skill is
    noise; this was checked on seeds 1-5 with 2000 markets, all positive.)"""
    from sklearn.linear_model import LogisticRegression

    out = tmp_path / "big"
    generate(_cfg(n_markets=2000, n_batches=1, seed=3), out, progress=False)
    ex = _examples(_load(out), pd.read_parquet(out / "truth.parquet"))
    y = ex["outcome"].to_numpy(float)
    platform = pd.get_dummies(ex["platform"]).astype(float)
    interaction = platform.mul(ex["logit_mean_4"], axis=0).add_suffix("_x_logit")
    x = pd.concat([ex[["logit", "logit_mean_4"]], platform, interaction], axis=1).to_numpy()
    in_train = (ex["market_id"].str.rsplit("-", n=1).str[1].astype(int) % 2 == 0).to_numpy()
    weight = 1.0 / ex.groupby("market_id")["market_id"].transform("size").to_numpy()  # one vote per market
    model = LogisticRegression(max_iter=2000).fit(x[in_train], y[in_train], sample_weight=weight[in_train])
    p_model = model.predict_proba(x[~in_train])[:, 1]
    brier_model = float(np.mean((p_model - y[~in_train]) ** 2))
    brier_market = float(np.mean((ex["price"].to_numpy()[~in_train] - y[~in_train]) ** 2))
    skill = 1 - brier_model / brier_market
    assert skill > 0.01, (brier_model, brier_market)


def test_csv_format_is_the_same_data_with_z_timestamps(tmp_path: Path, data) -> None:
    _, parquet = data
    generate(_cfg(fmt="csv"), tmp_path / "csv", progress=False)
    assert not list((tmp_path / "csv").glob("batch-*/*.parquet"))
    raw = (tmp_path / "csv" / "batch-001" / "markets.csv").read_text(encoding="utf-8")
    header, first = raw.splitlines()[:2]
    assert header == '"market_id","question","event_type","platform","created_at","resolution_date",' \
                     '"resolved_at","outcome","updated_at"'
    assert "T" in first and first.count("Z\"") >= 3
    csv = _load(tmp_path / "csv", fmt="csv")
    for table, keys in KEYS.items():
        a = csv[table].sort_values(keys).reset_index(drop=True)
        b = parquet[table].sort_values(keys).reset_index(drop=True)
        if table == "markets":
            a["outcome"] = a["outcome"].astype("float64")
            b["outcome"] = b["outcome"].astype("float64")
        pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_drift_changes_only_what_the_docstring_says(data, drifted) -> None:
    (base_out, base), (drift_out, drift) = data, drifted
    pd.testing.assert_frame_equal(base["markets"], drift["markets"])
    pd.testing.assert_frame_equal(pd.read_parquet(base_out / "truth.parquet"),
                                  pd.read_parquet(drift_out / "truth.parquet"))
    drift_ts = pd.Timestamp(DRIFT, tz="UTC")
    s = base["price_snapshots"].merge(drift["price_snapshots"], on=["market_id", "ts", "batch"],
                                      suffixes=("", "_d"), validate="one_to_one")
    assert len(s) == len(base["price_snapshots"]) == len(drift["price_snapshots"])
    before, after = s[s["ts"] < drift_ts], s[s["ts"] >= drift_ts]
    assert len(before) > 1000 and len(after) > 1000
    assert (before["price"] == before["price_d"]).all()
    assert (before["volume_24h"] == before["volume_24h_d"]).all()
    ratio = after["volume_24h_d"] / after["volume_24h"]
    assert ratio.median() == pytest.approx(simulate.DRIFT_VOLUME_FACTOR, rel=0.01)
    # yes-bias up: drifted prices are higher on average, and further from the truth
    assert (after["price_d"] - after["price"]).mean() > 0.03
    p = base["polls"].merge(drift["polls"], on=["market_id", "ts"], suffixes=("", "_d"),
                            validate="one_to_one")
    pb, pa_ = p[p["ts"] < drift_ts], p[p["ts"] >= drift_ts]
    assert (pb["poll_average"] == pb["poll_average_d"]).all()
    shift = pa_["poll_average_d"] - pa_["poll_average"]
    assert shift.mean() == pytest.approx(simulate.DRIFT_POLL_HOUSE_EFFECT, abs=0.005)
    assert shift.std() > 0.02  # noise grew from 0.012 to 0.036


def test_many_chunks_give_unique_markets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulate, "MARKETS_PER_CHUNK", 40)
    cfg = _cfg(n_markets=130, n_batches=2)
    assert cfg.n_chunks == 4
    summary = generate(cfg, tmp_path / "a", progress=False)
    generate(cfg, tmp_path / "b", progress=False)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    t = _load(tmp_path / "a")
    assert t["markets"]["market_id"].nunique() == 130 == summary.n_markets
    assert summary.n_snapshots == len(t["price_snapshots"]) and summary.n_polls == len(t["polls"])
    assert summary.n_market_versions == len(t["markets"])
    assert "Brier market price" in summary.to_text()


@settings_(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), days=st.integers(2, 400), n_markets=st.integers(1, 80),
       n_batches=st.integers(1, 9), drift_day=st.one_of(st.none(), st.integers(0, 400)))
def test_contract_holds_for_any_small_config(seed: int, days: int, n_markets: int, n_batches: int,
                                            drift_day: int | None) -> None:
    start = date(2023, 3, 1)
    end = start + timedelta(days=days)
    drift = None if drift_day is None else start + timedelta(days=drift_day)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        summary = generate(SimulationConfig(n_markets, start, end, seed, n_batches, "parquet", drift), out,
                           progress=False)
        t = _load(out)
        truth = pd.read_parquet(out / "truth.parquet")
    lo, hi = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    m = t["markets"]
    assert m["market_id"].nunique() == n_markets == summary.n_markets
    assert not m.duplicated(["market_id", "updated_at"]).any()
    assert (m["resolved_at"].isna() == m["outcome"].isna()).all()
    assert (m["resolution_date"] >= m["created_at"]).all() and (m["updated_at"] >= m["created_at"]).all()
    assert (m["resolved_at"].dropna() >= m.loc[m["resolved_at"].notna(), "created_at"]).all()
    for c in ("created_at", "resolved_at", "updated_at"):
        assert m[c].dropna().between(lo, hi, inclusive="left").all()
    assert len(truth) == summary.n_snapshots == len(t["price_snapshots"])
    for table in ("price_snapshots", "polls"):
        if len(t[table]):
            _check_observations(t[table], m, table, lo, hi)
    snaps, polls = t["price_snapshots"], t["polls"]
    if len(snaps):
        assert snaps["price"].between(0, 1).all() and (snaps["volume_24h"] >= 0).all()
    if len(polls):
        assert polls["poll_average"].between(0, 1).all() and polls["poll_trend"].between(-1, 1).all()


@pytest.mark.parametrize("kw, message", [
    (dict(end=START), "must be after start"),
    (dict(fmt="json"), "fmt must be"),
    (dict(n_batches=0), "n_batches"),
    (dict(n_markets=0), "n_markets"),
    (dict(start=date(1999, 12, 1)), "before 2000-01-01"),
])
def test_bad_config_is_refused_with_a_reason(kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        _cfg(**kw)


def test_slices_without_rows_write_no_directory(tmp_path: Path) -> None:
    """An empty table or batch would be refused by the contract, so none is written."""
    summary = generate(_cfg(n_markets=3, start=date(2024, 1, 1), end=date(2024, 1, 3), n_batches=20),
                       tmp_path / "out", progress=False)
    written = sorted(p.name for p in (tmp_path / "out").glob("batch-*"))
    assert written == summary.batches and summary.empty_batches
    assert sorted(written + summary.empty_batches) == [f"batch-{i:03d}" for i in range(1, 21)]
    for name in written:
        files = list((tmp_path / "out" / name).iterdir())
        assert files and all(pq.read_metadata(f).num_rows > 0 for f in files)
    assert "no directory written" in summary.to_text()


def test_refuses_a_non_empty_output_directory(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(_cfg(n_markets=10), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]


def test_cli_generate(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ingestion.cli import app

    result = CliRunner().invoke(app, ["generate", "--markets", "100", "--out", str(tmp_path / "x"),
                                      "--start", "2024-01-01", "--end", "2024-03-01", "--batches", "2",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "markets: 100" in result.output
    assert (tmp_path / "x" / "batch-002" / "price_snapshots.parquet").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_every_batch_is_accepted_by_the_real_ingest(tmp_path: Path, settings, fmt: str) -> None:
    """The real ingest (contract checks and the Great Expectations gate) accepts every batch, in
    delivery order, in both formats."""
    from ingestion.ingest import ingest_batch

    out = tmp_path / "raw"
    generate(_cfg(n_markets=120, n_batches=3, fmt=fmt, drift_start=DRIFT), out, progress=False)
    for batch_dir in sorted(out.glob("batch-*")):
        result = ingest_batch(batch_dir, settings=settings)
        assert result.accepted, result.to_text()

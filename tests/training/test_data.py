"""Data tests on the real path: simulator -> ingestion (with its GX gate) -> `feast apply` ->
training set through the FeatureService -> train/register on a real MLflow sqlite store, and the
walk-forward backtest over the same store.

One simulated world per module (two time-split batches ingested at distinct times, one real
`feast apply` on a temp copy of feature_repo/), because each step costs seconds.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.settings import Settings
from tests.feast_project import copy_feature_repo
from training.asof_view import VIEW_PREFIX
from training.data import TrainingSet, build_training_set, content_hash

pytestmark = pytest.mark.slow


@dataclass
class World:
    settings: Settings
    raw: Path
    summary: object
    ingested_at: list[pd.Timestamp]


def batch_end(batch_dir: Path) -> pd.Timestamp:
    """Latest timestamp in a raw batch (its ingest time must not be more than a day before it)."""
    latest = []
    for table, cols in (("markets", ["updated_at"]), ("price_snapshots", ["ts"]), ("polls", ["ts"])):
        path = batch_dir / f"{table}.parquet"
        if path.exists():
            frame = pd.read_parquet(path, columns=cols)
            latest += [frame[c].max() for c in cols]
    return max(latest)


def ingest(settings: Settings, batch_dir: Path, now: pd.Timestamp):
    from ingestion.ingest import ingest_batch

    # run_gate=False: the ingestion GX gate is ingestion's concern and costs seconds per batch;
    # the training-set GX checkpoint is exercised below (run_gx=True).
    result = ingest_batch(batch_dir, settings=settings, now=now, run_gate=False)
    assert result.accepted, result.to_text() if hasattr(result, "to_text") else result
    return result


def before_leak(world: World) -> pd.Timestamp:
    """An as_of after both simulated batches and before the late batches the tests below ingest."""
    return world.ingested_at[1] + pd.Timedelta(hours=1, minutes=30)


def rows_that_differ(a: pd.DataFrame, b: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Per row (by position): some column's value differs (missing == missing)."""
    differ = np.zeros(len(a), dtype=bool)
    for c in columns:
        x, y = a[c].reset_index(drop=True), b[c].reset_index(drop=True)
        differ |= ~((x == y) | (x.isna() & y.isna())).to_numpy(dtype=bool)
    return differ


def test_publication_time_view_holds_exactly_the_rows_published_by_as_of(tmp_path):
    """The view's files: committed batches only, rows with ingested_at <= as_of only (whole files
    linked, a file with rows on both sides of as_of filtered, later files left out)."""
    from tests.features.offline_data import publish, synthetic
    from training.asof_view import write_view

    offline, view = tmp_path / "offline", tmp_path / "view"
    data = synthetic(4, days=10, seed=3)
    early = publish(offline, data, "2024-01-12")
    late_prices = synthetic(4, days=10, seed=4, prefix="x")["price_features"]
    late = publish(offline, {"price_features": late_prices}, "2024-01-20")
    # A file with rows on both sides of as_of (ingestion never writes one; the view must still be exact).
    mixed = next((offline / "poll_features").glob(f"month=*/{early}.parquet"))
    polls = pd.read_parquet(mixed)
    polls.loc[polls.index[::2], "ingested_at"] = pd.Timestamp("2024-01-25", tz="UTC")
    polls.to_parquet(mixed)
    # A renamed-but-uncommitted file (crash mid-publish): never read.
    (offline / "price_features" / "month=2024-01" / "inflight.parquet").write_bytes(
        next((offline / "price_features").glob(f"month=*/{early}.parquet")).read_bytes())

    as_of = pd.Timestamp("2024-01-15", tz="UTC")
    stats = write_view(offline, view, as_of)

    def rows(root: Path, table: str) -> pd.DataFrame:
        files = sorted((root / table).glob("month=*/*.parquet"))
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()

    for table in ("markets", "market_info", "price_features", "poll_features"):
        published = pd.concat([pd.read_parquet(f) for f in (offline / table).glob("month=*/*.parquet")
                               if f.stem in (early, late)], ignore_index=True)
        expected = published[published["ingested_at"] <= as_of]
        got = rows(view, table)
        key = [c for c in ("market_id", "ts", "event_ts", "updated_at") if c in published.columns]
        pd.testing.assert_frame_equal(got.sort_values(key, ignore_index=True),
                                      expected.sort_values(key, ignore_index=True), check_dtype=True)
        assert stats.rows_excluded[table] == len(published) - len(expected)
    assert stats.rows_excluded["price_features"] == len(late_prices) > 0
    assert stats.rows_excluded["poll_features"] == len(polls.index[::2]) > 0
    assert stats.files_filtered == {"markets": 0, "market_info": 0, "price_features": 0, "poll_features": 1}
    linked = [p for p in view.rglob("*.parquet") if p.is_symlink()]
    assert len(linked) == sum(stats.files_linked.values()) > 0
    assert all(p.resolve().parent.parent.parent == offline.resolve() for p in linked)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from features.store import apply
    from ingestion.simulate import SimulationConfig, generate

    root = tmp_path_factory.mktemp("world")
    repo = copy_feature_repo(root)
    settings = Settings.from_env({"PM_DATA_DIR": str(root / "data"), "PM_FEATURE_REPO_DIR": str(repo)})
    settings.ensure_dirs()
    raw = root / "raw"
    summary = generate(SimulationConfig(n_markets=300, start=date(2024, 1, 1), end=date(2024, 7, 1), seed=4,
                                        n_batches=2), raw, progress=False)
    batches = sorted(raw.glob("batch-*"))
    assert len(batches) == 2
    ingested_at = [batch_end(b) + pd.Timedelta(hours=1) for b in batches]
    ingest(settings, batches[0], ingested_at[0])
    apply(settings)
    return World(settings, raw, summary, ingested_at)


@pytest.fixture(scope="module")
def first_batch_set(world):
    """Training set built when only batch 1 was published (before the second ingest)."""
    ts = build_training_set(world.settings, world.ingested_at[0], run_gx=False)
    ingest(world.settings, sorted(world.raw.glob("batch-*"))[1], world.ingested_at[1])
    return ts


@pytest.fixture(scope="module")
def full_set(world, first_batch_set):
    return build_training_set(world.settings, world.ingested_at[1] + pd.Timedelta(days=1), run_gx=True)


def test_full_training_set_is_every_learning_example_validated(world, full_set):
    frame = full_set.frame
    assert len(frame) == world.summary.n_examples  # the simulator counts the same definition
    assert not frame.duplicated(["market_id", "ts"]).any()
    assert (frame["ts"] < frame["resolved_at"]).all()
    assert full_set.validation == {**full_set.validation, "explicit_checks": "pass", "gx_checkpoint": "pass"}
    assert set(full_set.feature_names) >= {"price", "poll_average", "event_type", "platform", "days_to_resolution"}
    assert len(full_set.batch_ids) == 2
    assert full_set.validation["as_of_exact"] is True


def test_as_of_rebuild_equals_the_set_built_back_then(world, first_batch_set, full_set):
    rebuilt = build_training_set(world.settings, world.ingested_at[0], run_gx=False)
    assert rebuilt.content_hash == first_batch_set.content_hash
    assert rebuilt.raw_data_hash == first_batch_set.raw_data_hash
    assert len(first_batch_set.frame) < len(full_set.frame)
    assert (first_batch_set.frame["resolved_at"] <= world.ingested_at[0]).all()


@dataclass
class Leak:
    ts: pd.Timestamp           # a snapshot priced at the outcome, a minute before resolution
    after: TrainingSet         # built as of after it was published
    before: TrainingSet        # built as of before it was published, after it was


@pytest.fixture(scope="module")
def leak(world, full_set, tmp_path_factory) -> Leak:
    """Publish (2 h after batch 2) a new last snapshot of one market, priced at its outcome."""
    frame = full_set.frame
    last = frame.sort_values("ts").groupby("market_id").tail(1)
    last = last[(last["resolved_at"] - last["ts"]) > pd.Timedelta(minutes=2)].iloc[0]
    leak_ts = last["resolved_at"] - pd.Timedelta(minutes=1)
    batch = tmp_path_factory.mktemp("leak")
    pd.DataFrame({"market_id": [last["market_id"]], "ts": pd.Series([leak_ts]).astype("datetime64[us, UTC]"),
                  "price": [float(last["label"])], "volume_24h": [1e9]}).to_parquet(batch / "price_snapshots.parquet")
    ingest(world.settings, batch, world.ingested_at[1] + pd.Timedelta(hours=2))
    after = build_training_set(world.settings, world.ingested_at[1] + pd.Timedelta(days=1), run_gx=False)
    before = build_training_set(world.settings, before_leak(world), run_gx=False)
    return Leak(leak_ts, after, before)


def test_outcome_revealing_new_row_changes_no_existing_example(full_set, leak):
    """A new snapshot priced at the outcome, just before resolution, is a *new* example; every
    earlier example keeps exactly its features (point-in-time join + causal rolling windows)."""
    frame = full_set.frame
    assert len(leak.after.frame) == len(frame) + 1
    old_rows = leak.after.frame[leak.after.frame["ts"] != leak.ts].reset_index(drop=True)
    assert content_hash(old_rows) == full_set.content_hash
    # and the set as of before the leak was ingested is unchanged
    assert leak.before.content_hash == full_set.content_hash
    # ... and it says that a row published after its as_of predates it (Feast joins on event time),
    # which the publication-time view left out
    assert leak.before.validation["late_rows_after_as_of"]["price_features"] == 1
    assert leak.before.validation["publication_time_view"]["used"] is True
    assert leak.before.validation["publication_time_view"]["late_rows_excluded"] == 1
    assert leak.before.validation["as_of_exact"] is True
    assert full_set.validation["publication_time_view"] == {"used": False, "reason": "no late rows",
                                                           "late_rows_excluded": 0}


def test_late_batch_changes_no_example_of_an_as_of_rebuild(world, full_set, leak, tmp_path, monkeypatch):
    """A batch published after D with event times before D: a snapshot of a resolved market between two
    published ones (ingestion appends corrected rolling features for the later snapshots) and a poll.
    Feast alone would join them into a rebuild as of D; the publication-time view leaves them out."""
    from features.retrieve import historical_features

    as_of = before_leak(world)
    built = build_training_set(world.settings, as_of, run_gx=False)  # "on date D"
    assert built.content_hash == full_set.content_hash  # built with no late row at all, by Feast alone

    frame = full_set.frame
    market = sorted(frame.loc[frame["poll_average"].notna(), "market_id"].unique())[0]
    snaps = frame[frame["market_id"] == market].sort_values("ts").reset_index(drop=True)
    gaps = snaps["ts"].diff().shift(-1)  # to the next snapshot
    candidates = gaps.index[gaps > pd.Timedelta(minutes=2)]
    k = int(candidates[len(candidates) // 4])  # early: many later examples see the correction
    # Off the simulator's round clock times, where the market's published polls are.
    mid = (snaps.loc[k, "ts"] + gaps[k] / 2 + pd.Timedelta(microseconds=123_457)).floor("us")
    price = 0.99 if snaps.loc[k, "price"] < 0.5 else 0.01
    poll = 0.99 if snaps.loc[k, "poll_average"] < 0.5 else 0.01
    ts = pd.Series([mid]).astype("datetime64[us, UTC]")
    batch = tmp_path / "late"
    batch.mkdir()
    pd.DataFrame({"market_id": [market], "ts": ts, "price": [price], "volume_24h": [1e9]}).to_parquet(
        batch / "price_snapshots.parquet")
    pd.DataFrame({"market_id": [market], "ts": ts, "poll_average": [poll], "poll_trend": [0.0],
                  "n_polls": [1]}).to_parquet(batch / "polls.parquet")
    late_batch = ingest(world.settings, batch, world.ingested_at[1] + pd.Timedelta(hours=3))
    assert late_batch.feature_corrections > 0  # the later snapshots' rolling features were corrected

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the view's temp dir goes
    rebuilt = build_training_set(world.settings, as_of, run_gx=False)
    monkeypatch.undo()
    assert not list(scratch.glob(f"{VIEW_PREFIX}*"))  # the view was removed
    pd.testing.assert_frame_equal(rebuilt.frame, built.frame)
    assert rebuilt.content_hash == built.content_hash == full_set.content_hash
    late = rebuilt.validation["late_rows_after_as_of"]
    # the leak row, the new snapshot and its corrections; the poll
    assert late["price_features"] == 2 + late_batch.feature_corrections
    assert late["poll_features"] == 1
    view = rebuilt.validation["publication_time_view"]
    assert view["used"] is True and view["late_rows_excluded"] == sum(late.values())
    assert view["rows_excluded"]["poll_features"] == 1
    assert rebuilt.validation["as_of_exact"] is True

    # What Feast over the live store returns for the same entity rows: the late rows leak into the
    # market's examples after the new snapshot, and only into those.
    live = historical_features(built.frame[["market_id", "ts"]], built.feature_service,
                               settings=world.settings)
    leaked = rows_that_differ(live, built.frame, built.feature_names)
    expected = ((built.frame["market_id"] == market) & (built.frame["ts"] > mid)).to_numpy()
    assert leaked.any() and not (leaked & ~expected).any()

    # A build as of now sees the batch: one more example, and the market's later examples changed.
    now = build_training_set(world.settings, world.ingested_at[1] + pd.Timedelta(days=1), run_gx=False)
    assert now.content_hash != built.content_hash
    assert len(now.frame) == len(full_set.frame) + 2  # + the leak's and this batch's snapshot
    kept = now.frame[~now.frame["ts"].isin([mid, leak.ts])].reset_index(drop=True)
    assert not rows_that_differ(kept, live, built.feature_names).any()
    assert (rows_that_differ(kept, built.frame, built.feature_names) == leaked).all()


def test_train_on_simulated_data_and_reproduce_from_lineage(world, full_set):
    """Real path end to end: train + register with production gates, then reproduce from lineage alone."""
    from training.registry import resolve_version
    from training.reproduce import reproduce
    from training.train import TrainConfig, train

    settings = world.settings
    # as of before the leakage test's extra batch, i.e. exactly full_set
    result = train(settings, as_of=before_leak(world),
                   config=TrainConfig(importance_repeats=1))
    assert result.training_set_hash == full_set.content_hash
    metrics = result.metrics
    assert np.isfinite(metrics["valid_brier"]) and metrics["valid_brier_market"] > 0
    # Forecast quality is not asserted: on a few hundred simulated markets whether the model beats
    # the market on the held-out ones depends on the world drawn (docs/training.md, "Quality on
    # simulated data"). What is asserted: every production gate ran and left its verdict tag.
    assert {v.gate for v in result.verdicts} == {"brier", "ece", "roc_auc", "brier_skill", "train_valid_gap",
                                                  "vs_champion"}
    tags = resolve_version(settings, settings.model_name, result.version).tags
    assert all(tags[f"gate.{v.gate}"] == v.tag_value() for v in result.verdicts)
    again = reproduce(settings, result.version, run_gx=False)  # rebuilt through Feast from the version's tags
    assert again.bit_equal and again.rows_compared == len(full_set.frame)


def test_backtest_through_feast_measures_coverage_against_the_published_snapshots(world, full_set, tmp_path):
    """backtest() end to end: training set built through Feast as of after both simulated batches,
    each period's coverage against the snapshots published by then (resolved markets or not; not a
    snapshot published later with an earlier event time), scores against the simulator's truth
    file, and the CSV + JSON it writes."""
    import json

    from ingestion.simulate import TRUTH_FILE
    from training.backtest import BacktestConfig, backtest, cutoffs_for
    from training.pipeline import ModelSpec

    as_of, labelled = before_leak(world), full_set.frame
    edges = cutoffs_for(labelled, 3)  # the set backtest builds as of before_leak is full_set
    published = pd.concat([pd.read_parquet(b / "price_snapshots.parquet", columns=["market_id", "ts"])
                           for b in sorted(world.raw.glob("batch-*"))], ignore_index=True)
    # A snapshot of a market still open at as_of, in the last period, published after as_of.
    still_open = published[(published["ts"] >= edges[-2]) & ~published["market_id"].isin(labelled["market_id"])]
    market = still_open["market_id"].min()
    first, second = still_open.loc[still_open["market_id"] == market, "ts"].sort_values().iloc[:2]
    late_ts = pd.Series([(first + (second - first) / 2).floor("us")]).astype("datetime64[us, UTC]")
    batch = tmp_path / "late-open"
    batch.mkdir()
    pd.DataFrame({"market_id": [market], "ts": late_ts, "price": [0.5], "volume_24h": [1e3]}).to_parquet(
        batch / "price_snapshots.parquet")
    ingest(world.settings, batch, world.ingested_at[1] + pd.Timedelta(hours=4))
    assert edges[-2] <= late_ts[0] < min(edges[-1], as_of)

    config = BacktestConfig(n_periods=3, spec=ModelSpec(kind="logreg", calibration=None))
    result, written = backtest(world.settings, as_of=as_of, config=config,
                               truth_path=world.raw / TRUTH_FILE, out_dir=tmp_path / "backtest")
    periods = result.periods
    assert list(periods["start"]) == edges[:-1] and list(periods["end"]) == edges[1:]
    assert "skipped" not in periods.columns
    for row in periods.itertuples():
        in_store = published[(published["ts"] >= row.start) & (published["ts"] < row.end)]
        forecast = labelled[(labelled["ts"] >= row.start) & (labelled["ts"] < row.end)]
        assert (row.store_n, row.store_markets) == (len(in_store), in_store["market_id"].nunique())
        assert (row.n, row.markets) == (len(forecast), forecast["market_id"].nunique())
        assert row.coverage_snapshots == pytest.approx(len(forecast) / len(in_store))
        assert row.coverage_markets == pytest.approx(forecast["market_id"].nunique() / in_store["market_id"].nunique())
    # Markets still open at as_of were published but have no label: the last period is not fully covered.
    assert periods["coverage_snapshots"].iloc[-1] < 1
    assert len(result.warnings) == int((periods["coverage_snapshots"] < config.min_coverage).sum())

    truth = pd.read_parquet(world.raw / TRUTH_FILE)
    scored = labelled[(labelled["ts"] >= edges[0]) & (labelled["ts"] < edges[-1])].merge(
        truth, on=["market_id", "ts"], how="left", validate="one_to_one")
    t = scored["true_probability"].to_numpy()
    assert result.overall["n"] == len(scored)
    assert result.overall["brier_best_achievable"] == pytest.approx(float(np.mean(t * (1 - t))))

    table = pd.read_csv(written / "backtest_periods.csv")
    assert len(table) == 3 and {
        "start", "end", "n", "markets", "train_markets", "brier_model", "brier_market", "brier_skill",
        "mw_brier_skill", "ece_model", "n_bets", "pnl", "roi", "store_n", "store_markets", "coverage_snapshots",
        "coverage_markets", "brier_best_achievable", "mse_to_truth_model", "mse_to_truth_market"} <= set(table.columns)
    assert list(table["store_n"]) == list(periods["store_n"])
    summary = json.loads((written / "backtest_summary.json").read_text())
    assert summary["overall"] == pytest.approx(result.overall) and summary["warnings"] == result.warnings
    assert summary["config"]["n_periods"] == 3

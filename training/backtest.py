"""Walk-forward backtest: at each cutoff, train on markets resolved before it, forecast the snapshots
of the following period, and score model vs market price, calibration and a betting rule.

Betting rule (per forecast snapshot, fixed stake ``S``, fee as a fraction of the stake):
- buy YES at the price when ``model - price > edge``: pnl = S * (y / price - 1) - fee * S
- buy NO at ``1 - price`` when ``price - model > edge``: pnl = S * ((1 - y) / (1 - price) - 1) - fee * S
Snapshots of one market are bet on repeatedly (one bet per snapshot), so bets are correlated.

Cutoffs are in event time: a period's model sees the training-set rows of markets whose
``resolved_at`` precedes the cutoff. This assumes data was published when it happened; a
publication-time backtest is ``python -m training train --as-of`` per cutoff.

Only markets resolved by ``as_of`` have labels, so a period near the end of the data is scored on
the markets that resolved early (a look-ahead selection). Each period therefore reports its
coverage: the snapshots and markets published in the store for the period (resolved or not) vs
those forecast, with a warning when fewer than ``min_coverage`` of its snapshots were forecast.

On simulated data, ``truth`` (truth.parquet: market_id, ts, true_probability) adds the best
achievable Brier, mean(p (1 - p)), and each forecast's squared distance to the truth. Only
evaluation reads truth.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from training.pipeline import ModelSpec

if TYPE_CHECKING:
    from config.settings import Settings
    from training.data import TrainingSet


@dataclass
class BettingRule:
    edge: float = 0.05
    stake: float = 1.0
    fee: float = 0.01
    price_floor: float = 0.01   # no bet at prices this close to 0 or 1 (unbounded payout ratios)

    def pnl(self, model: np.ndarray, price: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pnl per snapshot, side: +1 YES, -1 NO, 0 no bet)."""
        tradable = (price >= self.price_floor) & (price <= 1 - self.price_floor)
        side = np.where(tradable & (model - price > self.edge), 1, np.where(tradable & (price - model > self.edge), -1, 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            yes = self.stake * (y / price - 1)
            no = self.stake * ((1 - y) / (1 - price) - 1)
        pnl = np.where(side == 1, yes, np.where(side == -1, no, 0.0)) - np.where(side != 0, self.fee * self.stake, 0.0)
        return pnl, side


@dataclass
class BacktestConfig:
    n_periods: int = 4
    spec: ModelSpec = field(default_factory=ModelSpec)
    rule: BettingRule = field(default_factory=BettingRule)
    min_train_markets: int = 30
    min_coverage: float = 0.8   # warn when a period forecasts less than this share of its store snapshots


def period_metrics(frame: pd.DataFrame, p: np.ndarray, rule: BettingRule) -> dict:
    from training.evaluate import forecast_metrics

    y, price = frame["label"].to_numpy(), frame["price"].to_numpy(dtype=float)
    model = forecast_metrics(y, p, price, frame["market_id"].to_numpy())
    pnl, side = rule.pnl(p, price, y)
    n_bets = int((side != 0).sum())
    out = {"n": int(len(frame)), "markets": int(frame["market_id"].nunique()),
           "brier_model": model["brier"], "brier_market": model["brier_market"], "brier_skill": model["brier_skill"],
           "ece_model": model["ece"], "ece_market": forecast_metrics(y, price, price)["ece"],
           "log_loss_model": model["log_loss"], "mw_brier_model": model["mw_brier"],
           "mw_brier_market": model["mw_brier_market"], "mw_brier_skill": model["mw_brier_skill"], "n_bets": n_bets, "n_yes": int((side == 1).sum()),
           "n_no": int((side == -1).sum()), "pnl": float(pnl.sum()),
           "roi": float(pnl.sum() / (n_bets * rule.stake)) if n_bets else float("nan")}
    if "true_probability" in frame.columns and frame["true_probability"].notna().all():
        t = frame["true_probability"].to_numpy(dtype=float)
        out.update({"brier_best_achievable": float(np.mean(t * (1 - t))),
                    "mse_to_truth_model": float(np.mean((p - t) ** 2)),
                    "mse_to_truth_market": float(np.mean((price - t) ** 2))})
    return out


@dataclass
class BacktestResult:
    periods: pd.DataFrame
    overall: dict
    config: BacktestConfig
    warnings: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        cols = [c for c in ("start", "end", "n", "markets", "brier_model", "brier_market", "brier_skill",
                            "mw_brier_skill", "ece_model",
                            "brier_best_achievable", "n_bets", "pnl", "roi", "coverage_snapshots",
                            "coverage_markets") if c in self.periods.columns]
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 4):
            text = self.periods[cols].to_string(index=False)
        o = self.overall
        summary = (f"overall: n={o['n']} Brier model {o['brier_model']:.4f} vs market {o['brier_market']:.4f} "
                   f"(skill {o['brier_skill']:+.4f}; market-weighted {o['mw_brier_skill']:+.4f}), ECE {o['ece_model']:.4f}, bets {o['n_bets']}, "
                   f"P&L {o['pnl']:+.2f} (ROI {o['roi']:+.3f}) at edge {self.config.rule.edge}, "
                   f"stake {self.config.rule.stake}, fee {self.config.rule.fee}")
        if "brier_best_achievable" in o:
            summary += f"; best achievable Brier (truth) {o['brier_best_achievable']:.4f}"
        return "\n".join([text, summary, *(f"warning: {w}" for w in self.warnings)])

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.periods.to_csv(out_dir / "backtest_periods.csv", index=False)
        (out_dir / "backtest_summary.json").write_text(json.dumps(
            {"overall": self.overall, "config": asdict(self.config), "warnings": self.warnings},
            indent=2, default=str))
        return out_dir


def cutoffs_for(frame: pd.DataFrame, n_periods: int) -> list[pd.Timestamp]:
    """n_periods + 1 boundaries: the forecast periods split the later half of the snapshot times
    evenly (the first half is the initial training history)."""
    ts = frame["ts"]
    start = ts.quantile(0.5)
    edges = pd.date_range(start.floor("s"), ts.max().floor("s") + pd.Timedelta(seconds=1), periods=n_periods + 1)
    return [e.ceil("s") for e in edges]


def store_snapshots(settings: "Settings", as_of: pd.Timestamp) -> pd.DataFrame:
    """(market_id, ts) of every price snapshot published by ``as_of``, of resolved markets or not."""
    from training.data import read_offline_table

    prices = read_offline_table(settings.offline_store_dir, "price_features")
    known = prices[(prices["ts"] <= as_of) & (prices["ingested_at"] <= as_of)]
    return known[["market_id", "ts"]].drop_duplicates().reset_index(drop=True)


def coverage(test: pd.DataFrame, store: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> dict:
    """Snapshots and markets of the period in the store vs forecast (the rest had no label by as_of)."""
    in_store = store[(store["ts"] >= start) & (store["ts"] < end)]
    n, markets = len(in_store), in_store["market_id"].nunique()
    return {"store_n": int(n), "store_markets": int(markets),
            "coverage_snapshots": len(test) / n if n else float("nan"),
            "coverage_markets": test["market_id"].nunique() / markets if markets else float("nan")}


def run(ts: "TrainingSet", config: BacktestConfig | None = None, truth: pd.DataFrame | None = None,
        store: pd.DataFrame | None = None) -> BacktestResult:
    """``store``: (market_id, ts) of the snapshots published by ``ts.as_of`` (``store_snapshots``),
    for each period's coverage; None: no coverage reported."""
    from training.pipeline import fit_model, predict_proba

    config = config or BacktestConfig()
    frame = ts.frame
    if truth is not None:
        frame = frame.merge(truth[["market_id", "ts", "true_probability"]], on=["market_id", "ts"], how="left",
                            validate="one_to_one")
    edges = cutoffs_for(frame, config.n_periods)
    rows, forecasts, warnings = [], [], []
    for start, end in zip(edges[:-1], edges[1:]):
        train = frame[frame["resolved_at"] < start]
        test = frame[(frame["ts"] >= start) & (frame["ts"] < end)]
        covered = coverage(test, store, start, end) if store is not None else {}
        if covered and covered["store_n"] and covered["coverage_snapshots"] < config.min_coverage:
            warnings.append(
                f"period {start.isoformat()}..{end.isoformat()}: {len(test)} of its {covered['store_n']} snapshots "
                f"({covered['coverage_snapshots']:.0%}; markets {covered['coverage_markets']:.0%}) are forecast; "
                f"the rest have no label (market not resolved by as_of {ts.as_of.isoformat()}, or snapshot at or "
                "after its resolution), so its scores are of the markets that resolved early")
        if train["market_id"].nunique() < config.min_train_markets or test.empty or train["label"].nunique() < 2:
            rows.append({"start": start, "end": end, "n": int(len(test)), "skipped":
                         f"{train['market_id'].nunique()} markets resolved before the cutoff "
                         f"(< {config.min_train_markets}) or no snapshots in the period", **covered})
            continue
        model = fit_model(config.spec, train, ts.feature_names)
        p = predict_proba(model, test, ts.feature_names)
        rows.append({"start": start, "end": end, "train_markets": int(train["market_id"].nunique()),
                     **period_metrics(test, p, config.rule), **covered})
        forecasts.append(test.assign(_p=p))
    if not forecasts:
        raise ValueError(f"backtest: no period had enough history ({config.min_train_markets} resolved markets); "
                         "use fewer periods or more data")
    scored = pd.concat(forecasts, ignore_index=True)
    overall = period_metrics(scored, scored["_p"].to_numpy(), config.rule)
    return BacktestResult(periods=pd.DataFrame(rows), overall=overall, config=config, warnings=warnings)


TRUTH_COLUMNS = ["market_id", "ts", "true_probability"]


def read_truth(path: Path) -> pd.DataFrame:
    """The simulator's truth.parquet, refused with the missing columns named if it is not one."""
    truth = pd.read_parquet(path)
    missing = [c for c in TRUTH_COLUMNS if c not in truth.columns]
    if missing:
        raise ValueError(f"--truth {path}: missing column(s) {missing}; a truth file has {TRUTH_COLUMNS} "
                         f"(got {list(truth.columns)})")
    return truth


def backtest(settings: "Settings", as_of: str | None = None, config: BacktestConfig | None = None,
             truth_path: Path | None = None, out_dir: Path | None = None,
             training_set: "TrainingSet | None" = None) -> tuple[BacktestResult, Path]:
    """Build the training set (through Feast), run the walk-forward backtest, write CSV + JSON.

    Coverage is measured against the store only for a set built here: a given ``training_set``
    may come from another store."""
    from training.data import build_training_set

    truth = read_truth(truth_path) if truth_path else None  # before the (slow) training set
    ts = training_set or build_training_set(settings, as_of)
    result = run(ts, config, truth, store=store_snapshots(settings, ts.as_of) if training_set is None else None)
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ")
    written = result.write(out_dir or Path(settings.reports_dir) / f"backtest-{stamp}")
    return result, written

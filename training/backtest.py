"""Walk-forward backtest: at each cutoff, train on markets resolved before it, forecast the snapshots
of the following period, and score model vs market price, calibration and a betting rule.

Betting rule (per forecast snapshot, fixed stake ``S``, fee as a fraction of the stake):
- buy YES at the price when ``model - price > edge``: pnl = S * (y / price - 1) - fee * S
- buy NO at ``1 - price`` when ``price - model > edge``: pnl = S * ((1 - y) / (1 - price) - 1) - fee * S
Snapshots of one market are bet on repeatedly (one bet per snapshot), so bets are correlated.

Cutoffs are in event time: a period's model sees the training-set rows of markets whose
``resolved_at`` precedes the cutoff. This assumes data was published when it happened; a
publication-time backtest is ``python -m training train --as-of`` per cutoff.

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

    def to_text(self) -> str:
        cols = [c for c in ("start", "end", "n", "markets", "brier_model", "brier_market", "brier_skill",
                            "mw_brier_skill", "ece_model",
                            "brier_best_achievable", "n_bets", "pnl", "roi") if c in self.periods.columns]
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 4):
            text = self.periods[cols].to_string(index=False)
        o = self.overall
        summary = (f"overall: n={o['n']} Brier model {o['brier_model']:.4f} vs market {o['brier_market']:.4f} "
                   f"(skill {o['brier_skill']:+.4f}; market-weighted {o['mw_brier_skill']:+.4f}), ECE {o['ece_model']:.4f}, bets {o['n_bets']}, "
                   f"P&L {o['pnl']:+.2f} (ROI {o['roi']:+.3f}) at edge {self.config.rule.edge}, "
                   f"stake {self.config.rule.stake}, fee {self.config.rule.fee}")
        if "brier_best_achievable" in o:
            summary += f"; best achievable Brier (truth) {o['brier_best_achievable']:.4f}"
        return text + "\n" + summary

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.periods.to_csv(out_dir / "backtest_periods.csv", index=False)
        (out_dir / "backtest_summary.json").write_text(json.dumps(
            {"overall": self.overall, "config": asdict(self.config)}, indent=2, default=str))
        return out_dir


def cutoffs_for(frame: pd.DataFrame, n_periods: int) -> list[pd.Timestamp]:
    """n_periods + 1 boundaries: the forecast periods split the later half of the snapshot times
    evenly (the first half is the initial training history)."""
    ts = frame["ts"]
    start = ts.quantile(0.5)
    edges = pd.date_range(start.floor("s"), ts.max().floor("s") + pd.Timedelta(seconds=1), periods=n_periods + 1)
    return [e.ceil("s") for e in edges]


def run(ts: "TrainingSet", config: BacktestConfig | None = None, truth: pd.DataFrame | None = None) -> BacktestResult:
    from training.pipeline import fit_model, predict_proba

    config = config or BacktestConfig()
    frame = ts.frame
    if truth is not None:
        frame = frame.merge(truth[["market_id", "ts", "true_probability"]], on=["market_id", "ts"], how="left",
                            validate="one_to_one")
    edges = cutoffs_for(frame, config.n_periods)
    rows, forecasts = [], []
    for start, end in zip(edges[:-1], edges[1:]):
        train = frame[frame["resolved_at"] < start]
        test = frame[(frame["ts"] >= start) & (frame["ts"] < end)]
        if train["market_id"].nunique() < config.min_train_markets or test.empty or train["label"].nunique() < 2:
            rows.append({"start": start, "end": end, "n": int(len(test)), "skipped":
                         f"{train['market_id'].nunique()} markets resolved before the cutoff "
                         f"(< {config.min_train_markets}) or no snapshots in the period"})
            continue
        model = fit_model(config.spec, train, ts.feature_names)
        p = predict_proba(model, test, ts.feature_names)
        rows.append({"start": start, "end": end, "train_markets": int(train["market_id"].nunique()),
                     **period_metrics(test, p, config.rule)})
        forecasts.append(test.assign(_p=p))
    if not forecasts:
        raise ValueError(f"backtest: no period had enough history ({config.min_train_markets} resolved markets); "
                         "use fewer periods or more data")
    scored = pd.concat(forecasts, ignore_index=True)
    overall = period_metrics(scored, scored["_p"].to_numpy(), config.rule)
    return BacktestResult(periods=pd.DataFrame(rows), overall=overall, config=config)


def backtest(settings: "Settings", as_of: str | None = None, config: BacktestConfig | None = None,
             truth_path: Path | None = None, out_dir: Path | None = None,
             training_set: "TrainingSet | None" = None) -> tuple[BacktestResult, Path]:
    """Build the training set (through Feast), run the walk-forward backtest, write CSV + JSON."""
    from training.data import build_training_set

    ts = training_set or build_training_set(settings, as_of)
    truth = pd.read_parquet(truth_path) if truth_path else None
    result = run(ts, config, truth)
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ")
    written = result.write(out_dir or Path(settings.reports_dir) / f"backtest-{stamp}")
    return result, written

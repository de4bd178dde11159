"""Forecast quality: Brier, log loss, ROC AUC, ECE, Brier skill vs the market price; slices; plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

EPS = 1e-6
PHASES = ("early", "active", "late")


def brier(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> float:
    return float(np.average((np.asarray(p, float) - np.asarray(y, float)) ** 2, weights=weights))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, float), EPS, 1 - EPS)
    y = np.asarray(y, float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def ece(y: np.ndarray, p: np.ndarray, n_bins: int = 10, weights: np.ndarray | None = None) -> float:
    """Expected calibration error: |mean(p) - mean(y)| per equal-width bin, weighted by bin size
    (bin weight when ``weights`` are given)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    w = np.ones_like(p) if weights is None else np.asarray(weights, float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += w[m].sum() * abs(np.average(p[m], weights=w[m]) - np.average(y[m], weights=w[m]))
    return float(total / w.sum())


def forecast_metrics(y: np.ndarray, p: np.ndarray, market: np.ndarray,
                     market_ids: np.ndarray | None = None) -> dict[str, float]:
    """All metrics of forecast ``p``; ``brier_skill`` = 1 - Brier(p) / Brier(market price).

    With ``market_ids``, also ``mw_*``: the same with every *market* weighted equally (rows
    weighted 1 / snapshots of their market). All snapshots of a market share one outcome, so
    row-weighted scores are dominated by a few long markets; market-weighted ones are the
    lower-variance estimate of forecast quality per market.
    """
    b, bm = brier(y, p), brier(y, market)
    out = {"brier": b, "log_loss": log_loss(y, p), "roc_auc": roc_auc(y, p), "ece": ece(y, p),
           "brier_market": bm, "brier_skill": float(1 - b / bm) if bm > 0 else float("nan"),
           "n": int(len(y))}
    if market_ids is not None:
        ids = pd.Series(np.asarray(market_ids))
        w = (1.0 / ids.map(ids.value_counts())).to_numpy(dtype=float)
        mb, mbm = brier(y, p, w), brier(y, market, w)
        out.update({"mw_brier": mb, "mw_brier_market": mbm, "mw_ece": ece(y, p, weights=w),
                    "mw_brier_skill": float(1 - mb / mbm) if mbm > 0 else float("nan")})
    return out


def lifecycle_phase(frame: pd.DataFrame) -> pd.Series:
    """early / active / late by the fraction of the market's lifetime elapsed at ts."""
    life = (frame["resolved_at"] - frame["created_at"]).dt.total_seconds()
    elapsed = (frame["ts"] - frame["created_at"]).dt.total_seconds()
    frac = (elapsed / life.where(life > 0)).clip(0, 1).fillna(1.0)
    return pd.cut(frac, [-0.01, 1 / 3, 2 / 3, 1.01], labels=list(PHASES)).astype(str)


def slice_table(frame: pd.DataFrame, p: np.ndarray) -> pd.DataFrame:
    """Metrics per event_type, platform and lifecycle phase (one row per slice value)."""
    work = frame.assign(_p=p, phase=lifecycle_phase(frame))
    rows = []
    for column in ("event_type", "platform", "phase"):
        if column not in work.columns:
            continue
        for value, part in work.groupby(column, observed=True, dropna=False):
            m = forecast_metrics(part["label"].to_numpy(), part["_p"].to_numpy(), part["price"].to_numpy())
            rows.append({"slice": column, "value": str(value), **m})
    return pd.DataFrame(rows)


def reliability_diagram(y: np.ndarray, forecasts: dict[str, np.ndarray], path: Path, n_bins: int = 10) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for name, p in forecasts.items():
        bins = np.minimum((np.asarray(p) * n_bins).astype(int), n_bins - 1)
        xs = [np.mean(p[bins == b]) for b in range(n_bins) if (bins == b).any()]
        ys = [np.mean(y[bins == b]) for b in range(n_bins) if (bins == b).any()]
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {ece(y, p):.3f})")
    ax.set_xlabel("forecast probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability on validation markets")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def permutation_importance_plot(model, frame: pd.DataFrame, feature_names: list[str], path: Path,
                                seed: int = 0, n_repeats: int = 3, max_rows: int = 3000) -> pd.DataFrame:
    """Permutation importance (drop in Brier score) on validation rows; bar plot to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.inspection import permutation_importance

    sample = frame.sample(n=min(max_rows, len(frame)), random_state=seed) if len(frame) > max_rows else frame
    result = permutation_importance(model, sample[feature_names], sample["label"].to_numpy(),
                                    scoring="neg_brier_score", n_repeats=n_repeats, random_state=seed)
    table = (pd.DataFrame({"feature": feature_names, "importance_mean": result.importances_mean,
                           "importance_std": result.importances_std})
             .sort_values("importance_mean", ascending=False).reset_index(drop=True))
    fig, ax = plt.subplots(figsize=(6, max(3, 0.3 * len(table))))
    ax.barh(table["feature"][::-1], table["importance_mean"][::-1], xerr=table["importance_std"][::-1])
    ax.set_xlabel("increase in Brier score when permuted")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return table

"""Leak-free splits: whole markets only, ordered by resolution time.

Snapshots of one market share its label, so a market in both train and validation leaks the
outcome. The latest-resolved markets validate, which mimics forecasting markets that resolve
after the model was trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    cutoff: pd.Timestamp          # resolved_at of the last training market

    def describe(self) -> dict:
        return {"train_rows": len(self.train), "valid_rows": len(self.valid),
                "train_markets": int(self.train["market_id"].nunique()),
                "valid_markets": int(self.valid["market_id"].nunique()),
                "train_resolved_max": str(self.cutoff)}


def split_by_resolution(frame: pd.DataFrame, valid_fraction: float = 0.25) -> Split:
    """Markets sorted by (resolved_at, market_id); the last ``valid_fraction`` of them validate."""
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    order = (frame[["market_id", "resolved_at"]].drop_duplicates("market_id")
             .sort_values(["resolved_at", "market_id"], kind="mergesort")["market_id"].to_numpy())
    n_valid = max(1, int(round(len(order) * valid_fraction)))
    if n_valid >= len(order):
        raise ValueError(f"need at least 2 markets to split, got {len(order)}")
    valid_ids = set(order[-n_valid:])
    is_valid = frame["market_id"].isin(valid_ids).to_numpy()
    train, valid = frame[~is_valid].reset_index(drop=True), frame[is_valid].reset_index(drop=True)
    return Split(train=train, valid=valid, cutoff=train["resolved_at"].max())


def market_group_folds(frame: pd.DataFrame, n_splits: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold-style folds over rows, grouped by market (no market in two folds' train+test)."""
    from sklearn.model_selection import GroupKFold

    groups = frame["market_id"].to_numpy()
    n_markets = len(np.unique(groups))
    if n_markets < n_splits:
        raise ValueError(f"{n_splits} folds need at least {n_splits} markets, got {n_markets}")
    kfold = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in kfold.split(np.zeros(len(frame)), groups=groups)]

"""Domain transformers (sklearn at import time: import this module only where sklearn is needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

DERIVED = ["price_logit", "poll_gap"]
PRICE_CLIP = 1e-4


class PriceLogOdds(TransformerMixin, BaseEstimator):
    """Adds ``price_logit`` = logit(clip(price)) and ``poll_gap`` = poll_average - price.

    Trees and linear models both find the market's own log-odds easier to correct than the raw
    price near 0 and 1; the poll gap is the disagreement between polls and the market.
    """

    def __init__(self, clip: float = PRICE_CLIP):
        self.clip = clip

    def fit(self, X: pd.DataFrame, y: Any = None) -> "PriceLogOdds":
        self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        out = X.copy()
        price = out["price"].astype(float)
        p = np.clip(price.to_numpy(), self.clip, 1 - self.clip)
        out["price_logit"] = np.log(p / (1 - p))
        out["poll_gap"] = (out["poll_average"].astype(float) - price) if "poll_average" in out.columns else np.nan
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray(list(self.feature_names_in_) + DERIVED, dtype=object)

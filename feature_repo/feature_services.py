"""Feature services: exactly the features a model version consumes (tagged on the MLflow model)."""

from feast import FeatureService

from entities import OWNER
from feature_views import market_info, poll_features, price_features
from on_demand import market_derived

market_forecaster_v1 = FeatureService(
    name="market_forecaster_v1",
    features=[
        price_features,  # all 7: price, volume and the rolling features
        poll_features,  # poll_average, poll_trend, n_polls
        market_info[["event_type", "platform"]],
        market_derived,  # spread, ratio, days / log days / urgency to resolution
    ],
    description="Inputs of the market_forecaster model, v1. Changing this list means a new service (v2).",
    owner=OWNER,
    tags={"model": "market_forecaster", "version": "1"},
)

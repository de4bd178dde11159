"""On-demand features computed at request time, by the same Python code in training and serving.

`request_ts` is the moment the prediction is about: in training it is the example's `ts`
(features.retrieve sets it), online it is the request time. Mode "python" (not pandas) because
online requests are a handful of rows, where pandas overhead dominates.
"""

from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, UnixTimestamp

from entities import OWNER
from feature_views import market_info, poll_features, price_features

prediction_request = RequestSource(
    name="prediction_request",
    schema=[Field(name="request_ts", dtype=UnixTimestamp,
                  description="Time the prediction is made for (UTC).", tags={"owner": OWNER})],
    description="Request-time inputs: the timestamp a prediction is made for.",
    owner=OWNER,
    tags={"layer": "request"},
)

DERIVED_FEATURES = {
    "poll_market_spread": "poll_average - price (null without a poll or a price).",
    "poll_market_ratio": "poll_average / price (null when price is 0 or missing, or the ratio overflows).",
    "days_to_resolution": "Days from request_ts to the scheduled resolution_date (0 once past it).",
    "log_days_to_resolution": "log(1 + days_to_resolution).",
    "resolution_urgency": "1 / (1 + days_to_resolution), in (0, 1].",
}


@on_demand_feature_view(
    sources=[price_features[["price"]], poll_features[["poll_average"]], market_info[["resolution_date"]],
             prediction_request],
    # Feast 0.67 compares these Fields to ones it infers by running the UDF, and Field equality
    # includes description and tags, which inferred fields never have: a described output field
    # fails `feast apply` (SpecifiedFeaturesNotPresentError). Per-feature docs live in the view's tags.
    schema=[Field(name=name, dtype=Float64) for name in DERIVED_FEATURES],
    mode="python",
    description="Poll-market disagreement and time to resolution, computed at request time.",
    owner=OWNER,
    tags={"team": "ml-platform", "kind": "derived",
          **{f"description.{name}": text for name, text in DERIVED_FEATURES.items()},
          **{f"owner.{name}": OWNER for name in DERIVED_FEATURES}},
)
def market_derived(inputs: dict) -> dict:
    # Feast stores this function's SOURCE in the registry and re-executes it alone (only pd/np
    # in scope) at retrieval time, so everything it needs is defined inside it.
    import math
    from datetime import datetime, timezone

    def epoch_seconds(value):
        if value is None:
            return None
        if isinstance(value, datetime):
            if value != value:  # NaT
                return None
            if value.tzinfo is None:  # Feast passes UTC values without tzinfo on some paths
                value = value.replace(tzinfo=timezone.utc)
            return value.timestamp()
        if isinstance(value, (int, float)):
            return None if value != value else float(value)
        raise TypeError(f"market_derived: expected a timestamp, got {type(value).__name__}: {value!r}")

    def number(value):
        if value is None:
            return None
        value = float(value)
        return value if math.isfinite(value) else None

    out = {"poll_market_spread": [], "poll_market_ratio": [], "days_to_resolution": [],
           "log_days_to_resolution": [], "resolution_urgency": []}
    # Batch (non-singleton) python mode: every input is a list with one entry per row.
    for price, poll, resolution, request_ts in zip(inputs["price"], inputs["poll_average"],
                                                   inputs["resolution_date"], inputs["request_ts"]):
        price, poll = number(price), number(poll)
        spread = poll - price if price is not None and poll is not None else None
        ratio = poll / price if spread is not None and price > 0 else None
        if ratio is not None and not math.isfinite(ratio):  # a price near 0 (e.g. 5e-324) overflows
            ratio = None
        resolution_s, request_s = epoch_seconds(resolution), epoch_seconds(request_ts)
        if resolution_s is None or request_s is None:
            days = log_days = urgency = None
        else:
            # Past the scheduled date (a late resolution) counts as 0 days left, not negative.
            days = max(resolution_s - request_s, 0.0) / 86400.0
            log_days = math.log1p(days)
            urgency = 1.0 / (1.0 + days)
        out["poll_market_spread"].append(spread)
        out["poll_market_ratio"].append(ratio)
        out["days_to_resolution"].append(days)
        out["log_days_to_resolution"].append(log_days)
        out["resolution_urgency"].append(urgency)
    return out

"""Feature views over the offline store. TTLs are part of the model contract (docs/feature_store.md).

A TTL bounds how old a value may be and still be joined: in training (historical retrieval) a
value older than `ts - ttl` is null, and online reads of such a value report it as expired.
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64, String, UnixTimestamp

from data_sources import market_info_source, markets_source, poll_features_source, price_ticks_push
from entities import OWNER, market

# Snapshots arrive about daily; a price more than 3 days old describes a market that has
# moved on, so training sees null (as serving would) rather than a stale value.
PRICE_TTL = timedelta(days=3)
# Polls arrive every 1-3 days (simulated and real feeds); poll_trend is itself a 7-day window, so a
# poll average more than a week old is no longer a current poll signal.
POLL_TTL = timedelta(days=7)
# Market attributes persist until a new version changes them; 10 years > any market's lifetime.
MARKET_INFO_TTL = timedelta(days=3650)
# A resolution is final: its marker stays valid as long as the market's attributes.
RESOLUTION_TTL = timedelta(days=3650)


def _field(name: str, dtype, description: str, **tags: str) -> Field:
    return Field(name=name, dtype=dtype, description=description, tags={"owner": OWNER, **tags})


price_features = FeatureView(
    name="price_features",
    entities=[market],
    ttl=PRICE_TTL,
    schema=[
        _field("price", Float64, "Last traded price: the market-implied P(outcome=1), in [0, 1].", kind="raw"),
        _field("volume_24h", Float64, "Traded volume over the 24 h before the snapshot.", kind="raw"),
        _field("price_change_1d", Float64, "price minus the price 1 day earlier (time-based window).",
               kind="rolling", window="1d"),
        _field("price_change_7d", Float64, "price minus the price 7 days earlier (time-based window).",
               kind="rolling", window="7d"),
        _field("price_volatility_7d", Float64, "Std-dev of price over the preceding 7 days.",
               kind="rolling", window="7d"),
        _field("price_volatility_30d", Float64, "Std-dev of price over the preceding 30 days.",
               kind="rolling", window="30d"),
        _field("volume_mean_7d", Float64, "Mean volume_24h over the preceding 7 days.",
               kind="rolling", window="7d"),
    ],
    source=price_ticks_push,  # batch source: price_features Parquet; live ticks via the push source
    online=True,
    description="Market price and volume with rolling features (ingestion/rolling.py).",
    owner=OWNER,
    tags={"team": "ml-platform", "source_table": "price_features"},
)

poll_features = FeatureView(
    name="poll_features",
    entities=[market],
    ttl=POLL_TTL,
    schema=[
        _field("poll_average", Float64, "Poll average: polled P(outcome=1), in [0, 1].", kind="raw"),
        _field("poll_trend", Float64, "Change of poll_average over the preceding 7 days, in [-1, 1].",
               kind="raw"),
        _field("n_polls", Int64, "Number of polls in the average.", kind="raw"),
    ],
    source=poll_features_source,
    online=True,
    description="Polling signal for markets that have polls (null for the others).",
    owner=OWNER,
    tags={"team": "ml-platform", "source_table": "poll_features"},
)

market_info = FeatureView(
    name="market_info",
    entities=[market],
    ttl=MARKET_INFO_TTL,
    schema=[
        _field("event_type", String, "Category: election, sports, economics, crypto, weather, science, other.",
               kind="attribute"),
        _field("platform", String, "Exchange the market trades on (polymarket, kalshi, ...).", kind="attribute"),
        _field("created_at", UnixTimestamp, "When the market was created.", kind="attribute"),
        _field("resolution_date", UnixTimestamp,
               "Scheduled resolution as known at the row's event time (creation value, then corrections).",
               kind="attribute"),
    ],
    source=market_info_source,
    online=True,
    description="Market attributes as of event time (creation row at created_at, versions at updated_at).",
    owner=OWNER,
    tags={"team": "ml-platform", "source_table": "market_info"},
)

# LABEL view, never part of a FeatureService: outcome is what the model predicts and resolved_at says
# it is known; the contract keeps both labels, never features (docs/architecture.md). Every training
# example precedes its market's resolution, so as features they would be null in training and only
# ever set online (skew, with the answer in it). The view exists so serving can tell a resolved
# market (evicted from every feature view) from an unknown one: features.resolved writes the marker
# when it evicts a market and reads it (resolution_markers). Tag role=label: features.materialize
# does not materialize it (eviction is its one writer).
market_resolution = FeatureView(
    name="market_resolution",
    entities=[market],
    ttl=RESOLUTION_TTL,
    schema=[
        _field("resolved_at", UnixTimestamp, "When the market resolved (label; null while open).",
               kind="label"),
        _field("outcome", Int64, "Resolved outcome, 0 or 1 (label; null while open).", kind="label"),
    ],
    source=markets_source,
    online=True,
    description="Resolution marker of resolved markets (a label, not a feature): written online by eviction.",
    owner=OWNER,
    tags={"team": "ml-platform", "source_table": "markets", "role": "label"},
)

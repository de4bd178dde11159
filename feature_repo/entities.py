"""Entities: the keys features are joined on."""

from feast import Entity, ValueType

OWNER = "ml-platform@prediction-markets.example"

market = Entity(
    name="market",
    join_keys=["market_id"],
    value_type=ValueType.STRING,
    description="A prediction market (one question with a binary outcome), keyed by its producer's market_id.",
    owner=OWNER,
    tags={"domain": "markets", "pii": "false"},
)

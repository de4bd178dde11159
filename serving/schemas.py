"""Request and response bodies of the prediction service (they define the OpenAPI schema)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

Source = Literal["model", "fallback_model", "market_price"]
ModelRole = Literal["champion", "challenger", "fallback"]
AbGroup = Literal["A", "B"]
MarketStatus = Literal["open", "past_resolution_date", "unknown"]

# The data contract (DATA_CONTRACT.md, markets.market_id): a non-empty string of at most 128 characters.
# Anything ingestion stores must be servable, so no character class beyond refusing control characters
# (C0, DEL, C1), which no id needs and which break logs and terminals.
MARKET_ID_MAX_LENGTH = 128
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MARKET_ID = Field(min_length=1, max_length=MARKET_ID_MAX_LENGTH,
                  description="The market's id (the `market` entity key in Feast): any non-empty string of at "
                              "most 128 characters without control characters, as the data contract allows.",
                  examples=["mkt-000042"], json_schema_extra={"pattern": r"^[^\x00-\x1f\x7f-\x9f]+$"})
# strict: a JSON number only (true or "0.5" are refused, not coerced); JSON integers 0 and 1 are numbers.
MARKET_PRICE = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False, strict=True,
                     description="Optional fresh market price in [0, 1], known at request time. It replaces "
                                 "the stored `price` feature and the on-demand features derived from it.",
                     examples=[0.62])


# extra="forbid" makes every unknown field its own error: ~90 000 of them fit in a 1 MB body and took
# ~1 s of the event loop to report. Past this many, one error names the first few and the count.
MAX_UNKNOWN_FIELDS = 20


def _few_unknown_fields(cls, data):
    if isinstance(data, dict) and len(data) > len(cls.model_fields) + MAX_UNKNOWN_FIELDS:
        unknown = [k for k in data if k not in cls.model_fields]
        if len(unknown) > MAX_UNKNOWN_FIELDS:
            first = ", ".join(repr(k if len(k) <= 40 else k[:40] + "...") for k in unknown[:5])
            raise ValueError(f"{len(unknown)} unknown fields (the first: {first}); the known fields are "
                             f"{', '.join(cls.model_fields)}")
    return data


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"market_id": "mkt-000042"}, {"market_id": "mkt-000042", "market_price": 0.62}]})

    market_id: str = MARKET_ID
    market_price: float | None = MARKET_PRICE

    _few_unknown_fields = model_validator(mode="before")(classmethod(_few_unknown_fields))

    @field_validator("market_id")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        bad = CONTROL_CHARACTERS.search(value)
        if bad:
            raise ValueError(f"market_id must not contain control characters; found {bad.group()!r} at "
                             f"position {bad.start()}")
        return value


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"items": [{"market_id": "mkt-000042"}, {"market_id": "mkt-000043", "market_price": 0.3}]}]})

    items: list[PredictRequest] = Field(min_length=1, description="Markets to score (at most the service's "
                                                                  "max_batch_size, see GET /model).")

    _few_unknown_fields = model_validator(mode="before")(classmethod(_few_unknown_fields))


def batch_request_model(max_items: int) -> type[BatchRequest]:
    """BatchRequest with the service's max_batch_size (a runtime option) as `items`' maxItems.

    The count is checked before any item is validated: validating (and reporting) every item of an
    oversized batch first took seconds of the event loop for a few MB of bad items."""

    def at_most(cls, value):
        if isinstance(value, list) and len(value) > max_items:
            raise ValueError(f"batch has {len(value)} markets; the maximum is {max_items} (split it into "
                             f"several requests)")
        return value

    return create_model(
        "BatchRequest", __base__=BatchRequest,
        __validators__={"items_at_most": field_validator("items", mode="before")(at_most)},
        items=(list[PredictRequest], Field(min_length=1, max_length=max_items,
                                           description=f"Markets to score (at most {max_items}, the service's "
                                                       f"max_batch_size).")))


class FeatureInfo(BaseModel):
    value: float | int | str | None = Field(description="Value given to the model (null: missing, imputed by the model).")
    status: str = Field(description="PRESENT, NOT_FOUND, NULL_VALUE, OUTSIDE_MAX_AGE (older than its TTL), "
                                    "NON_FINITE (stored or computed as +/-infinity: withheld, imputed by the "
                                    "model, with a warning), or REQUEST (supplied / recomputed from request values).")
    age_seconds: float | None = Field(description="Request time minus the value's event time (null: no value).")
    ttl_seconds: float | None = Field(description="Max age the model contract allows (null: no limit).")


class Prediction(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), json_schema_extra={"examples": [{
        "request_id": "7d4b0b8e6f1d4c1fb7b8f1c7d9e2a001", "market_id": "mkt-000042", "probability": 0.71,
        "source": "model", "model_version": "3", "model_role": "champion", "feature_service": "market_forecaster_v1",
        "ab_group": None, "market_status": "open",
        "features": {"price": {"value": 0.66, "status": "PRESENT", "age_seconds": 3600.0, "ttl_seconds": 259200.0}},
        "warnings": [], "latency_ms": 3.1}]})

    request_id: str
    market_id: str
    probability: float = Field(ge=0.0, le=1.0, description="P(outcome = 1).")
    source: Source = Field(description="model: the champion (or, in A/B group B, the challenger); fallback_model: "
                                       "the previous champion after the model failed; market_price: the price "
                                       "passed through after the models failed.")
    model_version: str | None = Field(description="Registry version that produced the probability (null for market_price).")
    model_role: ModelRole = Field(description="Which served model answered: champion, challenger (A/B group B) "
                                              "or fallback (previous champion, or the market price).")
    feature_service: str | None
    ab_group: AbGroup | None = Field(default=None, description="A/B split group of the market (sticky by "
                                     "market_id): A champion, B challenger; null when no A/B split runs.")
    market_status: MarketStatus
    features: dict[str, FeatureInfo]
    warnings: list[str]
    latency_ms: float


class BatchItemError(BaseModel):
    index: int
    market_id: str
    status_code: int = Field(description="What /predict would have answered for this market (404 unknown, "
                                         "410 resolved, 503).")
    detail: str


class BatchResponse(BaseModel):
    predictions: list[Prediction] = Field(description="Scored markets, in request order.")
    errors: list[BatchItemError] = Field(description="Markets that could not be scored, with the reason.")
    latency_ms: float


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    alias: str
    feature_service: str
    feature_names: list[str]
    artifact_sha256: str
    run_id: str
    scorer: Literal["compiled", "sklearn"] = Field(
        description="compiled: a numpy re-expression of the pipeline, served only after it matched the sklearn "
                    "pipeline on probe and served rows; sklearn: the pipeline itself")
    scorer_detail: str
    training_metrics: dict[str, float] = Field(description="Headline metrics of the training run (empty when "
                                                           "they could not be read: see warnings).")
    lineage: dict[str, str]
    warnings: list[str] = Field(default_factory=list, description="What could not be shown, and why (e.g. the "
                                                                    "tracking server did not answer).")


class ModelsResponse(BaseModel):
    champion: ModelInfo | None
    fallback: ModelInfo | None
    challenger: ModelInfo | None
    loaded_at: str | None
    last_error: str | None
    max_batch_size: int


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    model_loaded: bool
    online_store_reachable: bool
    detail: list[str] = Field(description="Why not ready (503); on a 200, what still needs attention, e.g. a "
                                          "new champion refused while the previous one keeps serving.")


class ReloadResponse(BaseModel):
    changed: bool
    champion_version: str | None
    fallback_version: str | None
    detail: str


class ErrorBody(BaseModel):
    detail: str | list | dict
    error_count: int | None = Field(default=None, description="422 only: how many validation errors the body "
                                                               "had (`detail` lists at most the first 20).")

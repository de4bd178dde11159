"""The FastAPI prediction service. Build it with :func:`create_app`; `python -m serving` runs it under uvicorn.

At start-up (lifespan, once per worker): one Feast FeatureStore, the `champion` loaded with its sha256
checked, the FeatureService it was trained with (its `feature_service` tag) served exactly, the
previous champion as fallback, the prediction-log writer and the champion poller started. At
shutdown the poller stops and the log writer drains its queue.
"""

from __future__ import annotations

import email.message
import hmac
import json
import logging
import math
from contextlib import asynccontextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from config.settings import Settings, get_settings
from serving.features_source import FeastFeatureSource, FeatureStoreUnavailable
from serving.metrics import ServingMetrics
from serving.models import ModelManager, bound_mlflow_requests
from serving.options import ServingOptions
from serving.prediction_log import PredictionLogWriter
from serving.predictor import Predictor, ServiceUnavailable
from serving.schemas import (BatchRequest, BatchResponse, ErrorBody, Health, ModelInfo, ModelsResponse, Prediction,
                             PredictRequest, Readiness, ReloadResponse, batch_request_model)

log = logging.getLogger(__name__)

LINEAGE_TAGS = ("feature_service", "training_set_hash", "raw_data_hash", "git_commit", "as_of", "seed",
                "parent_version", "run_id", "promoted_at", "previous_champion", "gates_passed")
ENDPOINTS = {"/predict", "/predict/batch", "/health", "/ready", "/metrics", "/model", "/admin/reload"}


@dataclass
class Service:
    settings: Settings
    options: ServingOptions
    features: FeastFeatureSource
    models: ModelManager
    log_writer: PredictionLogWriter
    predictor: Predictor
    metrics: ServingMetrics
    run_metrics: dict[str, dict[str, float]]


def _error(status: int, text: str) -> dict[str, Any]:
    return {status: {"model": ErrorBody, "description": text}}


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead): request count and latency per endpoint and status."""

    def __init__(self, app, metrics: ServingMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = perf_counter(), [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            endpoint = path if path in ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint=endpoint, status=str(status[0])).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(perf_counter() - started)


class BodyLimitMiddleware:
    """Pure ASGI: a request body over `limit` bytes gets a 413 naming the limit before anything parses it.

    FastAPI reads the whole body, parses it and validates it on the event loop: a few MB of bad
    batch items held every other request (even /health) for seconds. A Content-Length over the
    limit is refused before reading; a body without one (chunked) is counted as it arrives and
    refused as soon as it passes the limit. The body read here (at most `limit` bytes) is handed
    on to the app unchanged."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.limit:
            return await self._refuse(send, f"{int(declared)} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send, f"more than {self.limit} bytes (so far)")
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, as the server sends it

        await self.app(scope, replay, send)

    async def _refuse(self, send, size: str) -> None:
        text = json.dumps({"detail": f"request body too large: {size}; this service accepts at most {self.limit} "
                                     f"bytes (serving option max_body_bytes)"})
        # connection: close: the rest of the body is never read, so the connection cannot be reused.
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(text)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": text.encode()})


def create_app(settings: Settings | None = None, options: ServingOptions | None = None) -> FastAPI:
    options = options or ServingOptions.from_json((settings or get_settings()).serving_options)
    metrics = ServingMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        s = settings or get_settings()
        bound_mlflow_requests()
        features = FeastFeatureSource(s, timeout_s=options.online_timeout_s)
        models = ModelManager(s, check_service=lambda name: features.plan(name).feature_names,
                              load_fallback=options.load_fallback, load_challenger=options.load_challenger)
        result = models.reload()
        log.info("start-up: %s", result.detail)
        writer = PredictionLogWriter(s.prediction_log_dir, options.log_queue_size, options.log_flush_interval_s,
                                     options.log_flush_rows)
        writer.start()
        metrics.add_log_gauges(lambda: writer.dropped, writer.queued, lambda: writer.write_errors)
        predictor = Predictor(features, models, metrics, writer, options)
        app.state.service = Service(s, options, features, models, writer, predictor, metrics, {})
        models.start_polling(options.poll_interval_s)
        try:
            yield
        finally:
            models.stop()
            predictor.close()  # pending shadow predictions reach the log before it closes
            writer.close()

    app = FastAPI(
        title="Prediction-market forecaster",
        version="1.0.0",
        description="P(outcome = 1) for prediction markets from the `champion` model of the MLflow registry "
                    "and the Feast online features of the FeatureService it was trained with. Every "
                    "prediction says its source (model, fallback_model, market_price); nothing is made up.",
        lifespan=lifespan,
    )
    app.state.options = options
    app.add_middleware(BodyLimitMiddleware, limit=options.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: 413s are counted too
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    bearer = HTTPBearer(auto_error=False, description="PM_ADMIN_TOKEN")

    def service(request: Request) -> Service:
        return request.app.state.service

    @app.post("/predict", response_model=Prediction, summary="Forecast one market",
              responses={**_error(404, "Unknown market."),
                         **_error(410, "The market has resolved (when, and its outcome): no forecast."),
                         **_error(413, "Request body larger than the service's max_body_bytes."),
                         **_error(422, "Invalid request body."),
                         **_error(503, "No model, online store unreachable, or no model output and no price.")})
    def predict(body: PredictRequest, svc: Service = Depends(service)) -> Response:
        scored = _score(svc, [body])
        if scored.errors:
            err = scored.errors[0]
            raise HTTPException(err.status_code, err.detail)
        response = _json(scored.predictions[0][1])
        svc.predictor.commit(scored)  # logged only once the answer exists
        return response

    def predict_batch(body: BatchRequest, svc: Service = Depends(service)) -> Response:
        started = perf_counter()
        scored = _score(svc, body.items)
        response = _json({
            "predictions": [p for _, p in scored.predictions],
            "errors": [{"index": e.index, "market_id": e.market_id, "status_code": e.status_code, "detail": e.detail}
                       for e in scored.errors],
            "latency_ms": round((perf_counter() - started) * 1000.0, 3)})
        svc.predictor.commit(scored)
        return response

    # The request model carries this app's max_batch_size, so an oversized batch is refused before
    # any item is validated. Annotations are strings here (`from __future__ import annotations`),
    # resolved in module globals, hence the per-app model is set on the function before routing it.
    predict_batch.__annotations__["body"] = batch_request_model(options.max_batch_size)
    app.post("/predict/batch", response_model=BatchResponse, summary="Forecast many markets at once",
             description="One online-store read and one model call for all items. Markets that cannot be "
                         "scored are listed in `errors` with what /predict would have answered.",
             responses={**_error(413, "Request body larger than the service's max_body_bytes."),
                        **_error(422, "Invalid body, or more items than max_batch_size."),
                        **_error(503, "No model or online store unreachable.")})(predict_batch)

    @app.get("/health", response_model=Health, summary="Liveness: the process answers")
    def health() -> Health:
        return Health(status="ok")

    @app.get("/ready", response_model=Readiness, summary="Readiness: model loaded and online store reachable",
             responses={503: {"model": Readiness, "description": "Not ready; `detail` says why."}})
    def ready(svc: Service = Depends(service)):
        detail = []
        state = svc.models.state
        if state.champion is None:
            detail.append("no champion model loaded" + (f": {state.last_error}" if state.last_error else ""))
        elif state.refused_version is not None:  # still ready (a verified model serves), but say so
            detail.append(state.last_error or f"champion v{state.refused_version} refused")
        reachable = True
        try:
            svc.features.ping()
        except FeatureStoreUnavailable as exc:
            reachable = False
            detail.append(str(exc))
        ok = state.champion is not None and reachable
        body = Readiness(ready=ok, model_loaded=state.champion is not None, online_store_reachable=reachable,
                         detail=detail)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)",
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}})
    def prometheus_metrics(svc: Service = Depends(service)) -> Response:
        state = svc.models.state
        svc.metrics.set_models({role: (m.version, m.feature_service) if m is not None else None
                                for role, m in (("champion", state.champion), ("fallback", state.fallback),
                                                ("challenger", state.challenger))})
        svc.metrics.set_champion_refused(state.refused_version)
        return Response(svc.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/model", response_model=ModelsResponse, summary="Served models: versions, FeatureService, "
                                                              "training metrics, lineage")
    def model_info(svc: Service = Depends(service)) -> ModelsResponse:
        state = svc.models.state
        return ModelsResponse(
            champion=_model_info(svc, state.champion, "champion"),
            fallback=_model_info(svc, state.fallback, "fallback (previous champion)"),
            challenger=_model_info(svc, state.challenger, "challenger"),
            loaded_at=state.loaded_at.isoformat() if state.loaded_at else None,
            last_error=state.last_error, max_batch_size=svc.options.max_batch_size)

    @app.post("/admin/reload", response_model=ReloadResponse, summary="Re-read the champion alias now",
              description="Loads and checks a new champion in the background of serving (requests keep "
                          "being answered by the current one) and swaps it in atomically. Needs "
                          "`Authorization: Bearer <PM_ADMIN_TOKEN>`; with an empty token admin is disabled.",
              responses={**_error(401, "Missing or wrong bearer token."),
                         **_error(403, "Admin endpoints disabled (PM_ADMIN_TOKEN is empty)."),
                         **_error(503, "Model registry unreachable: aliases not read, current models kept.")})
    def admin_reload(svc: Service = Depends(service),
                     credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> ReloadResponse:
        _check_admin(svc.settings, credentials)
        result = svc.models.reload()
        if result.registry_unreachable:
            raise HTTPException(503, f"{result.detail}; still serving champion v{result.champion_version}"
                                if result.champion_version else result.detail)
        return ReloadResponse(changed=result.changed, champion_version=result.champion_version,
                              fallback_version=result.fallback_version, detail=result.detail)

    return app


def _json(body: dict) -> Response:
    # Prediction bodies are built as dicts in the shape of serving/schemas.py (the schemathesis test
    # validates them against the OpenAPI spec); response_model documents them. allow_nan=False: a NaN
    # would be invalid JSON, so it fails loudly instead (the predictor withholds non-finite feature
    # values, so none reaches here), and before anything is logged (Predictor.commit runs after this).
    return Response(json.dumps(body, allow_nan=False), media_type="application/json")


NON_FINITE_NOTE = ("a non-finite number (NaN, Infinity, -Infinity, or a literal too large for a 64-bit float "
                   "such as 1e999) is not a valid JSON number (RFC 8259) anywhere in the body: send a finite number")


NOT_ECHOED = "(not echoed: nested too deeply)"


def _is_json(content_type: str) -> bool:
    """FastAPI's own test (fastapi/routing.py): application/json or application/*+json."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _printable(value: Any) -> tuple[Any, bool]:
    """`value` with every non-finite float replaced by its JSON-ish name ("NaN", "Infinity", "-Infinity"),
    and whether there was one."""
    if isinstance(value, float) and not math.isfinite(value):
        return ("NaN" if value != value else "Infinity" if value > 0 else "-Infinity"), True
    if isinstance(value, dict):
        pairs = [(k, _printable(v)) for k, v in value.items()]
        return {k: v for k, (v, _) in pairs}, any(bad for _, (_, bad) in pairs)
    if isinstance(value, (list, tuple)):
        items = [_printable(v) for v in value]
        return [v for v, _ in items], any(bad for _, bad in items)
    return value, False


# A 422 lists at most this many errors (with the total in `error_count`), each echoed input cut to
# ECHO_CHARS characters: a body of many bad items gave an 89 MB 422 echoing every one of them.
MAX_LISTED_ERRORS = 20
ECHO_CHARS = 200


def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422 (`{"detail": [{type, loc, msg, input, ...}]}`), but always sendable, bounded and more telling.

    FastAPI's default handler echoes the input, and json.loads accepts NaN/Infinity literals (and lone
    surrogates in strings): echoing them back failed to encode and turned a bad request into a 500.
    Here non-finite inputs are echoed as strings with a note in `msg`, a raw (non-JSON) body is echoed
    with undecodable bytes escaped, the answer is ASCII-escaped JSON, and a body that was not sent as
    JSON says which Content-Type it needs. At most MAX_LISTED_ERRORS errors are listed, `error_count`
    says how many there were, and an echoed input longer than ECHO_CHARS is cut (and says so).
    A plain def: Starlette runs it in the thread pool, off the event loop."""
    content_type = request.headers.get("content-type", "")
    errors = exc.errors()
    detail = []
    for err in errors[:MAX_LISTED_ERRORS]:
        if isinstance(err.get("ctx"), dict):  # a validator's exception: its text, not FastAPI's `{}`
            err = {**err, "ctx": {k: str(v) if isinstance(v, Exception) else v for k, v in err["ctx"].items()}}
        if isinstance(err.get("input"), (bytes, bytearray)):  # a non-JSON body: jsonable_encoder's decode() fails
            err = {**err, "input": bytes(err["input"]).decode("utf-8", "backslashreplace")}
        cut, cut_non_finite = _cut(err.get("input"))
        if cut is not None:  # before jsonable_encoder, which took ~0.3 s on the 20 000 items of a refused batch
            err = {**err, "input": None}
        try:
            err, non_finite = _printable(jsonable_encoder(err))
        except RecursionError:  # a deeply nested body: name the place, do not echo the value
            err, non_finite = _printable(jsonable_encoder({**err, "input": NOT_ECHOED}))
        if cut is not None:
            err["input"], non_finite = cut, non_finite or cut_non_finite
        if any(isinstance(p, str) and len(p) > ECHO_CHARS for p in err.get("loc", ())):  # an unknown field's name
            err["loc"] = [_cut(p)[0] or p if isinstance(p, str) else p for p in err["loc"]]
        if non_finite:
            err["msg"] = f"{err.get('msg', 'Invalid value')}: {NON_FINITE_NOTE}"
        if tuple(err.get("loc", ())) == ("body",) and not _is_json(content_type):
            got = f"Content-Type {content_type!r}" if content_type else "no Content-Type header"
            err["msg"] = (f"the request body must be a JSON object sent with Content-Type: application/json "
                          f"(got {got}); {err.get('msg', '')}")
        detail.append(err)
    body = {"detail": detail, "error_count": len(errors)}
    text = json.dumps(body, allow_nan=False, ensure_ascii=True, default=repr)
    return Response(text, status_code=422, media_type="application/json")


def _cut(value: Any) -> tuple[str | None, bool]:
    """(`value` cut for a 422 echo, whether it held a non-finite number), or (None, False) when its text
    is at most ECHO_CHARS characters and it is echoed whole. The text of a list or object is its JSON,
    measured with the C encoder; the cut keeps the first ECHO_CHARS characters and says how long it was."""
    if isinstance(value, str):
        text, non_finite = value, False
    elif isinstance(value, (dict, list)):
        try:
            text, non_finite = json.dumps(value, ensure_ascii=False, allow_nan=False, default=repr), False
        except ValueError:  # NaN / Infinity inside: echoed as JSON-ish literals, and said in `msg`
            text, non_finite = json.dumps(value, ensure_ascii=False, default=repr), True
        except RecursionError:  # nested too deeply to encode: the caller's NOT_ECHOED path
            return None, False
    else:
        return None, False
    if len(text) <= ECHO_CHARS:
        return None, False
    return f"{text[:ECHO_CHARS]}... (truncated: {len(text)} characters)", non_finite


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's handler, except for the two bodies its JSON parsing fails on without a JSONDecodeError:
    bytes that are not the encoding json.loads detects (UTF-8, unless a UTF-16/32 pattern), and nesting
    deeper than the parser's recursion limit. FastAPI answers those `400 There was an error parsing the
    body` (chaining the cause); they get the documented 422 for unparseable JSON with the reason."""
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        encoding = "UTF-8" if cause.encoding.replace("-", "").lower() == "utf8" else cause.encoding.upper()
        reason = (f"body is not {encoding} at byte {cause.start} ({cause.reason}): JSON must be sent as "
                  f"UTF-8 (RFC 8259)")
        return _validation_error(request, RequestValidationError([{
            "type": "json_invalid", "loc": ("body", cause.start), "msg": f"JSON decode error: {reason}",
            "input": {}, "ctx": {"error": reason}}]))
    if exc.status_code == 400 and isinstance(cause, RecursionError):
        reason = "JSON nested too deeply: more levels of [ and { than the parser allows (a valid request needs 3)"
        return _validation_error(request, RequestValidationError([{
            "type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {reason}", "input": {},
            "ctx": {"error": reason}}]))
    return await http_exception_handler(request, exc)


def _score(svc: Service, items):
    try:
        return svc.predictor.score(items)
    except (ServiceUnavailable, FeatureStoreUnavailable) as exc:
        raise HTTPException(503, str(exc)) from exc


def _check_admin(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if not settings.admin_token:
        raise HTTPException(403, "admin endpoints are disabled: PM_ADMIN_TOKEN is empty on this server")
    if credentials is None:
        raise HTTPException(401, "missing `Authorization: Bearer <token>` header",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode(), settings.admin_token.encode()):
        raise HTTPException(401, "wrong admin token", headers={"WWW-Authenticate": "Bearer"})


def _model_info(svc: Service, model, alias: str) -> ModelInfo | None:
    if model is None:
        return None
    metrics, warnings = _run_metrics(svc, model.run_id)
    return ModelInfo(name=model.name, version=model.version, alias=alias, feature_service=model.feature_service,
                     feature_names=list(model.feature_names), artifact_sha256=model.sha256, run_id=model.run_id,
                     scorer=model.scorer, scorer_detail=model.scorer_detail,
                     training_metrics=metrics, warnings=warnings,
                     lineage={k: model.tags[k] for k in LINEAGE_TAGS if k in model.tags})


def _run_metrics(svc: Service, run_id: str) -> tuple[dict[str, float], list[str]]:
    """The run's headline training metrics, and a warning instead when they cannot be read: the
    models are served either way, so /model answers (a failed read is not cached, retried next time)."""
    if not run_id:
        return {}, []
    if run_id not in svc.run_metrics:
        from training.tracking import client

        try:
            metrics = client(svc.settings).get_run(run_id).data.metrics
        except Exception as exc:  # noqa: BLE001 - tracking server down or run deleted: say so, never a 500
            reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            return {}, [f"training metrics of run {run_id} not readable: {reason}"]
        # Slice metrics are many and live in MLflow; /model shows the headline numbers.
        svc.run_metrics[run_id] = {k: float(v) for k, v in sorted(metrics.items()) if not k.startswith("slice.")}
    return svc.run_metrics[run_id], []

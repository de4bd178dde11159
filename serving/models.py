"""Which models serve: the champion, the previous champion as fallback, and an optional shadow challenger.

All three live in one immutable :class:`ModelState`. A request reads ``manager.state`` once and uses
that object to the end, so swapping in a new state (a single attribute assignment) never changes a
model under an in-flight request. New champions are loaded and checked (artifact sha256 by
training.registry.load_verified_model, FeatureService known to Feast, features match, a test
prediction) in a background thread before the swap. The fallback is the champion's previous champion
(its tags), at start-up and on every reload alike, so a reload and a restart serve the same models.
Each loaded pipeline is also compiled to a numpy scorer (serving/compiled_model.py) and served
through it only if it reproduces the pipeline on probe and served rows; otherwise sklearn scores.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping, MutableMapping, Sequence

import numpy as np
import pandas as pd

from config.settings import Settings

if TYPE_CHECKING:
    from serving.compiled_model import CompiledModel
    from training.registry import LoadedModel

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class ServedModel:
    """A registry model as served: the verified pipeline, and its compiled scorer when that reproduces it."""

    loaded: "LoadedModel"
    compiled: "CompiledModel | None"
    scorer_detail: str                     # why this scorer (the check's result, or why not compiled)

    @property
    def scorer(self) -> str:
        return "compiled" if self.compiled is not None else "sklearn"

    name = property(lambda self: self.loaded.name)
    version = property(lambda self: self.loaded.version)
    feature_service = property(lambda self: self.loaded.feature_service)
    feature_names = property(lambda self: self.loaded.feature_names)
    sha256 = property(lambda self: self.loaded.sha256)
    run_id = property(lambda self: self.loaded.run_id)
    tags = property(lambda self: self.loaded.tags)

    def predict(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        """P(outcome = 1) per row; ``columns``: feature name -> values (None: missing)."""
        if self.compiled is not None:
            return self.compiled.predict(columns)
        return self.loaded.predict(pd.DataFrame({f: list(columns[f]) for f in self.feature_names}))


def serve_model(loaded: "LoadedModel", sample: Mapping[str, Sequence] | None = None) -> ServedModel:
    """Compile ``loaded`` and keep the compiled scorer only if it matches the pipeline on probe rows
    (and on ``sample``, real served rows); anything it cannot reproduce is scored by sklearn."""
    from serving.compiled_model import compile_pipeline, probe_columns, verify

    try:
        compiled = compile_pipeline(loaded.model)
        if compiled.input_names != list(loaded.feature_names):
            raise ValueError(f"pipeline inputs {compiled.input_names} are not the model's features")
        probe = probe_columns(compiled)
        diff = verify(compiled, loaded.model, probe)
        rows = len(probe[compiled.input_names[0]])
        if sample is not None and all(f in sample for f in compiled.input_names):
            diff = max(diff, verify(compiled, loaded.model, sample))
            rows += len(sample[compiled.input_names[0]])
        return ServedModel(loaded, compiled, f"compiled numpy scorer; max |difference| to the sklearn pipeline "
                                             f"{diff:.1g} on {rows} checked rows")
    except Exception as exc:  # noqa: BLE001 - any doubt: the sklearn pipeline itself scores
        log.warning("model v%s: scored by the sklearn pipeline (not compiled): %s", loaded.version, exc)
        return ServedModel(loaded, None, f"sklearn pipeline; not compiled: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class ModelState:
    champion: ServedModel | None = None
    fallback: ServedModel | None = None
    challenger: ServedModel | None = None
    loaded_at: datetime | None = None
    last_error: str | None = None
    # The registry's champion version while it is refused (the served models stay): /ready and the
    # pm_serving_champion_refused gauge say so; None once a champion alias is served again.
    refused_version: str | None = None


@dataclass
class ReloadResult:
    changed: bool
    champion_version: str | None
    fallback_version: str | None
    detail: str
    registry_unreachable: bool = False   # the aliases could not be read: nothing is known about them


class ModelLoadError(RuntimeError):
    """A candidate model was refused (message says which version and why)."""


class RegistryUnreachable(RuntimeError):
    """The model registry did not answer (down, timed out, refused); the message says why."""


# MLflow's HTTP defaults (7 retries with exponential back-off, 120 s timeout) keep a request waiting
# for minutes when the tracking server is down; serving wants a prompt 503 with the reason.
MLFLOW_HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def bound_mlflow_requests(environ: MutableMapping[str, str] = os.environ) -> None:
    """Small MLflow HTTP retry/timeout bounds for this process, unless the user set them."""
    for name, value in MLFLOW_HTTP_BOUNDS.items():
        environ.setdefault(name, value)


@dataclass
class ModelManager:
    """Loads models from the MLflow registry and swaps them atomically."""

    settings: Settings
    check_service: Callable[[str], list[str]]          # FeatureService name -> its feature names
    load_fallback: bool = True
    load_challenger: bool = False
    state: ModelState = field(default_factory=ModelState)
    sample_columns: dict[str, list] | None = None       # last real feature rows served (canary input)
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # ------------------------------------------------------------------ loading

    def _load(self, ref: str | int) -> ServedModel:
        from training.registry import load_verified_model

        model = serve_model(load_verified_model(self.settings.model_name, ref, self.settings), self.sample_columns)
        self._check(model)
        return model

    def _check(self, model: ServedModel) -> None:
        where = f"model '{model.name}' v{model.version}"
        if not model.feature_service:
            raise ModelLoadError(f"{where} has no feature_service tag: cannot know which features to serve it")
        try:
            service_features = self.check_service(model.feature_service)
        except LookupError as exc:
            raise ModelLoadError(f"{where}: {exc}") from exc
        missing = [f for f in model.feature_names if f not in service_features]
        if missing:
            raise ModelLoadError(f"{where} needs features {missing} that FeatureService "
                                 f"{model.feature_service!r} does not provide")
        sample = self.sample_columns
        if sample is not None and all(f in sample for f in model.feature_names):
            p = np.asarray(model.predict(sample), dtype=float)
            if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
                raise ModelLoadError(f"{where} gives invalid probabilities {p.tolist()} on served feature rows")

    def _aliases(self) -> dict[str, str]:
        """alias -> version of the registered model ({} when it is not registered yet); any other
        failure to read them raises RegistryUnreachable, never passes for "no alias"."""
        from mlflow.exceptions import MlflowException

        from training.registry import registered_aliases

        try:
            return registered_aliases(self.settings)
        except MlflowException as exc:
            raise RegistryUnreachable(f"model registry unreachable: {exc.message}") from exc
        except Exception as exc:  # noqa: BLE001 - whatever the store raised, the aliases are unknown
            raise RegistryUnreachable(f"model registry unreachable: {type(exc).__name__}: {exc}") from exc

    def _previous_champion(self, champion: ServedModel) -> str | None:
        # Only the champion it replaced when promoted: after a rollback, `rollback.from_version` names
        # the rejected version, which must never answer as the fallback.
        previous = champion.tags.get("previous_champion")
        return previous if previous and previous != champion.version else None

    def reload(self) -> ReloadResult:
        """Re-read the aliases; load, check and swap in a new champion (with its previous champion as fallback)."""
        with self._reload_lock:
            current = self.state
            try:
                registered = self._aliases()
            except RegistryUnreachable as exc:
                detail = str(exc)
                log.warning("%s; still serving v%s", detail, _v(current.champion))
                if current.champion is None:
                    self.state = ModelState(last_error=detail)
                return ReloadResult(False, _v(current.champion), _v(current.fallback), detail,
                                    registry_unreachable=True)
            version = registered.get(CHAMPION)
            if version is None:
                detail = f"registered model '{self.settings.model_name}' has no '{CHAMPION}' alias"
                if current.champion is None:
                    self.state = ModelState(last_error=detail)
                elif current.refused_version is not None:  # no champion alias: none is refused any more
                    self.state = ModelState(current.champion, current.fallback, current.challenger,
                                            current.loaded_at, current.last_error)
                return ReloadResult(False, _v(current.champion), _v(current.fallback), detail)
            challenger = self._maybe_challenger(current, registered.get(CHALLENGER))
            if current.champion is not None and current.champion.version == version:
                if challenger is not current.challenger or current.refused_version is not None:
                    self.state = ModelState(current.champion, current.fallback, challenger, current.loaded_at)
                return ReloadResult(False, version, _v(current.fallback), f"champion v{version} already served")
            try:
                champion = self._load(version)
            except Exception as exc:  # noqa: BLE001 - a bad candidate never replaces a working model
                detail = f"champion v{version} refused, still serving v{_v(current.champion)}: {exc}"
                log.error(detail)
                self.state = ModelState(current.champion, current.fallback, challenger, current.loaded_at, detail,
                                        refused_version=version)
                return ReloadResult(False, _v(current.champion), _v(current.fallback), detail)
            fallback = self._fallback_of(champion, current) if self.load_fallback else None
            self.state = ModelState(champion, fallback, challenger, datetime.now(timezone.utc))
            detail = f"now serving champion v{champion.version}" + (
                f" (fallback v{fallback.version})" if fallback is not None else " (no fallback model)")
            log.info(detail)
            return ReloadResult(True, champion.version, _v(fallback), detail)

    def _fallback_of(self, champion: ServedModel, current: ModelState) -> ServedModel | None:
        """The champion's previous champion (its tags), as at start-up: after a rollback the outgoing,
        rejected champion must not become the fallback. A model already loaded is reused."""
        version = self._previous_champion(champion)
        for model in (current.champion, current.fallback):
            if model is not None and model.version == version:
                return model
        return self._load_quietly(version)

    def _maybe_challenger(self, current: ModelState, version: str | None) -> ServedModel | None:
        if not self.load_challenger or version is None:
            return None
        if current.challenger is not None and current.challenger.version == version:
            return current.challenger
        return self._load_quietly(version)

    def _load_quietly(self, ref: str | None) -> ServedModel | None:
        if ref is None:
            return None
        try:
            return self._load(ref)
        except Exception as exc:  # noqa: BLE001 - optional models: logged, never fatal
            log.warning("could not load model v%s: %s", ref, exc)
            return None

    # ------------------------------------------------------------------ polling

    def start_polling(self, interval_s: float) -> None:
        if interval_s <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, args=(interval_s,), name="champion-poller", daemon=True)
        self._thread.start()

    def _poll(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.reload()
            except Exception:  # noqa: BLE001 - the poller must outlive a registry hiccup
                log.exception("champion poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _v(model: Any) -> str | None:
    return None if model is None else model.version

"""Which models serve: the champion, the previous champion as fallback, and an optional shadow challenger.

All three live in one immutable :class:`ModelState`. A request reads ``manager.state`` once and uses
that object to the end, so swapping in a new state (a single attribute assignment) never changes a
model under an in-flight request. New champions are loaded and checked (artifact sha256 by
training.registry.load_verified_model, FeatureService known to Feast, features match, a test
prediction) in a background thread before the swap; the outgoing champion becomes the fallback.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from config.settings import Settings

if TYPE_CHECKING:
    from training.registry import LoadedModel

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class ModelState:
    champion: "LoadedModel | None" = None
    fallback: "LoadedModel | None" = None
    challenger: "LoadedModel | None" = None
    loaded_at: datetime | None = None
    last_error: str | None = None


@dataclass
class ReloadResult:
    changed: bool
    champion_version: str | None
    fallback_version: str | None
    detail: str


class ModelLoadError(RuntimeError):
    """A candidate model was refused (message says which version and why)."""


@dataclass
class ModelManager:
    """Loads models from the MLflow registry and swaps them atomically."""

    settings: Settings
    check_service: Callable[[str], list[str]]          # FeatureService name -> its feature names
    load_fallback: bool = True
    load_challenger: bool = False
    state: ModelState = field(default_factory=ModelState)
    sample_frame: pd.DataFrame | None = None            # last real feature rows served (canary input)
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # ------------------------------------------------------------------ loading

    def _load(self, ref: str | int) -> "LoadedModel":
        from training.registry import load_verified_model

        model = load_verified_model(self.settings.model_name, ref, self.settings)
        self._check(model)
        return model

    def _check(self, model: "LoadedModel") -> None:
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
        if self.sample_frame is not None and set(model.feature_names) <= set(self.sample_frame.columns):
            p = np.asarray(model.predict(self.sample_frame), dtype=float)
            if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
                raise ModelLoadError(f"{where} gives invalid probabilities {p.tolist()} on served feature rows")

    def _resolve(self, alias: str) -> str | None:
        from training.registry import RegistryError, resolve_version

        try:
            return str(resolve_version(self.settings, self.settings.model_name, alias).version)
        except RegistryError:
            return None

    def _previous_champion(self, champion: "LoadedModel") -> str | None:
        previous = champion.tags.get("previous_champion") or champion.tags.get("rollback.from_version")
        return previous if previous and previous != champion.version else None

    def reload(self) -> ReloadResult:
        """Re-read the aliases; load, check and swap in a new champion (old one becomes fallback)."""
        with self._reload_lock:
            current = self.state
            version = self._resolve(CHAMPION)
            if version is None:
                detail = f"registered model '{self.settings.model_name}' has no '{CHAMPION}' alias"
                if current.champion is None:
                    self.state = ModelState(last_error=detail)
                return ReloadResult(False, _v(current.champion), _v(current.fallback), detail)
            challenger = self._maybe_challenger(current)
            if current.champion is not None and current.champion.version == version:
                if challenger is not current.challenger:
                    self.state = ModelState(current.champion, current.fallback, challenger, current.loaded_at)
                return ReloadResult(False, version, _v(current.fallback), f"champion v{version} already served")
            try:
                champion = self._load(version)
            except Exception as exc:  # noqa: BLE001 - a bad candidate never replaces a working model
                detail = f"champion v{version} refused, still serving v{_v(current.champion)}: {exc}"
                log.error(detail)
                self.state = ModelState(current.champion, current.fallback, challenger, current.loaded_at, detail)
                return ReloadResult(False, _v(current.champion), _v(current.fallback), detail)
            fallback = current.champion
            if fallback is None and self.load_fallback:
                fallback = self._load_quietly(self._previous_champion(champion))
            self.state = ModelState(champion, fallback, challenger, datetime.now(timezone.utc))
            detail = f"now serving champion v{champion.version}" + (
                f" (fallback v{fallback.version})" if fallback is not None else " (no fallback model)")
            log.info(detail)
            return ReloadResult(True, champion.version, _v(fallback), detail)

    def _maybe_challenger(self, current: ModelState) -> "LoadedModel | None":
        if not self.load_challenger:
            return None
        version = self._resolve(CHALLENGER)
        if version is None:
            return None
        if current.challenger is not None and current.challenger.version == version:
            return current.challenger
        return self._load_quietly(version)

    def _load_quietly(self, ref: str | None) -> "LoadedModel | None":
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

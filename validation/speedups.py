"""Four behaviour-preserving speed fixes for great_expectations 1.24.1 (measured in bench/bench_validation.py).

1. ``column.mean`` / ``column.standard_deviation`` / ``column.sum`` on pandas first scan every
   value in Python for ``decimal.Decimal`` objects (``util.does_ndarray_contain_decimal_dtype``):
   ~0.4 s per 1M-row float column. A numeric or datetime ndarray cannot hold a Decimal, so we
   answer False from the dtype and keep the Python scan for object arrays.
2. Every Data Docs view builds a fresh Jinja ``Environment`` and re-parses and re-compiles its
   ~100 templates (~0.5 s per checkpoint run). A shared in-memory bytecode cache keeps the
   compiled code across views; templates are package files that never change in a process.
3. ``Expectation.configuration`` is a property that rebuilds an ``ExpectationConfiguration``
   (pydantic ``.dict()`` of the whole expectation) on every access, and
   ``_get_domain_kwargs`` / ``_get_success_kwargs`` / ``_get_success_kwarg`` /
   ``_get_runtime_kwargs`` access it once per key they look up: ~1 600 rebuilds per checkpoint
   run, most of GX's fixed cost of building the metric graph. The same methods, reading one
   configuration per call.
4. Every Data Docs build rebuilds the index page, which re-reads the latest stored validation
   results (up to ``validation_results_limit``) and deserializes each one (marshmallow, a few ms
   each) for its status and asset name. While the index links are collected, a stored result
   whose JSON text was deserialized before is reused (keyed by that exact text, so a changed
   file is read afresh); the index builder only reads them.

Applied once, by :func:`validation.project.import_gx`; tests check the answers are unchanged.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

_APPLIED = False
# Stored validation result JSON text -> its deserialized result, for index builds (LRU, bounded).
_INDEX_RESULTS: OrderedDict[str, Any] = OrderedDict()
_INDEX_RESULTS_MAX = 64
_INDEX_RESULTS_LOCK = threading.Lock()
_INDEX_BUILD = threading.local()  # .active: this thread is collecting index links


class _KwargsReadingConfigurationOnce:
    """GX 1.24.1's ``Expectation`` kwargs lookups, each reading ``self.configuration`` once per call.

    Same code as GX's (expectations/expectation.py), with ``self.configuration.kwargs`` hoisted out
    of the per-key loops; every call still builds a fresh configuration, so callers get fresh objects.
    """

    def __init__(self, error_cls: type, logger: Any, parse_result_format: Any) -> None:
        self.error_cls, self.logger, self.parse_result_format = error_cls, logger, parse_result_format

    def domain_kwargs(self, expectation: Any, configuration_kwargs: dict) -> dict:
        domain_keys = expectation.domain_keys
        domain_kwargs = {key: configuration_kwargs.get(key, expectation._get_default_value(key))
                         for key in domain_keys}
        missing_kwargs = set(domain_keys) - set(domain_kwargs.keys())
        if missing_kwargs:
            raise self.error_cls(f"Missing domain kwargs: {list(missing_kwargs)}")
        return domain_kwargs

    def success_kwargs(self, expectation: Any, configuration_kwargs: dict) -> dict:
        domain_kwargs = self.domain_kwargs(expectation, configuration_kwargs)
        success_kwargs = {key: configuration_kwargs.get(key, expectation._get_default_value(key))
                          for key in expectation.success_keys}
        success_kwargs.update(domain_kwargs)
        return success_kwargs

    def success_kwarg(self, expectation: Any, configuration_kwargs: dict, key: str,
                      default: Any = None) -> Any:
        if key in configuration_kwargs:
            return configuration_kwargs[key]
        field = expectation.__fields__.get(key)
        if field is not None:
            return field.default if not field.required else default
        self.logger.warning(f'_get_success_kwarg called with key "{key}", '
                            f"but it is not a known field of {type(expectation).__name__}")
        return default

    def runtime_kwargs(self, expectation: Any, configuration_kwargs: dict,
                       runtime_configuration: dict | None) -> dict:
        runtime_configuration = runtime_configuration or {}
        success_kwargs = self.success_kwargs(expectation, configuration_kwargs)
        runtime_kwargs = {
            key: runtime_configuration.get(key, self.success_kwarg(expectation, configuration_kwargs, key))
            for key in expectation.runtime_keys
        }
        runtime_kwargs.update(success_kwargs)
        runtime_kwargs["result_format"] = self.parse_result_format(runtime_kwargs["result_format"])
        return runtime_kwargs

    def install(self, expectation_cls: Any) -> None:
        lookups = self

        def _get_domain_kwargs(self: Any) -> dict:
            return lookups.domain_kwargs(self, self.configuration.kwargs)

        def _get_success_kwargs(self: Any) -> dict:
            return lookups.success_kwargs(self, self.configuration.kwargs)

        def _get_success_kwarg(self: Any, key: str, default: Any = None) -> Any:
            return lookups.success_kwarg(self, self.configuration.kwargs, key, default)

        def _get_runtime_kwargs(self: Any, runtime_configuration: dict | None = None) -> dict:
            return lookups.runtime_kwargs(self, self.configuration.kwargs, runtime_configuration)

        for method in (_get_domain_kwargs, _get_success_kwargs, _get_success_kwarg, _get_runtime_kwargs):
            method.__wrapped__ = getattr(expectation_cls, method.__name__)  # type: ignore[attr-defined]
            setattr(expectation_cls, method.__name__, method)


def _index_links_reusing_results(original):
    def _add_validations_to_index_links(self: Any, *args: Any, **kwargs: Any) -> Any:
        _INDEX_BUILD.active = True
        try:
            return original(self, *args, **kwargs)
        finally:
            _INDEX_BUILD.active = False

    _add_validations_to_index_links.__wrapped__ = original  # type: ignore[attr-defined]
    return _add_validations_to_index_links


def _deserialize_reusing_index_results(original):
    def deserialize(self: Any, value: Any) -> Any:
        if not getattr(_INDEX_BUILD, "active", False) or not isinstance(value, str):
            return original(self, value)
        with _INDEX_RESULTS_LOCK:
            result = _INDEX_RESULTS.get(value)
            if result is not None:
                _INDEX_RESULTS.move_to_end(value)
                return result
        result = original(self, value)
        with _INDEX_RESULTS_LOCK:
            _INDEX_RESULTS[value] = result
            if len(_INDEX_RESULTS) > _INDEX_RESULTS_MAX:
                _INDEX_RESULTS.popitem(last=False)
        return result

    deserialize.__wrapped__ = original  # type: ignore[attr-defined]
    return deserialize


def _fast_does_ndarray_contain_decimal_dtype(original):
    def does_ndarray_contain_decimal_dtype(data: Any) -> bool:
        if isinstance(data, np.ndarray) and data.dtype.kind in "biufcmM":
            return False
        return original(data)

    does_ndarray_contain_decimal_dtype.__wrapped__ = original  # type: ignore[attr-defined]
    return does_ndarray_contain_decimal_dtype


def _environment_with_shared_bytecode_cache(environment_cls, bytecode_cache):
    class SharedBytecodeEnvironment(environment_cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("bytecode_cache", bytecode_cache)
            super().__init__(*args, **kwargs)

    return SharedBytecodeEnvironment


class _InMemoryBytecodeCache:
    """jinja2.BytecodeCache keeping compiled templates in a dict for the process lifetime."""

    def __new__(cls):
        import jinja2

        class Cache(jinja2.BytecodeCache):
            def __init__(self) -> None:
                self._store: dict[str, bytes] = {}

            def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
                code = self._store.get(bucket.key)
                if code is not None:
                    bucket.bytecode_from_string(code)

            def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
                self._store[bucket.key] = bucket.bytecode_to_string()

        return Cache()


def apply() -> None:
    """Install the fixes (idempotent). Call after ``import great_expectations``."""
    global _APPLIED
    if _APPLIED:
        return
    import great_expectations.expectations.expectation as gx_expectation
    import great_expectations.render.view.view as gx_view
    import great_expectations.util as gx_util
    from great_expectations.data_context.store.validation_results_store import ValidationResultsStore
    from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder

    gx_util.does_ndarray_contain_decimal_dtype = _fast_does_ndarray_contain_decimal_dtype(
        gx_util.does_ndarray_contain_decimal_dtype)
    gx_view.Environment = _environment_with_shared_bytecode_cache(  # type: ignore[misc]
        gx_view.Environment, _InMemoryBytecodeCache())
    _KwargsReadingConfigurationOnce(gx_expectation.InvalidExpectationKwargsError, gx_expectation.logger,
                                    gx_expectation.parse_result_format).install(gx_expectation.Expectation)
    index_builder = DefaultSiteIndexBuilder
    index_builder._add_validations_to_index_links = _index_links_reusing_results(  # type: ignore[method-assign]
        index_builder._add_validations_to_index_links)
    ValidationResultsStore.deserialize = _deserialize_reusing_index_results(  # type: ignore[method-assign]
        ValidationResultsStore.deserialize)
    _APPLIED = True

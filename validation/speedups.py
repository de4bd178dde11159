"""Six behaviour-preserving speed fixes for great_expectations 1.24.1 (measured in bench/bench_validation.py).

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

5. The pandas engine fingerprints every batch (``pandas_data_fingerprint``, shown in the batch
   markers of the stored result and Data Docs): md5 of ``pd.util.hash_pandas_object(df)``, whose
   object columns are factorized value by value (~30 ms per 1M-row id column). A column of plain
   ``str`` whose equal values come in runs (rows grouped by market) gets the same per-value
   hashes from one hash per run; everything else is hashed as GX does. Same fingerprint.
   The gate also starts it on a worker thread before the checkpoint runs
   (:func:`prefetch_fingerprint`; numpy hashing releases the GIL), and GX's call for that
   frame object takes the result.
6. ``compound_columns.unique`` on pandas is ``~df[columns].duplicated(keep=False)``, which
   factorizes every key column and hashes the combined codes (~65 ms per 1M rows of
   (market_id, ts)). When the rows are grouped by a ``str`` first column (each value in one run)
   and the second column strictly increases within each run, no two rows can share a key: every
   row is unique, proven in one vectorized pass. Any other frame (unsorted, nulls, other dtypes,
   actual duplicates) goes through GX's own ``duplicated``. Same answer.

Applied once, by :func:`validation.project.import_gx`; tests check the answers are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd

from validation.frames import repeat_per_run, runs_of_equal_strings

_APPLIED = False
# Stored validation result JSON text -> its deserialized result, for index builds (LRU, bounded).
_INDEX_RESULTS: OrderedDict[str, Any] = OrderedDict()
_INDEX_RESULTS_MAX = 64
_INDEX_RESULTS_LOCK = threading.Lock()
COMPOUND_UNIQUE_METRIC = "compound_columns.unique.condition"
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


def _string_column_hashes(values: np.ndarray) -> np.ndarray | None:
    """``pd.util.hash_array(values)`` from one hash per run of equal strings, or None (not such a column).

    The hash of a ``str`` depends on that value only (GX's default categorize path hashes the
    distinct values, then takes them per row), so hashing each run's value once is exact.
    """
    starts = runs_of_equal_strings(values)
    if starts is None:
        return None
    return repeat_per_run(pd.util.hash_array(values[starts]), starts, len(values))


def _row_hashes_of(columns: list, index: pd.Index) -> np.ndarray:
    """``pd.util.hash_pandas_object(df, index=True).values`` from ``df``'s column arrays and index,
    ``str`` columns hashed per run (pandas combines the same per-column hashes the same way)."""
    from pandas.core.util.hashing import combine_hash_arrays

    hashes = []
    for values in columns:  # each column's ._values: what hash_pandas_object hashes
        fast = _string_column_hashes(values) if isinstance(values, np.ndarray) else None
        hashes.append(fast if fast is not None else pd.util.hash_array(values))
    hashes.append(pd.util.hash_pandas_object(index, index=False)._values)
    return combine_hash_arrays(iter(hashes), len(hashes))


def _row_hashes(df: pd.DataFrame) -> np.ndarray:
    return _row_hashes_of([series._values for _, series in df.items()], df.index)


def _md5_of_rows(columns: list, index: pd.Index) -> str:
    return hashlib.md5(_row_hashes_of(columns, index), usedforsecurity=False).hexdigest()


# Fingerprints being computed ahead on a worker thread: id(frame) -> (frame, future). The
# frame is held so its id cannot be reused while the entry exists.
_PREFETCHED: dict[int, tuple[Any, Any]] = {}
_PREFETCH_LOCK = threading.Lock()
_PREFETCH_POOL: Any = None


def prefetch_fingerprint(frame: pd.DataFrame) -> None:
    """Start computing GX's fingerprint of ``frame`` on a worker thread (exact same function).

    The hashing is numpy work that releases the GIL, so it runs on the second core while GX
    does its Python-level set-up (freshness checks, batch request); GX's own call for this
    very frame object then takes the result. Pair with :func:`discard_prefetched`.
    """
    global _PREFETCH_POOL
    from concurrent.futures import ThreadPoolExecutor
    import great_expectations.execution_engine.pandas_execution_engine as gx_pandas_engine

    compute = getattr(gx_pandas_engine.hash_pandas_dataframe, "__wrapped_fast__", None)
    if compute is None or frame.memory_usage().sum() >= gx_pandas_engine.HASH_THRESHOLD:
        return  # GX does not fingerprint frames that large
    # The column arrays are taken here, on the caller's thread: the worker only reads numpy /
    # extension arrays and the (immutable) index, never the DataFrame GX is using meanwhile.
    columns = [series._values for _, series in frame.items()]
    with _PREFETCH_LOCK:
        if _PREFETCH_POOL is None:
            _PREFETCH_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gx-fingerprint")
        _PREFETCHED[id(frame)] = (frame, _PREFETCH_POOL.submit(_md5_of_rows, columns, frame.index))


def _reset_after_fork() -> None:
    """A forked child has no worker thread: start it afresh there instead of waiting on it forever."""
    global _PREFETCH_POOL, _PREFETCH_LOCK
    _PREFETCH_POOL, _PREFETCH_LOCK = None, threading.Lock()
    _PREFETCHED.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


def discard_prefetched(frame: pd.DataFrame) -> None:
    with _PREFETCH_LOCK:
        entry = _PREFETCHED.pop(id(frame), None)
    if entry is not None:
        entry[1].cancel()


def _take_prefetched(df: Any) -> Any:
    with _PREFETCH_LOCK:
        entry = _PREFETCHED.get(id(df))
        if entry is None or entry[0] is not df:
            return None
        del _PREFETCHED[id(df)]
    return entry[1]


def _fingerprint_hashing_string_runs(original):
    def compute(df: Any) -> str:
        if not isinstance(df, pd.DataFrame) or not any(
                isinstance(v, np.ndarray) and v.dtype == object for v in (s._values for _, s in df.items())):
            return original(df)
        try:
            row_hashes = _row_hashes(df)
        except Exception:  # unhashable values etc.: GX's own path decides (it falls back to pickle)
            return original(df)
        return hashlib.md5(row_hashes, usedforsecurity=False).hexdigest()

    def hash_pandas_dataframe(df: Any) -> str:
        prefetched = _take_prefetched(df)
        if prefetched is not None:
            try:
                return prefetched.result()
            except Exception:  # noqa: BLE001 - e.g. unhashable values: GX's own path decides, here
                pass
        return compute(df)

    hash_pandas_dataframe.__wrapped__ = original  # type: ignore[attr-defined]
    hash_pandas_dataframe.__wrapped_fast__ = compute  # type: ignore[attr-defined]
    return hash_pandas_dataframe


def _all_rows_unique_when_grouped(frame: pd.DataFrame) -> bool:
    """True if the rows are provably unique: (str key, increasing value) with each key in one run.

    False means "not proven" (the caller then runs the full check), never "duplicates found".
    """
    if frame.shape[1] != 2 or len(frame) < 2:
        return False
    first, second = (series._values for _, series in frame.items())
    if not isinstance(first, np.ndarray):
        return False
    starts = runs_of_equal_strings(first)
    if starts is None or len(set(first[starts])) != len(starts):  # a key in several runs
        return False
    if isinstance(second, np.ndarray) and second.dtype.kind in "iu":
        ordered = second
    elif isinstance(second, (np.ndarray, pd.arrays.DatetimeArray)) and second.dtype.kind == "M":
        if pd.isna(second).any():
            return False
        ordered = np.asarray(second.view("i8") if isinstance(second, np.ndarray) else second.asi8)
    else:
        return False
    increasing = ordered[1:] > ordered[:-1]
    increasing[starts[1:] - 1] = True  # a run's first row need not exceed the previous run's last
    return bool(increasing.all())


def _compound_unique_proving_grouped_keys(original):
    def _pandas(cls: Any, column_list: pd.DataFrame, **kwargs: Any) -> pd.Series:
        if _all_rows_unique_when_grouped(column_list):
            return pd.Series(True, index=column_list.index)
        return original(cls, column_list, **kwargs)

    _pandas.__wrapped__ = original  # type: ignore[attr-defined]
    return _pandas


def _replace_pandas_metric_fn(metric_name: str, replace: Any) -> None:
    """Swap the plain metric function inside GX's registered pandas partial for ``replace(original)``."""
    from great_expectations.expectations.registry import _registered_metrics

    # The registered function wraps GX's partial wrapper, which wraps the plain metric function;
    # each holds the next one in a closure cell named ``metric_fn``: replace the innermost.
    holder = _registered_metrics[metric_name]["providers"]["PandasExecutionEngine"][1]
    while True:
        cell = holder.__closure__[holder.__code__.co_freevars.index("metric_fn")]
        inner = cell.cell_contents
        if "metric_fn" not in getattr(getattr(inner, "__code__", None), "co_freevars", ()):
            break
        holder = inner
    cell.cell_contents = replace(inner)


def apply() -> None:
    """Install the fixes (idempotent). Call after ``import great_expectations``."""
    global _APPLIED
    if _APPLIED:
        return
    import great_expectations.execution_engine.pandas_execution_engine as gx_pandas_engine
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
    gx_pandas_engine.hash_pandas_dataframe = _fingerprint_hashing_string_runs(
        gx_pandas_engine.hash_pandas_dataframe)
    _replace_pandas_metric_fn(COMPOUND_UNIQUE_METRIC, _compound_unique_proving_grouped_keys)
    _APPLIED = True

"""Three behaviour-preserving speed fixes for great_expectations 1.24.1 (measured in bench/bench_validation.py).

1. ``column.mean`` / ``column.standard_deviation`` / ``column.sum`` on pandas first scan every
   value in Python for ``decimal.Decimal`` objects (``util.does_ndarray_contain_decimal_dtype``):
   ~0.4 s per 1M-row float column. A numeric or datetime ndarray cannot hold a Decimal, so we
   answer False from the dtype and keep the Python scan for object arrays.
2. Every Data Docs view builds a fresh Jinja ``Environment`` and re-parses and re-compiles its
   ~100 templates (~0.5 s per checkpoint run). A shared in-memory bytecode cache keeps the
   compiled code across views; templates are package files that never change in a process.

3. Each validation definition fingerprints the whole batch dataframe (``hash_pandas_dataframe``,
   ~0.2 s per 1M rows); a checkpoint with two suites on the same frame hashed it twice.
   Inside :func:`reuse_batch_fingerprints` (the gate wraps each checkpoint run in it, on a
   frame it built and never mutates) the fingerprint of the same frame object is computed once.

Applied once, by :func:`validation.project.import_gx`; tests check the answers are unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

_APPLIED = False
# id(frame) -> (frame, fingerprint) while reuse_batch_fingerprints() is active, else None.
_FINGERPRINTS: dict[int, tuple[Any, str]] | None = None


@contextlib.contextmanager
def reuse_batch_fingerprints() -> Iterator[None]:
    """Compute each dataframe's GX batch fingerprint at most once inside this block."""
    global _FINGERPRINTS
    previous, _FINGERPRINTS = _FINGERPRINTS, {}
    try:
        yield
    finally:
        _FINGERPRINTS = previous


def _memoized_fingerprint(original):
    def hash_pandas_dataframe(df: Any) -> str:
        if _FINGERPRINTS is None:
            return original(df)
        cached = _FINGERPRINTS.get(id(df))
        if cached is not None and cached[0] is df:
            return cached[1]
        fingerprint = original(df)
        _FINGERPRINTS[id(df)] = (df, fingerprint)  # holds df, so its id cannot be reused meanwhile
        return fingerprint

    hash_pandas_dataframe.__wrapped__ = original  # type: ignore[attr-defined]
    return hash_pandas_dataframe


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
    import great_expectations.execution_engine.pandas_execution_engine as gx_pandas_engine
    import great_expectations.render.view.view as gx_view
    import great_expectations.util as gx_util

    gx_util.does_ndarray_contain_decimal_dtype = _fast_does_ndarray_contain_decimal_dtype(
        gx_util.does_ndarray_contain_decimal_dtype)
    gx_view.Environment = _environment_with_shared_bytecode_cache(  # type: ignore[misc]
        gx_view.Environment, _InMemoryBytecodeCache())
    gx_pandas_engine.hash_pandas_dataframe = _memoized_fingerprint(gx_pandas_engine.hash_pandas_dataframe)
    _APPLIED = True

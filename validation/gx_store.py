"""A Data Docs store backend that replaces each page atomically.

GX's ``TupleFilesystemStoreBackend`` writes a page in place (open with truncation, then write), so
someone reading Data Docs while a checkpoint runs (a browser on ``make docs``, another worker)
can get a truncated ``index.html`` or validation page. This backend writes the new page beside
the old one and renames it into place: a reader sees the old page or the new one, never half.

The committed ``gx/great_expectations.yml`` names it as the site's ``store_backend``
(``module_name: validation.gx_store``); importing it imports great_expectations.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from great_expectations.data_context.store.tuple_store_backend import TupleFilesystemStoreBackend


class AtomicTupleFilesystemStoreBackend(TupleFilesystemStoreBackend):
    """``TupleFilesystemStoreBackend`` whose writes are a temp file in the same directory + ``os.replace``."""

    def _set(self, key: Any, value: Any, **kwargs: Any) -> str:
        if not isinstance(key, tuple):
            key = key.to_tuple()
        filepath = os.path.join(self.full_base_directory, self._convert_key_to_filepath(key))
        directory, name = os.path.split(filepath)
        os.makedirs(directory, exist_ok=True)
        # A hidden name that is never a page of its own; "x" mode: created fresh, with the umask's permissions.
        tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "xb") as out:
                out.write(value.encode("utf-8") if isinstance(value, str) else value)
            os.replace(tmp, filepath)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return filepath

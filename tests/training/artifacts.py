"""A registered version's files in the MLflow artifact store of a test's settings, to alter them the way
someone with write access to the artifact store could (and put them back)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from config.settings import Settings
from training.registry import MODEL_FILE, resolve_version


def stored_model_dir(store: Settings, version: str) -> Path:
    """The stored model directory of ``version`` (what models:/<name>/<version> downloads)."""
    source = resolve_version(store, store.model_name, version).source  # models:/m-... in MLflow 3
    hits = [p.parent for p in Path(store.mlflow_artifact_root).rglob(MODEL_FILE) if source.split("/")[-1] in str(p)]
    assert len(hits) == 1, hits
    return hits[0]


def flipped(content: bytes) -> bytes:
    """``content`` with one bit of its last byte flipped."""
    return content[:-1] + bytes([content[-1] ^ 1])


@contextlib.contextmanager
def altered(path: Path, content: bytes | None) -> Iterator[None]:
    """``path`` rewritten with ``content`` (None: deleted) inside the block, restored after it."""
    original = path.read_bytes()
    try:
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)
        yield
    finally:
        path.write_bytes(original)

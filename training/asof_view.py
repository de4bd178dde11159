"""The publication-time view of the offline store: what Feast could read on a past date.

Feast's point-in-time join takes, for an entity row at ``ts``, the newest feature row with event
time <= ``ts`` (ties: newest ``ingested_at``). It never compares ``ingested_at`` with a cutoff,
so a row published after ``as_of`` with an event time before it (a late batch, or the
corrected rolling-feature rows ingestion appends when an earlier snapshot arrives late,
ingestion/rolling.py) would change an ``as_of`` rebuild.

The view holds only rows with ``ingested_at <= as_of`` of committed batches, in a temp
directory: a symlink per file published entirely by then, a filtered copy of a file with rows
on both sides (ingestion stamps one ``ingested_at`` per batch, so this is the exception), nothing
of later files. Feast reads it through a temp *file* registry: a copy of the real registry's
protobuf (every definition as applied, the on-demand UDFs included) whose FileSource paths are
moved from the offline store into the view. Nothing is written outside the temp directory, which
is removed on exit; disk use is the filtered copies only.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pandas as pd

if TYPE_CHECKING:
    from feast import FeatureStore

    from config.settings import Settings

VIEW_PREFIX = "pm-asof-view-"
DATA_SOURCE_PROTO = "feast.core.DataSource"


class PublicationViewError(RuntimeError):
    """The publication-time view could not be built (message says why)."""


@dataclass
class ViewStats:
    """What the view kept and left out, per table of the offline store."""

    as_of: pd.Timestamp
    files_linked: dict[str, int] = field(default_factory=dict)     # published entirely by as_of
    files_filtered: dict[str, int] = field(default_factory=dict)   # rows on both sides: filtered copy
    files_excluded: dict[str, int] = field(default_factory=dict)   # published entirely after as_of
    rows_excluded: dict[str, int] = field(default_factory=dict)    # ingested_at > as_of, any event time
    sources_redirected: int = 0

    def summary(self) -> dict[str, Any]:
        return {"rows_excluded": self.rows_excluded,
                "files_linked": sum(self.files_linked.values()),
                "files_filtered": sum(self.files_filtered.values()),
                "files_excluded": sum(self.files_excluded.values())}


def _ingested_at_range(path: Path) -> tuple[pd.Timestamp, pd.Timestamp]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    stamps = pq.read_table(path, columns=["ingested_at"]).column("ingested_at")
    bounds = pc.min_max(stamps)
    return pd.Timestamp(bounds["min"].as_py()), pd.Timestamp(bounds["max"].as_py())


def write_view(offline_dir: Path, view_dir: Path, as_of: pd.Timestamp) -> ViewStats:
    """Mirror ``<table>/month=*/<batch>.parquet`` of committed batches: rows with ingested_at <= as_of."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ingestion.store import STORE_TABLES, committed_batches

    stats = ViewStats(as_of=as_of)
    committed = set(committed_batches(offline_dir))
    cutoff = as_of.floor("us").to_pydatetime()  # ingested_at is in microseconds
    for table in STORE_TABLES:
        counts = {"linked": 0, "filtered": 0, "excluded": 0, "rows": 0}
        for path in sorted((offline_dir / table).glob("month=*/*.parquet")):
            if path.stem not in committed:
                continue  # in-flight publishing: never read (architecture.md, "Publishing")
            first, last = _ingested_at_range(path)
            if pd.isna(first):
                continue  # no rows
            dest = view_dir / path.relative_to(offline_dir)
            if last <= as_of:
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(path.resolve())
                counts["linked"] += 1
            elif first > as_of:
                counts["excluded"] += 1
                counts["rows"] += pq.ParquetFile(path).metadata.num_rows
            else:
                rows = pq.read_table(path)
                stamps = rows.column("ingested_at")
                kept = rows.filter(pc.less_equal(stamps, pa.scalar(cutoff, type=stamps.type)))
                dest.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(kept, dest)
                counts["filtered"] += 1
                counts["rows"] += rows.num_rows - kept.num_rows
        stats.files_linked[table], stats.files_filtered[table] = counts["linked"], counts["filtered"]
        stats.files_excluded[table], stats.rows_excluded[table] = counts["excluded"], counts["rows"]
    return stats


def file_sources(message: Any) -> Iterator[Any]:
    """Every FileSource (DataSource proto with file_options) anywhere in a registry protobuf.

    The whole message is walked because a source is embedded in several places: the registry's
    data sources, each feature view's batch and stream source, a push source's batch source.
    """
    if message.DESCRIPTOR.full_name == DATA_SOURCE_PROTO and message.HasField("file_options"):
        yield message
    for descriptor, value in message.ListFields():
        if descriptor.type != descriptor.TYPE_MESSAGE:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            value_field = descriptor.message_type.fields_by_name["value"]
            children = list(value.values()) if value_field.type == value_field.TYPE_MESSAGE else []
        else:
            children = list(value) if descriptor.is_repeated else [value]
        for child in children:
            yield from file_sources(child)


def _under(uri: str, root: str) -> bool:
    return uri == root or uri.startswith(root + "/")


def redirect_file_sources(registry_proto: Any, old_root: str, new_root: str) -> int:
    """Point every FileSource under ``old_root`` at its path under ``new_root`` (in place); how many."""
    moved = 0
    for source in file_sources(registry_proto):
        uri = source.file_options.uri
        if _under(uri, old_root):
            source.file_options.uri = new_root + uri[len(old_root):]
            moved += 1
    return moved


def view_store(settings: "Settings", view_dir: Path, work_dir: Path) -> tuple["FeatureStore", int]:
    """A FeatureStore with the real registry's definitions, reading ``view_dir`` for the offline store."""
    import yaml
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from features.store import get_store, render_yaml

    real_root = str(settings.offline_store_dir)
    registry_proto = get_store(settings).registry.proto()
    moved = redirect_file_sources(registry_proto, real_root, str(view_dir))
    if moved == 0:
        sources = sorted({s.file_options.uri for s in file_sources(registry_proto)})
        raise PublicationViewError(
            f"the Feast registry {settings.feast_registry_uri} has no file source under the offline store "
            f"{real_root} (its file sources: {sources}); was it applied with other settings?")
    registry_file = work_dir / "registry.pb"
    registry_file.write_bytes(registry_proto.SerializeToString())
    # The online store is never read by a historical retrieval; a temp SQLite keeps the config valid
    # without touching the real one.
    view_settings = replace(settings, online_store_type="sqlite", online_sqlite_path=work_dir / "online.db")
    config = yaml.safe_load(render_yaml(view_settings))
    config["registry"] = {"registry_type": "file", "path": str(registry_file), "cache_ttl_seconds": 0}
    repo_config = RepoConfig(**config)
    repo_config.repo_path = settings.feature_repo_dir
    return FeatureStore(repo_path=str(settings.feature_repo_dir), config=repo_config), moved


@contextmanager
def publication_time_store(settings: "Settings",
                           as_of: pd.Timestamp) -> Iterator[tuple["FeatureStore", ViewStats]]:
    """(FeatureStore over the publication-time view at ``as_of``, what it left out); removed on exit."""
    work_dir = Path(tempfile.mkdtemp(prefix=VIEW_PREFIX))
    try:
        view_dir = work_dir / "offline"
        stats = write_view(Path(settings.offline_store_dir), view_dir, as_of)
        store, stats.sources_redirected = view_store(settings, view_dir, work_dir)
        yield store, stats
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

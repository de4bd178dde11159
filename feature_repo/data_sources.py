"""Data sources: the ingestion Parquet layout (docs/architecture.md) and the live price push source.

Import path: `feast apply` imports this file with only this directory appended to sys.path, not the
project root, so `config` is not importable there by default. We append the project root (this
directory's parent) at the END of sys.path. With the project root already on sys.path (in-process
callers, or PYTHONPATH=$PWD as the Airflow setup exports), the first branch is taken; that is safe
because no module of this directory shares a name with a project package (feature views live in
`feature_views.py`, not `features.py`, which the project's `features` package would shadow).
"""

import sys
from pathlib import Path

from feast import FileSource, PushSource

try:
    from config.settings import get_settings
except ModuleNotFoundError:
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    try:
        from config.settings import get_settings
    except ModuleNotFoundError as exc:  # a copy of the repo outside the project
        raise ModuleNotFoundError(
            f"feature_repo/data_sources.py needs the project's `config` package to find the offline "
            f"store; it is not importable from {Path(__file__).resolve().parent} or its parent. Run Feast "
            "from the project checkout (`eval \"$(python -m features env)\"; cd feature_repo; feast apply`)."
        ) from exc

from entities import OWNER

OFFLINE_STORE_DIR = get_settings().offline_store_dir


def _table_glob(table: str) -> str:
    # Every batch adds files under <table>/month=YYYY-MM/; the glob reads all published ones
    # (in-flight files live under _staging/, outside every table's glob).
    return str(OFFLINE_STORE_DIR / table / "**" / "*.parquet")


price_features_source = FileSource(
    name="price_features_source",
    path=_table_glob("price_features"),
    timestamp_field="ts",
    created_timestamp_column="ingested_at",
    description="Price snapshots with rolling price/volume features, one row per (market_id, ts).",
    owner=OWNER,
    tags={"layer": "offline", "written_by": "ingestion"},
)

poll_features_source = FileSource(
    name="poll_features_source",
    path=_table_glob("poll_features"),
    timestamp_field="ts",
    created_timestamp_column="ingested_at",
    description="Poll observations, one row per (market_id, ts).",
    owner=OWNER,
    tags={"layer": "offline", "written_by": "ingestion"},
)

market_info_source = FileSource(
    name="market_info_source",
    path=_table_glob("market_info"),
    timestamp_field="event_ts",
    created_timestamp_column="ingested_at",
    description=(
        "Market attributes: one row per version at event_ts=updated_at plus one creation row at "
        "event_ts=created_at (creation attributes are known from created_at on)."
    ),
    owner=OWNER,
    tags={"layer": "offline", "written_by": "ingestion"},
)

markets_source = FileSource(
    name="markets_source",
    path=_table_glob("markets"),
    timestamp_field="updated_at",
    created_timestamp_column="ingested_at",
    description=(
        "Every accepted market version, one row per (market_id, updated_at), with the labels resolved_at "
        "and outcome. Read only by the label view market_resolution."
    ),
    owner=OWNER,
    tags={"layer": "offline", "written_by": "ingestion"},
)

price_ticks_push = PushSource(
    name="price_ticks_push",
    batch_source=price_features_source,
    description="Live price ticks pushed by producers between ingest batches (features.push).",
    owner=OWNER,
    tags={"layer": "stream"},
)

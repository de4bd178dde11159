"""Read an already-typed Parquet batch directory for `python -m validation validate`.

Typing raw input (CSV, naive timestamps, ...) is ingestion's job (`python -m ingestion ingest`);
this reader only accepts Parquet tables and hands their frames to the gate as they are.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from validation.suites import TABLES


class BatchReadError(ValueError):
    pass


def read_parquet_batch(batch_dir: Path) -> dict[str, pd.DataFrame]:
    """The batch's tables as the gate gets them from ingestion (``outcome`` stays a nullable Int8)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # markets.outcome is int8 with nulls for open markets: plain to_pandas would make it float64.
    nullable_ints = {pa.int8(): pd.Int8Dtype()}.get
    tables: dict[str, pd.DataFrame] = {}
    for table in TABLES:
        parquet, csv = batch_dir / f"{table}.parquet", batch_dir / f"{table}.csv"
        if parquet.is_file():
            try:
                tables[table] = pq.read_table(parquet).to_pandas(types_mapper=nullable_ints)
            except (pa.ArrowException, OSError) as exc:
                raise BatchReadError(f"{parquet}: not a readable Parquet file ({exc})") from None
        elif csv.is_file():
            raise BatchReadError(f"{csv}: CSV is typed by ingestion; run `python -m ingestion ingest {batch_dir}` "
                                 "(it calls this gate) or convert the batch to Parquet")
    if not tables:
        raise BatchReadError(f"{batch_dir}: no {', '.join(t + '.parquet' for t in TABLES)} found")
    return tables

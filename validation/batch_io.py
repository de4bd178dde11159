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
    tables: dict[str, pd.DataFrame] = {}
    for table in TABLES:
        parquet, csv = batch_dir / f"{table}.parquet", batch_dir / f"{table}.csv"
        if parquet.is_file():
            tables[table] = pd.read_parquet(parquet)
        elif csv.is_file():
            raise BatchReadError(f"{csv}: CSV is typed by ingestion; run `python -m ingestion ingest {batch_dir}` "
                                 "(it calls this gate) or convert the batch to Parquet")
    if not tables:
        raise BatchReadError(f"{batch_dir}: no {', '.join(t + '.parquet' for t in TABLES)} found")
    return tables

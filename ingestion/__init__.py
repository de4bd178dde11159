"""Raw market data in, Parquet offline store out: the simulator and contract-exact ingestion."""

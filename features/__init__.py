"""Library over the Feast feature store (feature_repo/): store construction, materialization, retrieval.

Feast is imported inside functions: this package is imported by Airflow DAG files and the CLI.
"""

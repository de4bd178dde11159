"""Training: training set, split, pipeline, tuning, evaluation, registry, reproduce, backtest, audit.

Heavy libraries (mlflow, sklearn, feast) are imported inside functions so that importing this
package (e.g. from an Airflow DAG file) stays cheap.
"""

FEATURE_SERVICE = "market_forecaster_v1"

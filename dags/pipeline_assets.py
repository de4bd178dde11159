"""Airflow assets shared by the DAGs: what one pipeline produces and the next consumes."""

from airflow.sdk import Asset

OFFLINE_STORE = Asset(name="offline_store", uri="pm://offline_store")
ONLINE_STORE = Asset(name="online_store", uri="pm://online_store")
RETRAIN_REQUEST = Asset(name="retrain_request", uri="pm://retrain_request")

"""Prediction service: FastAPI app over the MLflow champion and the Feast online store (see docs/serving.md)."""

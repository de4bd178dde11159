"""Model monitoring: reference profiles, drift statistics, concept drift, reports, retraining requests.

The core (``reference``, ``drift``, ``concept``, ``prediction_log``, ``report``) depends only on
numpy / scipy / pandas / pyarrow; MLflow and Feast integrations import their libraries lazily.
"""

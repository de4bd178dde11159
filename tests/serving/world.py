"""A small real world for serving tests and bench/bench_serving.py.

- a Feast project: a temp copy of feature_repo/ applied with the real `feast apply` CLI, online store
  on a real Redis (tests/servers.py);
- online feature rows written through Feast's own write path (what materialize/push do);
- real scikit-learn models (training.pipeline's estimator) logged to a real MLflow sqlite registry
  with skops, tagged through training.registry (artifact sha256 measured on the registered file).
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from config.settings import Settings
from tests.feast_project import copy_feature_repo
from tests.servers import free_port

FEATURE_SERVICE = "market_forecaster_v1"
EVENT_TYPES = ["election", "sports", "economics", "crypto"]
PLATFORMS = ["polymarket", "kalshi"]


def feast_env(project: Path, redis) -> dict[str, str]:
    """Environment (settings variables) of a Feast project under `project` with its online store on `redis`."""
    return {"PM_FEATURE_REPO_DIR": str(project / "feature_repo"),
            "PM_FEAST_REGISTRY_URI": f"sqlite:///{project / 'feast_registry.db'}",
            "PM_OFFLINE_STORE_DIR": str(project / "offline"),
            "PM_ONLINE_STORE_TYPE": "redis", "PM_REDIS_HOST": redis.host, "PM_REDIS_PORT": str(redis.port),
            "PM_REDIS_DB": "0", "PM_REDIS_PASSWORD": redis.password}


def sqlite_feast_env(project: Path) -> dict[str, str]:
    """Environment of a Feast project under `project` with its online store in a SQLite file there."""
    return {"PM_FEATURE_REPO_DIR": str(project / "feature_repo"),
            "PM_FEAST_REGISTRY_URI": f"sqlite:///{project / 'feast_registry.db'}",
            "PM_OFFLINE_STORE_DIR": str(project / "offline"),
            "PM_ONLINE_STORE_TYPE": "sqlite", "PM_ONLINE_SQLITE_PATH": str(project / "online_store.db")}


def apply_feast_project(project: Path, redis=None) -> dict[str, str]:
    """Copy feature_repo/ under `project` and run the real `feast apply`; returns its feast_env
    (online store on `redis`, or in a SQLite file under `project` when redis is None)."""
    from features.store import apply

    copy_feature_repo(project)
    env = feast_env(project, redis) if redis is not None else sqlite_feast_env(project)
    settings = Settings.from_env({"PM_DATA_DIR": str(project / "data"), **env})
    settings.ensure_dirs()
    apply(settings)
    return env


# ---------------------------------------------------------------- online rows

@dataclass(frozen=True)
class OnlineMarkets:
    ids: list[str]            # ordinary open markets with prices, polls (elections) and attributes
    stale: str                # price older than the 3-day TTL
    past_resolution: str      # scheduled resolution date already passed
    no_price: str             # attributes only: no price ever stored


def write_online(store, n_markets: int, now: pd.Timestamp, seed: int = 0) -> OnlineMarkets:
    """Write feature rows for `n_markets` + 3 special markets into the online store, through Feast."""
    rng = np.random.default_rng(seed)
    ids = [f"mkt-{i:05d}" for i in range(n_markets)]
    stale, past, no_price = "mkt-stale", "mkt-past", "mkt-noprice"
    priced = ids + [stale, past]
    price_ts = [now - pd.Timedelta(hours=float(h)) for h in rng.uniform(0.1, 20, len(ids))]
    price_ts += [now - pd.Timedelta(days=10), now - pd.Timedelta(hours=2)]
    price = rng.uniform(0.05, 0.95, len(priced))
    prices = pd.DataFrame({
        "market_id": priced, "ts": pd.to_datetime(price_ts, utc=True), "price": price,
        "volume_24h": rng.lognormal(8, 1, len(priced)), "price_change_1d": rng.normal(0, 0.05, len(priced)),
        "price_change_7d": rng.normal(0, 0.1, len(priced)), "price_volatility_7d": rng.uniform(0, 0.1, len(priced)),
        "price_volatility_30d": rng.uniform(0, 0.1, len(priced)), "volume_mean_7d": rng.lognormal(8, 0.5, len(priced)),
    })
    prices["ingested_at"] = now
    everyone = priced + [no_price]
    event_type = [EVENT_TYPES[i % len(EVENT_TYPES)] for i in range(len(everyone))]
    created = [now - pd.Timedelta(days=30)] * len(everyone)
    resolution = [now + pd.Timedelta(days=float(d)) for d in rng.uniform(5, 60, len(everyone))]
    resolution[everyone.index(past)] = now - pd.Timedelta(days=1)
    info = pd.DataFrame({"market_id": everyone, "event_ts": pd.to_datetime(created, utc=True),
                         "event_type": event_type, "platform": [PLATFORMS[i % 2] for i in range(len(everyone))],
                         "created_at": pd.to_datetime(created, utc=True),
                         "resolution_date": pd.to_datetime(resolution, utc=True)})
    info["ingested_at"] = now
    polled = [m for m, e in zip(everyone, event_type) if e == "election"]
    polls = pd.DataFrame({"market_id": polled, "ts": now - pd.Timedelta(days=2),
                          "poll_average": rng.uniform(0.1, 0.9, len(polled)),
                          "poll_trend": rng.normal(0, 0.05, len(polled)), "n_polls": rng.integers(1, 20, len(polled))})
    polls["ingested_at"] = now
    store.write_to_online_store("price_features", prices)
    store.write_to_online_store("market_info", info)
    store.write_to_online_store("poll_features", polls)
    return OnlineMarkets(ids, stale, past, no_price)


# ---------------------------------------------------------------- models

def training_frame(feature_names: list[str], n_markets: int = 150, seed: int = 0) -> pd.DataFrame:
    """Synthetic rows with the FeatureService's columns and a label that depends on price and polls."""
    rng = np.random.default_rng(seed)
    n = n_markets * 4
    price = rng.uniform(0.03, 0.97, n)
    poll = np.where(rng.uniform(size=n) < 0.3, np.clip(price + rng.normal(0, 0.1, n), 0.01, 0.99), np.nan)
    days = rng.uniform(0, 60, n)
    columns = {
        "price": price, "volume_24h": rng.lognormal(8, 1, n), "price_change_1d": rng.normal(0, 0.05, n),
        "price_change_7d": rng.normal(0, 0.1, n), "price_volatility_7d": rng.uniform(0, 0.1, n),
        "price_volatility_30d": rng.uniform(0, 0.1, n), "volume_mean_7d": rng.lognormal(8, 0.5, n),
        "poll_average": poll, "poll_trend": np.where(np.isnan(poll), np.nan, rng.normal(0, 0.05, n)),
        "n_polls": np.where(np.isnan(poll), np.nan, rng.integers(1, 20, n)),
        "event_type": rng.choice(EVENT_TYPES, n), "platform": rng.choice(PLATFORMS, n),
        "poll_market_spread": poll - price, "poll_market_ratio": poll / price, "days_to_resolution": days,
        "log_days_to_resolution": np.log1p(days), "resolution_urgency": 1 / (1 + days),
    }
    missing = [f for f in feature_names if f not in columns]
    if missing:
        raise ValueError(f"tests/serving/world.py cannot synthesize features {missing}: add them to training_frame")
    frame = pd.DataFrame({f: columns[f] for f in feature_names})
    frame["market_id"] = [f"train-{i // 4:05d}" for i in range(n)]  # 4 snapshots per market
    frame["ts"] = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) % 4, unit="D")
    truth = np.where(np.isnan(poll), price, 0.5 * price + 0.5 * np.nan_to_num(poll))
    frame["label"] = (rng.uniform(size=n) < truth).astype(int)
    return frame


def register_model(settings: Settings, feature_names: list[str], seed: int, C: float = 1.0,
                   feature_service: str = FEATURE_SERVICE, kind: str = "logreg") -> str:
    """Fit a real sklearn pipeline, log it with skops to MLflow, tag it via training.registry; returns the version.

    kind="logreg": an uncalibrated logistic regression (C); kind="hgb": the production default
    (training.pipeline.ModelSpec: calibrated HistGradientBoosting, market-grouped folds).
    """
    import tempfile

    import mlflow

    from training import registry
    from training.pipeline import ModelSpec, build_estimator, fit_model, split_columns
    from training.tracking import configure_mlflow

    frame = training_frame(feature_names, seed=seed)
    train, valid = frame.iloc[: len(frame) * 3 // 4], frame.iloc[len(frame) * 3 // 4:]
    if kind == "hgb":
        model = fit_model(ModelSpec(seed=seed), train, feature_names)
    else:
        numeric, categorical = split_columns(feature_names, train)
        model = build_estimator(ModelSpec(kind="logreg", params={"C": C}, calibration=None), numeric, categorical)
        model.fit(train[feature_names], train["label"].to_numpy())
    p = model.predict_proba(valid[feature_names])[:, 1]
    brier = float(np.mean((p - valid["label"].to_numpy()) ** 2))
    market_brier = float(np.mean((valid["price"].to_numpy() - valid["label"].to_numpy()) ** 2))
    configure_mlflow(settings)
    with mlflow.start_run() as run:
        mlflow.log_metrics({"valid_brier": brier, "valid_brier_skill": 1 - brier / market_brier})
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="skops",
                                        skops_trusted_types=registry.trusted_types_of(model),
                                        registered_model_name=settings.model_name)
    version = str(info.registered_model_version)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = registry.download_model_dir(settings, settings.model_name, version, Path(tmp))
        sha = registry.sha256_file(model_dir / registry.MODEL_FILE)
    registry.set_version_tags(settings, settings.model_name, version, {
        "feature_service": feature_service, "feature_names": json.dumps(feature_names), "artifact_sha256": sha,
        "training_set_hash": f"synthetic-seed-{seed}", "raw_data_hash": "synthetic", "git_commit": "test",
        "as_of": "2026-01-01T00:00:00+00:00", "seed": str(seed), "run_id": run.info.run_id})
    return version


def set_champion(settings: Settings, version: str) -> None:
    """Move `champion` the way promote does (alias + previous_champion tag), without the gate checks."""
    from training import registry

    previous = registry.aliases(settings, settings.model_name).get(registry.CHAMPION)
    registry.client(settings).set_registered_model_alias(settings.model_name, registry.CHAMPION, version)
    registry.set_version_tags(settings, settings.model_name, version, {"previous_champion": previous or ""})


@contextmanager
def served(app) -> Iterator[int]:
    """``app`` served by a real uvicorn on a free loopback port, in a thread; yields the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)

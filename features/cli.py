"""`python -m features ...`: thin Typer wrappers over the library, no logic here."""

from __future__ import annotations

import shlex
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="Feast feature store: apply definitions, materialize, retrieve features.",
                  no_args_is_help=True, add_completion=False)


@contextmanager
def _clear_errors():
    """Bad input (a naive time, end before start, an unknown view or service) as one line and exit 2."""
    from feast.errors import FeastObjectNotFoundException

    try:
        yield
    except (ValueError, FeastObjectNotFoundException) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


VIEWS = typer.Option(None, "--view", help="Feature view(s); default all online feature views except label views "
                                        "(market_resolution).")
CHUNK_DAYS = typer.Option(7.0, min=0.001, help="Materialize in windows of at most this many days.")
UP_TO = typer.Option(..., help="Materialize up to this time (ISO-8601 with offset or Z).")


def _up_to(run, end: str, view: Optional[List[str]], chunk_days: float) -> None:
    with _clear_errors():
        typer.echo(run(_when(end), view or None, chunk=timedelta(days=chunk_days)).summary())


def _when(value: str) -> datetime:
    from features.materialize import parse_utc

    return parse_utc(value)


@app.command()
def env() -> None:
    """Print `export` lines for the Feast CLI: eval "$(python -m features env)"; cd feature_repo; feast apply."""
    from config.settings import get_settings
    from features.store import ensure_local_dirs, feast_yaml_env

    settings = get_settings()
    # The `feast` CLI opens the SQLite registry / online store files but cannot create their directories.
    ensure_local_dirs(settings)
    # Only the yaml's own variables: everything else the repo reads comes from the same shell environment.
    for name, value in sorted(feast_yaml_env(settings).items()):
        typer.echo(f"export {name}={shlex.quote(value)}")


@app.command()
def apply() -> None:
    """Register feature_repo/ definitions (runs the real `feast apply` with settings' environment)."""
    from features.store import FeastCliError
    from features.store import apply as run

    try:
        typer.echo(run())
    except FeastCliError as exc:
        typer.echo(f"error: {exc.command} failed: {exc.last_line()} (see its full output with "
                   "`eval \"$(python -m features env)\"; cd feature_repo; feast apply`)", err=True)
        raise typer.Exit(1) from None


@app.command()
def materialize(
    start: str = typer.Option(..., help="Window start, ISO-8601 with offset or Z (UTC)."),
    end: str = typer.Option(..., help="Window end (inclusive, as Feast reads it), ISO-8601 with offset or Z."),
    view: Optional[List[str]] = VIEWS,
    chunk_days: float = CHUNK_DAYS,
) -> None:
    """Materialize the window from START to END (both included) into the online store, window by window."""
    from features.materialize import materialize as run

    with _clear_errors():
        report = run(_when(start), _when(end), view or None, chunk=timedelta(days=chunk_days))
        typer.echo(report.summary())


@app.command("materialize-incremental")
def materialize_incremental(
    end: str = UP_TO, view: Optional[List[str]] = VIEWS, chunk_days: float = CHUNK_DAYS,
) -> None:
    """Materialize each view from where it last stopped up to END."""
    from features.materialize import materialize_incremental as run

    _up_to(run, end, view, chunk_days)


@app.command("materialize-new-batches")
def materialize_new_batches(
    end: str = UP_TO, view: Optional[List[str]] = VIEWS, chunk_days: float = CHUNK_DAYS,
) -> None:
    """What the materialize DAG runs: incremental, reaching back to batches published since the last run."""
    from features.materialize import materialize_new_batches as run

    _up_to(run, end, view, chunk_days)


@app.command()
def historical(
    entities: Path = typer.Option(..., exists=True, dir_okay=False, help="Parquet with market_id, ts (UTC)."),
    out: Path = typer.Option(..., help="Output Parquet: the entity rows plus the service's features."),
    service: str = typer.Option("market_forecaster_v1", help="FeatureService name."),
) -> None:
    """Point-in-time features for every entity row (count and order preserved)."""
    import pandas as pd

    from features.retrieve import historical_features

    with _clear_errors():
        frame = historical_features(pd.read_parquet(entities), service)
    frame.to_parquet(out)
    typer.echo(f"wrote {len(frame)} rows x {frame.shape[1]} columns to {out}")


@app.command()
def online(
    market_id: List[str] = typer.Argument(..., help="Market id(s)."),
    service: str = typer.Option("market_forecaster_v1", help="FeatureService name."),
    at: Optional[str] = typer.Option(None, help="Request time (ISO-8601 with offset or Z); default now. "
                                               "Values older than their view's TTL at this time are nulled."),
) -> None:
    """Online features with per-feature status and per-view age (seconds)."""
    from features.retrieve import online_features

    with _clear_errors():
        result = online_features(market_id, service, request_ts=_when(at) if at else None)
    for title, frame in (("values", result.values), ("status", result.status), ("age_seconds", result.age_seconds)):
        typer.echo(f"== {title}\n{frame.set_index('market_id').T.to_string()}")

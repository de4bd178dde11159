"""`python -m monitoring ...`: thin Typer wrappers, no logic here."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="Drift and performance monitoring of the served model against its reference profile.",
                  no_args_is_help=True, add_completion=False)


def _expected_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input or state (no champion, bad profile, naive --end, bad log),
    reported as one line rather than a traceback; anything else is a bug and keeps its traceback."""
    from training.registry import RegistryError

    # ProfileError, PredictionLogError, OutcomeError and the window/--end checks are ValueErrors.
    return (RegistryError, ValueError)


def _fail(exc: Exception) -> None:
    # Exit 2 on bad input, as ingestion, validation and features do: exit 1 is `run --fail-on`'s
    # "severity reached", which a cron job must be able to tell from a broken invocation.
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2) from None


def _time(text: str, option: str) -> datetime:
    """An ISO-8601 option value; an unparseable one is a ValueError naming the option (bad input)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        example = "2024-06-30T00:00:00+00:00"
        raise ValueError(f"{option} {text!r}: not an ISO-8601 time (e.g. {example})") from None


@app.callback()
def main() -> None:
    """Drift and performance monitoring of the served model against its reference profile."""


@app.command()
def run(
    window: str = typer.Option("7d", help="Window length before --end: e.g. 7d, 24h, 2w."),
    end: Optional[str] = typer.Option(None, help="Window end, ISO-8601 with offset (default: now)."),
    log_dir: Optional[Path] = typer.Option(None, help="Prediction log dir (default: settings.prediction_log_dir)."),
    reference: Optional[Path] = typer.Option(
        None, help="A reference_profile.json file. Training's profiles record no model version: give "
                   "--model-version too, or a window holding several versions is refused."),
    model_version: Optional[str] = typer.Option(
        None, help="Registered model version or alias whose reference_profile.json artifact to use "
                   "(default when --reference is not given: champion)."),
    role: List[str] = typer.Option(["champion"], help="model_role values to monitor (repeatable)."),
    feature_service: Optional[str] = typer.Option(
        None, help="Also check online freshness and training-serving skew of this Feast FeatureService "
                   "(e.g. market_forecaster_v1); needs an applied, materialized feature store."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow",
                                help="Log the run to the MLflow 'monitoring' experiment."),
    fail_on: str = typer.Option(
        "never", help="Exit 1 when the run's severity reaches this: never, moderate, high. "
                      "Bad input or state (no champion, bad window or log, ...) exits 2."),
) -> None:
    """Monitor a window of the prediction log: drift, concept drift, reports, alerts, retraining request.

    Exit 0: the run completed (below --fail-on); 1: its severity reached --fail-on; 2: bad input or state.
    """
    if fail_on not in ("never", "moderate", "high"):
        raise typer.BadParameter(f"{fail_on!r}: use never, moderate or high", param_hint="--fail-on")
    from config.settings import get_settings
    from monitoring.run import execute_run

    try:
        outputs = execute_run(get_settings(), window=window, end=_time(end, "--end") if end else None,
                              log_dir=log_dir, reference=reference, model_version=model_version, roles=role,
                              log_to_mlflow=mlflow, feature_service=feature_service)
    except _expected_errors() as exc:
        _fail(exc)
    typer.echo(outputs.to_text())
    from monitoring.drift import SEVERITY_RANK

    if fail_on != "never" and SEVERITY_RANK[outputs.result["severity"]] >= SEVERITY_RANK[fail_on]:
        raise typer.Exit(code=1)


@app.command()
def replay(
    start: str = typer.Option(..., help="First snapshot time, ISO-8601 with offset (e.g. 2024-05-01T00:00:00+00:00)."),
    end: str = typer.Option(..., help="End (exclusive), ISO-8601 with offset."),
    log_dir: Path = typer.Option(..., help="Where to write the replayed log (never the live serving log)."),
    model: str = typer.Option("champion", help="Registered model version or alias to score with."),
    every: str = typer.Option("1D", help="At most one prediction per market per this pandas frequency."),
) -> None:
    """Score historical snapshots with a registered model (Feast point-in-time features) into a prediction log."""
    from config.settings import get_settings
    from monitoring.replay import replay_predictions

    try:
        summary = replay_predictions(get_settings(), _time(start, "--start"), _time(end, "--end"),
                                     log_dir, model=model, every=every)
    except _expected_errors() as exc:
        _fail(exc)
    typer.echo(summary.to_text())


if __name__ == "__main__":
    app()

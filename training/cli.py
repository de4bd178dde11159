"""`python -m training ...`: thin Typer wrappers over the library, no logic here."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Train, register, promote, roll back, reproduce, audit and backtest the market forecaster.",
                  no_args_is_help=True, add_completion=False)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=1)


def _environment_errors() -> tuple[type[Exception], ...]:
    """A tracking store MLflow cannot use (a bad MLFLOW_TRACKING_URI, a file store) or a path that
    cannot be written: bad settings, one error line like bad input, not a traceback."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, OSError)


@app.command()
def train(
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Build the training set as it could have been built "
                                                               "at this UTC time (default: now)."),
    seed: int = typer.Option(0, help="Random seed of the model and the CV folds."),
    tune: Optional[str] = typer.Option(None, help="Hyperparameter search before the final fit: grid or random."),
    trials: int = typer.Option(6, min=1, help="Trials for --tune random."),
    space: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False,
        help="Search space JSON: an object mapping model params to lists of values "
             "(default: training.tune.DEFAULT_SPACE)."),
    promote: bool = typer.Option(False, "--promote", help="Make the model champion if every gate passes."),
    parent_version: Optional[str] = typer.Option(None, help="Model version this run retrains (lineage; "
                                                           "default: the current champion)."),
) -> None:
    """Build the training set through Feast, fit, evaluate, log to MLflow, register and gate a model."""
    # Checked before the training set is built (minutes), not after.
    if tune not in (None, "grid", "random"):
        raise typer.BadParameter(f"{tune!r}: use grid or random", param_hint="--tune")
    if space is not None and tune is None:
        raise typer.BadParameter("a search space is only used with --tune grid|random", param_hint="--space")
    from config.settings import get_settings
    from training.pipeline import ModelSpec
    from training.train import TrainConfig, lineage_parent, train as run
    from training.tune import load_space

    try:
        settings = get_settings()
        result = run(settings, as_of=as_of, config=TrainConfig(spec=ModelSpec(seed=seed)),
                     promote_if_passed=promote, parent_version=lineage_parent(settings, parent_version), tune=tune,
                     tune_trials=trials, tune_space=load_space(space) if space else None,
                     trigger={"triggered_by": "cli"})
    except (ValueError, RuntimeError, LookupError, *_environment_errors()) as exc:
        _fail(exc)
    typer.echo(result.to_text())
    raise typer.Exit(code=0 if result.passed else 2)


@app.command()
def promote(
    version: Optional[str] = typer.Option(None, help="Version to promote (default: the challenger)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check gates and artifact, change nothing."),
) -> None:
    """Move the champion alias to a version whose gates all passed, its vs_champion gate judged against the current champion."""
    from config.settings import get_settings
    from training.registry import RegistryError, promote as run

    try:
        typer.echo(run(get_settings(), version, dry_run=dry_run).to_text())
    except (RegistryError, *_environment_errors()) as exc:
        _fail(exc)


@app.command()
def rollback(
    to_version: str = typer.Option(..., "--to-version", help="Former champion version to make champion again."),
    reason: str = typer.Option(..., help="Why (recorded on the version and the model)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Verify the target, change nothing."),
) -> None:
    """Point the champion alias back at a former champion (or a version promote would accept), verified loadable."""
    from config.settings import get_settings
    from training.registry import RegistryError, rollback as run

    try:
        typer.echo(run(get_settings(), to_version, reason, dry_run=dry_run).to_text())
    except (RegistryError, *_environment_errors()) as exc:
        _fail(exc)


@app.command()
def reproduce(version: str = typer.Option(..., help="Registered model version to rebuild.")) -> None:
    """Rebuild a version's training set from its lineage, retrain, and compare predictions."""
    from config.settings import get_settings
    from training.registry import RegistryError
    from training.reproduce import ReproduceError, reproduce as run

    try:
        typer.echo(run(get_settings(), version).to_text())
    except (ReproduceError, RegistryError, ValueError, *_environment_errors()) as exc:
        _fail(exc)


@app.command("audit-export")
def audit_export(out: Path = typer.Option(..., help="Directory for audit_runs.csv, audit_alias_moves.csv and "
                                                     "audit_bundle.json.")) -> None:
    """Export every run (failed and rejected included), model version and alias move to CSV + JSON."""
    from config.settings import get_settings
    from training.audit import export

    try:
        typer.echo(export(get_settings(), out).to_text())
    except (LookupError, ValueError, *_environment_errors()) as exc:
        _fail(exc)


@app.command()
def backtest(
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Build the training set as of this UTC time."),
    periods: int = typer.Option(4, min=1, help="Forecast periods over the later half of the snapshot times."),
    edge: float = typer.Option(0.05, help="Bet when |model - price| exceeds this."),
    stake: float = typer.Option(1.0, help="Fixed stake per bet."),
    fee: float = typer.Option(0.01, help="Fee per bet, as a fraction of the stake."),
    truth: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                         help="Simulated data only: truth.parquet, for the best achievable Brier."),
    seed: int = typer.Option(0, help="Model seed."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default: <reports_dir>/backtest-<time>)."),
) -> None:
    """Walk-forward backtest: model vs market price per period, calibration, and betting P&L."""
    from config.settings import get_settings
    from training.backtest import BacktestConfig, BettingRule, backtest as run
    from training.pipeline import ModelSpec

    config = BacktestConfig(n_periods=periods, spec=ModelSpec(seed=seed), rule=BettingRule(edge, stake, fee))
    try:
        result, written = run(get_settings(), as_of=as_of, config=config, truth_path=truth, out_dir=out)
    except (ValueError, RuntimeError, *_environment_errors()) as exc:
        _fail(exc)
    typer.echo(result.to_text())
    typer.echo(f"written to {written}")

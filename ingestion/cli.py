"""`python -m ingestion ...`: thin Typer wrappers, no logic here."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Generate simulated market batches and ingest batches into the offline store.",
                  no_args_is_help=True, add_completion=False)


@app.command()
def generate(
    out: Path = typer.Option(..., help="Output directory: batches go in OUT/batch-NNN/, truth in OUT/truth.parquet."),
    markets: int = typer.Option(100, min=1, help="Number of markets to simulate."),
    start: str = typer.Option("2024-01-01", help="First day markets can be created (YYYY-MM-DD)."),
    end: str = typer.Option("2024-12-31", help="Observation end (YYYY-MM-DD, exclusive: 00:00 UTC); markets still "
                                               "open then stay open."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives byte-identical output."),
    batches: int = typer.Option(1, min=1, help="Split the observation period into this many batches (delivery order)."),
    fmt: str = typer.Option("parquet", "--format", help="parquet or csv."),
    drift_start: Optional[str] = typer.Option(None, help="From this day on, simulate a shifted world (for monitoring demos)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Write a simulated batch in the exact raw data contract format, plus truth.parquet beside it."""
    from ingestion.simulate import SimulationConfig, generate as run

    try:
        cfg = SimulationConfig(
            n_markets=markets, start=date.fromisoformat(start), end=date.fromisoformat(end), seed=seed,
            n_batches=batches, fmt=fmt, drift_start=date.fromisoformat(drift_start) if drift_start else None,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    try:
        summary = run(cfg, out, progress=progress)
    except (ValueError, FileExistsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(summary.to_text())


@app.command()
def ingest(
    batch_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="A batch directory (one to three tables)."),
    assume_utc: bool = typer.Option(False, "--assume-utc", help="Take naive timestamps as UTC instead of refusing them."),
    lock_timeout: float = typer.Option(600.0, min=0, help="Seconds to wait for another ingest holding the "
                                                          "offline store's lock before giving up (exit 2)."),
) -> None:
    """Validate a batch against the data contract and publish it atomically, or quarantine it whole.

    Exit 0: published (or already was); 1: refused and quarantined; 2: bad input, or the ingest could
    not run to the end (lock held too long, disk full, unwritable directory): nothing new committed.
    """
    from config.settings import get_settings
    from ingestion.ingest import ingest_batch
    from ingestion.publish import IngestLockTimeout

    try:
        result = ingest_batch(batch_dir, assume_utc=assume_utc, lock_timeout_s=lock_timeout)
    except IngestLockTimeout as exc:
        typer.echo(f"error: {exc}; nothing was read or changed: run the ingest again later", err=True)
        raise typer.Exit(code=2) from None
    except OSError as exc:
        # The protocol leaves the committed store as it was; a half-done publish is finished or
        # discarded by the next ingest (or materialization, training: ingestion.publish.settle).
        typer.echo(f"error: ingest of {batch_dir} stopped: {exc}; nothing new was committed to the offline "
                   f"store {get_settings().offline_store_dir} (the next ingest recovers what this one left)",
                   err=True)
        raise typer.Exit(code=2) from None
    typer.echo(result.to_text())
    raise typer.Exit(code=0 if result.accepted else 1)


@app.command()
def show(limit: int = typer.Option(5, help="Rows to show per table.")) -> None:
    """Summarize what the offline store holds: batches, tables, row counts, time ranges."""
    from ingestion.store import describe_store

    typer.echo(describe_store(limit=limit))


if __name__ == "__main__":
    app()

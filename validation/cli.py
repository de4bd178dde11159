"""`python -m validation ...`: thin Typer wrappers, no logic here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Great Expectations gate: suites, checkpoints and Data Docs.",
                  no_args_is_help=True, add_completion=False)


@app.command()
def init() -> None:
    """(Re)write the committed GX project in settings.gx_dir from validation/suites.py."""
    from config.settings import get_settings
    from validation.project import write_project

    settings = get_settings()
    for line in write_project(settings.gx_dir, settings):
        typer.echo(line)


@app.command()
def validate(
    batch_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="A Parquet batch directory."),
    batch_id: Optional[str] = typer.Option(None, help="Name of the run in Data Docs (default: directory name)."),
    assume_utc: bool = typer.Option(False, "--assume-utc", help="Read naive timestamps as UTC "
                                    "(as `python -m ingestion ingest --assume-utc` does)."),
    as_json: bool = typer.Option(False, "--json", help="Print the GateResult as JSON."),
) -> None:
    """Type a Parquet batch as ingestion does and run the batch checkpoints on it.

    Exit 0: the gate accepts it; 1: it would be refused (typing or gate); 2: it cannot be validated.
    """
    import datetime as dt

    from validation.batch_io import BatchReadError, read_parquet_batch, refusal_issues
    from validation.gate import GateResult, run_batch_checkpoint
    from validation.project import ProjectNotInitialized

    now = dt.datetime.now(dt.timezone.utc)
    try:
        batch = read_parquet_batch(batch_dir, assume_utc=assume_utc, now=now)
    except BatchReadError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    for warning in batch.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if batch.refusals:
        result = GateResult(success=False, failures=refusal_issues(batch.refusals))
    else:
        try:
            result = run_batch_checkpoint(batch.frames, batch_id or batch_dir.name, now=now)
        except ProjectNotInitialized as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.to_text())
    if batch.refusals and not as_json:
        typer.echo("  (ingestion refuses these while typing the batch: the gate did not run)")
    raise typer.Exit(code=0 if result.success else 1)


@app.command()
def docs(
    serve: bool = typer.Option(False, "--serve", help="Serve the site over HTTP on settings.docs_port."),
    port: Optional[int] = typer.Option(None, min=0, max=65535, help="Port to serve on (default: PM_DOCS_PORT)."),
) -> None:
    """Build the Data Docs site (and with --serve, serve it and print its URL)."""
    from config.settings import get_settings
    from validation.docs import DocsServeError, build_docs, serve_docs

    settings = get_settings()
    if serve:
        try:
            serve_docs(settings, port=port, announce=lambda msg: typer.echo(msg))
        except DocsServeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
    else:
        typer.echo(f"Data Docs: {build_docs(settings)}")


if __name__ == "__main__":
    app()

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
    as_json: bool = typer.Option(False, "--json", help="Print the GateResult as JSON."),
) -> None:
    """Run the batch checkpoints on a typed Parquet batch; exit 1 if it would be refused."""
    from validation.batch_io import BatchReadError, read_parquet_batch
    from validation.gate import run_batch_checkpoint

    try:
        tables = read_parquet_batch(batch_dir)
    except BatchReadError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    result = run_batch_checkpoint(tables, batch_id or batch_dir.name)
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.to_text())
    raise typer.Exit(code=0 if result.success else 1)


@app.command()
def docs(
    serve: bool = typer.Option(False, "--serve", help="Serve the site over HTTP on settings.docs_port."),
    port: Optional[int] = typer.Option(None, help="Port to serve on (default: PM_DOCS_PORT)."),
) -> None:
    """Build the Data Docs site (and with --serve, serve it and print its URL)."""
    from config.settings import get_settings
    from validation.docs import build_docs, serve_docs

    settings = get_settings()
    if serve:
        serve_docs(settings, port=port, announce=lambda msg: typer.echo(msg))
    else:
        typer.echo(f"Data Docs: {build_docs(settings)}")


if __name__ == "__main__":
    app()

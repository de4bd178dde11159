"""`python -m serving`: run the prediction service under uvicorn (host and port from config.settings)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Prediction service (FastAPI under uvicorn).", add_completion=False)


@app.command()
def serve(
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes (each loads its own model and FeatureStore, "
                                               "and /metrics shows only the counters of the worker that answers; for "
                                               "summable metrics run one worker per process and port and scrape "
                                               "each)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve on PM_SERVING_HOST:PM_SERVING_PORT."""
    import uvicorn

    from config.settings import SettingsError, get_settings
    from serving.options import ServingOptions

    settings = get_settings()
    try:  # here, not in each worker's create_app, where uvicorn would print a traceback per worker
        ServingOptions.from_json(settings.serving_options)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    uvicorn.run("serving.app:create_app", factory=True, host=settings.serving_host, port=settings.serving_port,
                workers=workers, log_level=log_level)

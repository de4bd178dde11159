"""Data Docs: build the static site from stored validation results, and serve it locally.

The site lives at a stable path, ``<settings.data_dir>/gx/data_docs/local_site/`` (home page
``index.html``); every checkpoint run already updates it, :func:`build_docs` rebuilds it whole.
"""

from __future__ import annotations

import functools
import http.server
from pathlib import Path
from typing import Callable

from config.settings import Settings
from validation.project import DOCS_SITE_NAME, docs_index, get_project

# Data Docs are a local review tool: serve on the loopback interface only.
DOCS_HOST = "127.0.0.1"


class DocsServeError(RuntimeError):
    """The Data Docs server cannot listen on its port (in use, not allowed)."""


def build_docs(settings: Settings) -> Path:
    """Rebuild the Data Docs site (latest validation results, all suites) and return index.html."""
    project = get_project(settings)
    project.context.build_data_docs(site_names=[DOCS_SITE_NAME])
    index = docs_index(settings)
    if not index.is_file():
        raise RuntimeError(f"GX did not write the Data Docs home page {index}")
    return index


def docs_url(port: int) -> str:
    return f"http://{DOCS_HOST}:{port}/index.html"


def make_server(site_dir: Path, port: int) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the static site (port 0: any free port, see ``server_address``)."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
            pass

    handler = functools.partial(QuietHandler, directory=str(site_dir))
    return http.server.ThreadingHTTPServer((DOCS_HOST, port), handler)


def serve_docs(settings: Settings, port: int | None = None, announce: Callable[[str], None] = print) -> None:
    """Build the docs, then serve them until interrupted (the port is taken first: a busy one fails fast)."""
    port = settings.docs_port if port is None else port
    try:
        server = make_server(docs_index(settings).parent, port)
    except (OSError, OverflowError) as exc:  # in use, not allowed; OverflowError: not a port number
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DocsServeError(f"cannot serve Data Docs on {DOCS_HOST}:{port}: {reason} "
                             "(choose another port with --port or the PM_DOCS_PORT setting)") from None
    try:
        build_docs(settings)
    except BaseException:
        server.server_close()
        raise
    announce(f"Serving Data Docs at {docs_url(server.server_address[1])} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

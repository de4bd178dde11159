"""What every package's `python -m <package>` shares: a bad setting is one line, not a traceback."""

from __future__ import annotations

import sys
from typing import Callable

from config.settings import SettingsError


def main(app: Callable[[], object]) -> None:
    """Run a package's Typer app; a :class:`SettingsError` (a bad environment variable, named in the
    message) prints ``error: ...`` on stderr and exits 2."""
    try:
        app()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

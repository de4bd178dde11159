"""Assertions on what a package's Typer CLI prints."""

from __future__ import annotations


def expected_error(res) -> str:
    """The CLI's one-line report of an expected error: exit 1, `error: ...`, no traceback."""
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)  # not an uncaught error
    errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0]

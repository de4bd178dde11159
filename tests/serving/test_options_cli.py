"""Fast checks without servers: the CLI and the option validation."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.options import ServingOptions


def test_cli_help_names_the_settings_it_serves_on():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "PM_SERVING_HOST:PM_SERVING_PORT" in result.output and "--workers" in result.output


@pytest.mark.parametrize("kwargs, message", [
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"shadow_share": 1.5}, "shadow_share"),
    ({"log_queue_size": 0}, "log_queue_size"),
    ({"online_timeout_s": 0}, "online_timeout_s"),
])
def test_invalid_options_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ServingOptions(**kwargs)

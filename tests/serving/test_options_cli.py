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


def test_options_from_the_settings_json():
    assert ServingOptions.from_json("") == ServingOptions()
    options = ServingOptions.from_json('{"ab_share": 0.25, "ab_salt": "exp-7", "max_batch_size": 10}')
    assert (options.ab_share, options.ab_salt, options.max_batch_size) == (0.25, "exp-7", 10)
    assert options.load_challenger and not ServingOptions().load_challenger


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"ab_shares": 0.2}', r"unknown option\(s\) \['ab_shares'\]"),
    ('{"max_batch_size": "10"}', "option 'max_batch_size' must be a int"),
    ('{"load_fallback": 1}', "option 'load_fallback' must be a bool"),
    ('{"ab_share": 2}', "ab_share must be within"),
])
def test_bad_options_json_is_refused_naming_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        ServingOptions.from_json(text)


def test_the_app_takes_its_options_from_settings(tmp_path):
    from config.settings import Settings
    from serving.app import create_app

    settings = Settings.from_env({"PM_DATA_DIR": str(tmp_path), "PM_SERVING_OPTIONS": '{"max_batch_size": 7}'})
    assert create_app(settings).state.options == ServingOptions(max_batch_size=7)  # no server needed
    with pytest.raises(ValueError, match="PM_SERVING_OPTIONS: unknown option"):
        create_app(Settings.from_env({"PM_DATA_DIR": str(tmp_path), "PM_SERVING_OPTIONS": '{"x": 1}'}))

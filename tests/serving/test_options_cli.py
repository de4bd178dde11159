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
    ({"max_body_bytes": 0}, "max_body_bytes"),
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


def test_the_body_limit_comes_from_the_settings_json(tmp_path):
    from config.settings import Settings
    from serving.app import BodyLimitMiddleware, create_app

    settings = Settings.from_env({"PM_DATA_DIR": str(tmp_path), "PM_SERVING_OPTIONS": '{"max_body_bytes": 2048}'})
    app = create_app(settings)
    assert app.state.options.max_body_bytes == 2048
    assert [m.kwargs for m in app.user_middleware if m.cls is BodyLimitMiddleware] == [{"limit": 2048}]
    with pytest.raises(ValueError, match="option 'max_body_bytes' must be a int"):
        ServingOptions.from_json('{"max_body_bytes": "1MB"}')


def test_the_app_takes_its_options_from_settings(tmp_path):
    from config.settings import Settings
    from serving.app import create_app

    settings = Settings.from_env({"PM_DATA_DIR": str(tmp_path), "PM_SERVING_OPTIONS": '{"max_batch_size": 7}'})
    assert create_app(settings).state.options == ServingOptions(max_batch_size=7)  # no server needed
    with pytest.raises(ValueError, match="PM_SERVING_OPTIONS: unknown option"):
        create_app(Settings.from_env({"PM_DATA_DIR": str(tmp_path), "PM_SERVING_OPTIONS": '{"x": 1}'}))


@pytest.mark.parametrize("name", ["poll_interval_s", "online_timeout_s", "log_flush_interval_s",
                                  "shadow_share", "ab_share"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_options_are_refused_by_name(name, value):
    with pytest.raises(ValueError, match=name):
        ServingOptions(**{name: value})


@pytest.mark.parametrize("kwargs, message", [
    ({"poll_interval_s": -1.0}, "poll_interval_s"),
    ({"online_timeout_s": -0.5}, "online_timeout_s"),
    ({"log_flush_interval_s": 0}, "log_flush_interval_s"),
    ({"log_flush_interval_s": -2.0}, "log_flush_interval_s"),
    ({"log_flush_rows": 0}, "log_flush_rows"),
    ({"log_flush_rows": -5}, "log_flush_rows"),
    ({"max_batch_size": -1}, "max_batch_size"),
    ({"ab_share": -0.1}, "ab_share"),
    ({"poll_interval_s": 1e12}, "poll_interval_s"),  # threading waits overflow past ~1e9 s
    ({"max_batch_size": True}, "max_batch_size"),
    ({"poll_interval_s": "30"}, "poll_interval_s"),
])
def test_out_of_range_options_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ServingOptions(**kwargs)


@pytest.mark.parametrize("text, name", [
    ('{"poll_interval_s": NaN}', "poll_interval_s"),
    ('{"log_flush_interval_s": Infinity}', "log_flush_interval_s"),
    ('{"online_timeout_s": -Infinity}', "online_timeout_s"),
    ('{"log_flush_rows": -1}', "log_flush_rows"),
])
def test_non_finite_json_options_are_refused_by_name(text, name):
    with pytest.raises(ValueError, match=name):
        ServingOptions.from_json(text)


def test_zero_poll_interval_still_disables_polling():
    assert ServingOptions(poll_interval_s=0).poll_interval_s == 0

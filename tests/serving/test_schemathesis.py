"""Property-based API test: schemathesis generates requests from our OpenAPI spec and sends them to the
app running under a real uvicorn server (real Redis, real MLflow); no 5xx, no response off the schema."""

from __future__ import annotations

from typing import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from serving.app import create_app
from tests.serving.conftest import FAST
from tests.serving.world import served

pytestmark = pytest.mark.slow


@pytest.fixture
def live_url(serving_settings, online) -> Iterator[str]:
    with served(create_app(serving_settings, FAST)) as port:
        yield f"http://127.0.0.1:{port}"


def test_api_conforms_to_its_schema(serving_settings, live_url):
    """Every operation of the spec, a few generated cases each (schemathesis' pytest plugin does not
    work with this pytest, so the operations are driven through hypothesis directly)."""
    from hypothesis import given

    schema = schemathesis.openapi.from_dict(create_app(serving_settings, FAST).openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /predict", "POST /predict/batch", "GET /ready",
                                                "GET /model", "POST /admin/reload", "GET /metrics"}
    for operation in operations:
        sent: list[int] = []

        @given(case=operation.as_strategy())
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            response = case.call_and_validate(base_url=live_url)
            sent.append(response.status_code)
            assert response.status_code < 500, f"{operation.label}: {response.status_code} {response.text}"

        check()
        assert sent, f"no case generated for {operation.label}"

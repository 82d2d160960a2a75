"""The OpenAPI schema tells the truth: schemathesis drives every documented operation of the in-process app
(PostgreSQL + Redis) and finds no server error, no undocumented status and no answer off its schema.

Bounded for the test command: a fixed seed (derandomized), a few examples per operation, no shrinking.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from tests.environment import redis_url_for_this_process
from tests.integration.conftest import MockServerThread, ReusableDatabase, make_settings, pg_url
from tests.integration.helpers import ADMIN

CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance)
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def api_schema(
    pg_module_database: ReusableDatabase, mock_upstream: MockServerThread
) -> Iterator[schemathesis.BaseSchema]:
    """The schema as the running app serves it at /schema/openapi.json, its lifespan started once."""
    database = pg_url(pg_module_database.name)
    settings_ = make_settings(
        database,
        redis_url_for_this_process(),
        mock_upstream.url,
        admin_key=ADMIN,
        stripe_webhook_secret="whsec_schemathesis",  # configured: a forged event is a 400, not a 503
    )
    app = create_app(settings_)
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    try:
        yield schema.include(path_regex="^/(api/v1/|health|ready|v1/models)")
    finally:
        asgi.shutdown_lifespans()


BOUNDED = settings(
    max_examples=6,
    derandomize=True,  # a fixed seed: the same cases every run
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def test_every_operation_answers_as_documented(api_schema: Any) -> None:
    """Each operation in turn, a few generated cases each; every failure is collected, then reported."""
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @BOUNDED
        @given(case=operation.as_strategy())
        def drive(case: Any) -> None:
            case.call_and_validate(headers=AS_ADMIN, checks=CHECKS)

        try:
            drive()
        except Exception as exc:  # one operation's failure must not hide the next one's
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert operations >= 30
    assert failures == []


def test_the_schema_documents_the_error_envelope_on_every_admin_route(api_schema: Any) -> None:
    raw = api_schema.raw_schema
    assert raw["paths"], "no paths"
    for path, operations in raw["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("400", "401", "404"):
                content = responses[status]["content"]["application/json"]["schema"]
                assert content == {"$ref": "#/components/schemas/ErrorEnvelope"}, (method, path, status)
    assert "503" in raw["paths"]["/ready"]["get"]["responses"]  # not ready: documented too
    envelope = raw["components"]["schemas"]["ErrorDetail"]
    assert set(envelope["properties"]) == {"message", "type", "param", "code"}

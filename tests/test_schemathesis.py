"""Schemathesis against ``/api/schema/``: requests generated from the schema
alone, as a citizen (JWT), a department's system (integrator key) and a
scanner terminal (scanner key), each operation with the credentials its
``security`` names. Every answer must be no 5xx, carry a documented status
code and content type, and have the documented body.

The requests go to the project's WSGI application in this process (no
server, so a case costs milliseconds), on the test database with a small
cast: a verified citizen with an application, a service, a department with
an endpoint and both kinds of key.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.conftest import client_for

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture
def credentials(citizen, integrator_key, scanner_key, service) -> dict[str, str]:
    """The ``Authorization`` header of each security scheme in the schema."""
    bearer = client_for(citizen)._credentials["HTTP_AUTHORIZATION"]
    return {
        "CitizenJWT": bearer,
        "ApiKey": f"Api-Key {integrator_key.raw}",
        "ScannerApiKey": f"Api-Key {scanner_key.raw}",
    }


def authorization(case, credentials: dict[str, str]) -> dict[str, str]:
    """The first scheme the operation accepts; none for a public one."""
    for requirement in case.operation.definition.raw.get("security") or []:
        for name in requirement:
            return {"Authorization": credentials[name]}
    return {}


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_answer_is_documented(case, credentials) -> None:
    case.call_and_validate(headers=authorization(case, credentials), checks=CHECKS)

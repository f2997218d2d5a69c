"""Schemathesis against ``/api/schema/``: requests generated from the schema
alone, as a citizen (JWT), a department's system (integrator key) and a
scanner terminal (scanner key), each operation with the credentials its
``security`` names. Every answer must be no 5xx, carry a documented status
code and content type, and have the documented body (headers included).

- Every operation, with valid and invalid input (Schemathesis' examples,
  coverage and fuzzing phases, a few cases each).
- Every secured operation with another actor's key (its documented 403) and
  with none (401).
- Stateful: the schema's links followed from lists and created objects to
  the operations on them, over a cast that has one of everything.

No operation is left out: the schema documents every route under
``/api/v1/``, the sandbox cashier and the payment channels' callbacks
included (they answer problems like every other route).

The requests go to the project's WSGI application in this process (no
server, so a case costs milliseconds; the WSGI fast paths in front of
Django included), on the test database.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.tokens import tokens_issue
from config.wsgi import application
from tests.conftest import client_for, client_with_key
from tests.payments.conftest import apply_for, open_order
from tests.qr.conftest import create_venue
from tests.services.conftest import department_endpoint
from tests.services.department import DepartmentServer
from tests.services.factories import ServiceFactory

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture
def wsgi_keeps_connection():
    """The WSGI application closes the database connection after each
    request, and with it the test's transaction (on PostgreSQL); Django's
    own test client unhooks that for the same reason, and hooks it again
    after each of its requests, so tests ask for this fixture last."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def credentials(citizen, integrator_key, scanner_key, service) -> dict[str, str]:
    """The ``Authorization`` header of each security scheme in the schema."""
    # As the app holds it: the access token of a login.
    bearer = f"Bearer {tokens_issue(user=citizen)['access']}"
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
def test_every_answer_is_documented(case, credentials, wsgi_keeps_connection) -> None:
    case.call_and_validate(headers=authorization(case, credentials), checks=CHECKS)


# Who must be refused where: a department's key on a citizen's route, a
# scanner's key on a department's, a department's integrator key on a
# scanner's; and nobody at all anywhere credentials are asked for.
WRONG_SCHEME = {"CitizenJWT": "ApiKey", "ApiKey": "ScannerApiKey", "ScannerApiKey": "ApiKey"}

# Requests that fit the schema, credentials left to the test: for the
# credentials test below (without the coverage phase's own probes of missing
# auth and other methods, so that the credentials sent are the ones under
# test) and for following links (to reach the objects they lead to). No NUL
# characters: the API refuses them (400 malformed_request) before it looks at
# credentials, which the bad-input tests cover.
positive = schemathesis.openapi.from_wsgi(
    "/api/schema/",
    application,
    config=SchemathesisConfig.from_dict(
        {
            "phases": {"coverage": {"enabled": False}, "examples": {"enabled": False}},
            "generation": {
                "mode": "positive",
                "with-security-parameters": False,
                "allow-x00": False,
            },
        }
    ),
)
secured = positive.include(func=lambda ctx: bool(ctx.operation.definition.raw.get("security")))


@pytest.mark.django_db
@secured.parametrize()
@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_wrong_credentials_are_refused_as_documented(
    case, credentials, wsgi_keeps_connection
) -> None:
    [requirement, *_] = case.operation.definition.raw["security"]
    [scheme] = requirement
    wrong = case.call_and_validate(
        headers={"Authorization": credentials[WRONG_SCHEME[scheme]]}, checks=CHECKS
    )
    assert wrong.status_code == 403, wrong.text
    nobody = case.call_and_validate(headers={}, checks=CHECKS)
    assert nobody.status_code == 401, nobody.text


@pytest.fixture
def cast_with_records(
    citizen, integrator_key, service, department, category, django_capture_on_commit_callbacks
):
    """One of everything a link can lead to: the citizen's application (and
    its messages) and a payment order, the department's endpoint with a
    delivery, a venue code and a service guide."""
    with DepartmentServer() as server:
        department_endpoint(department, server, ["application.submitted"])
        citizen_api = client_for(citizen)
        with django_capture_on_commit_callbacks(execute=True):
            apply_for(citizen_api, service)
        fee_service = ServiceFactory(
            code="id-card-renew", department=department, category=category, fee_fen=2000
        )
        open_order(citizen_api, apply_for(citizen_api, fee_service))
        create_venue(client_with_key(integrator_key.raw), service.code)
        yield


@pytest.mark.django_db
def test_links_lead_where_they_say(credentials, cast_with_records, wsgi_keeps_connection) -> None:
    """Stateful: Schemathesis follows the schema's links (a list's first item
    to its detail and actions, a created object to its own operations), so
    operations on existing objects are reached, not only their 404s."""

    class Workflow(positive.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": authorization(case, credentials)}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    Workflow.run(
        settings=settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )

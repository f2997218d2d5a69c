"""The statements of the application paths the benchmarks load
(benchmarks/scale.py, benchmarks/load.py) stay the same whatever the data:
a long timeline, many overdue applications by many citizens of many
departments cost what one short one costs.

Each test counts the same request on a small world and on a big one and
holds the two equal (a query per row or per related object shows as a
difference), under the count README's *Performance* gives.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.api_keys import api_key_create
from accounts.models import User
from config.pages import catalog_pages
from services.applications import (
    application_department_update,
    application_submit,
    application_supplement,
)
from services.models import Application, Service, TimelineEntry
from tests.accounts.factories import CitizenFactory
from tests.services.conftest import GOOD_FORM
from tests.services.factories import ServiceFactory
from tests.wsgi import environ_for, wsgi_call

pytestmark = pytest.mark.django_db

CYCLES = 15  # needs_info and the citizen's supplement, 2 timeline entries each


def statements(request: Callable[[], Any]) -> tuple[Any, list[str]]:
    """What ``request`` answered, and the SQL it ran."""
    with CaptureQueriesContext(connection) as captured:
        answer = request()
    return answer, [q["sql"] for q in captured.captured_queries]


def flat(small: list[str], big: list[str], budget: int) -> None:
    listing = "\n".join(["small:", *(q[:160] for q in small), "big:", *(q[:160] for q in big)])
    assert len(big) == len(small), listing
    assert len(big) <= budget, listing


def department_key(application: Application):
    key, _raw = api_key_create(department=application.department, scope="integrator")
    return key


def submitted(citizen: User, service: Service) -> Application:
    return application_submit(citizen=citizen, service=service, form=GOOD_FORM)


def with_long_timeline(citizen: User, service: Service) -> Application:
    """Accepted, then asked for more and supplemented ``CYCLES`` times: an
    accepted application with 2 + 2 × CYCLES timeline entries."""
    application = submitted(citizen, service)
    key = department_key(application)
    application = application_department_update(
        application=application, status="accepted", api_key=key
    )
    for n in range(CYCLES):
        application = application_department_update(
            application=application, status="needs_info", note=f"请补充第{n}份", api_key=key
        )
        application = application_supplement(
            citizen=citizen, application=application, form={"copies": 1 + n % 5}
        )
    assert TimelineEntry.objects.filter(application=application).count() == 2 + 2 * CYCLES
    return application


# --- A citizen's application ------------------------------------------------------------


def test_an_applications_detail_costs_the_same_with_a_long_timeline(
    citizen, citizen_api, service
) -> None:
    """README (*At city scale*): 3 statements at every size."""
    short = submitted(citizen, service)
    long = with_long_timeline(citizen, service)

    answer, small = statements(lambda: citizen_api.get(f"/api/v1/applications/{short.pk}/"))
    assert answer.status_code == 200 and len(answer.json()["timeline"]) == 1
    answer, big = statements(lambda: citizen_api.get(f"/api/v1/applications/{long.pk}/"))
    assert answer.status_code == 200 and len(answer.json()["timeline"]) == 2 + 2 * CYCLES

    flat(small, big, budget=3)


# --- A department's progress report ----------------------------------------------------


def warm(integrator_api) -> None:
    """The key's first request of the interval also writes its last use: not counted."""
    assert integrator_api.get("/api/v1/dept/applications/").status_code == 200


def report(integrator_api, application: Application, status: str) -> list[str]:
    answer, sql = statements(
        lambda: integrator_api.post(
            f"/api/v1/dept/applications/{application.number}/status/",
            {"status": status, "note": "进度"},
            format="json",
        )
    )
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["status"] == status
    assert len(body["timeline"]) == TimelineEntry.objects.filter(application=application).count()
    return sql


@pytest.mark.parametrize("status", ["needs_info", "completed"])
def test_a_progress_report_costs_the_same_on_a_long_timeline(
    citizen, integrator_api, service, status
) -> None:
    """The same report on an application just accepted and on one with a
    long history (both accepted): the answer carries the whole timeline,
    read in one statement, whatever its length."""
    new = submitted(citizen, service)
    new = application_department_update(
        application=new, status="accepted", api_key=department_key(new)
    )
    long = with_long_timeline(citizen, service)
    warm(integrator_api)

    # 12 on SQLite and PostgreSQL: the key; the application and its timeline;
    # the savepoint, the lock, the update, the entry, the citizen's message,
    # the audit entry, its release; the application and its timeline again.
    small = report(integrator_api, new, status)
    big = report(integrator_api, long, status)

    flat(small, big, budget=12)


def test_accepting_costs_the_same_after_many_earlier_steps(
    citizen, integrator_api, service
) -> None:
    """``accepted`` (the deadline starts: the working days are looked up) on
    a new submission and on one whose timeline already holds many steps (a
    history imported from a hall's system, say)."""
    new = submitted(citizen, service)
    long = submitted(citizen, service)
    start = timezone.now() - dt.timedelta(days=3)
    TimelineEntry.objects.bulk_create(
        TimelineEntry(
            application=long,
            status="submitted",
            actor="system",
            note=f"窗口记录{n}",
            at=start + dt.timedelta(minutes=n),
        )
        for n in range(30)
    )
    warm(integrator_api)

    # 13: a progress report's 12 and the working days the deadline counts.
    small = report(integrator_api, new, "accepted")
    big = report(integrator_api, long, "accepted")

    flat(small, big, budget=13)


# --- The operators' overdue list -------------------------------------------------------------


def overdue(count: int, department) -> list[Application]:
    """``count`` accepted applications past their due date, each by its own
    citizen to its own service (of ``department`` for the first, of new
    departments for the rest)."""
    made = []
    for n in range(count):
        citizen = CitizenFactory(verified=True)
        service = ServiceFactory(
            **({"department": department} if n == 0 else {}), code=f"overdue-{department.pk}-{n}"
        )
        application = submitted(citizen, service)
        application = application_department_update(
            application=application, status="accepted", api_key=department_key(application)
        )
        made.append(application)
    Application.objects.filter(pk__in=[a.pk for a in made]).update(
        due_date=timezone.localdate() - dt.timedelta(days=3)
    )
    return made


def test_the_overdue_list_costs_the_same_for_one_and_for_many(
    operator_client, department, other_department
) -> None:
    """README (*At city scale*): 6 statements at every size. The rows of
    the second world are by different citizens to services of different
    departments, so a lookup per row of either shows."""
    url = "/admin/services/application/"
    (first,) = overdue(1, department)
    answer, small = statements(lambda: operator_client.get(url, {"deadline": "overdue"}))
    assert answer.status_code == 200
    assert answer.content.decode().count(first.number) >= 1

    many = overdue(20, other_department)
    answer, big = statements(lambda: operator_client.get(url, {"deadline": "overdue"}))
    assert answer.status_code == 200
    page = answer.content.decode()
    assert all(application.number in page for application in [first, *many])

    flat(small, big, budget=6)


# --- The catalog's revalidation (If-None-Match answered 304) --------------------------------

LIST = "/api/v1/services/"


def revalidated(api, url: str) -> list[str]:
    """The SQL of a revalidation of ``url`` with the ETag it was given."""
    etag = api.get(url)["ETag"]
    answer, sql = statements(lambda: api.get(url, HTTP_IF_NONE_MATCH=etag))
    assert answer.status_code == 304 and answer.content == b""
    return sql


@pytest.fixture
def kept(monkeypatch) -> None:
    """The catalog has a version, as with Redis (its own: no answer kept in
    this process by another test under the same one can be given)."""
    version = secrets.token_hex(8).encode()
    monkeypatch.setattr(catalog_pages, "version", lambda: version)


@pytest.fixture
def not_kept(monkeypatch) -> None:
    """The catalog has no version, as without Redis: every page is rendered."""
    monkeypatch.setattr(catalog_pages, "version", lambda: None)


def test_a_revalidation_of_a_kept_page_costs_no_statement(api, kept) -> None:
    """README: 0 statements when the page is kept, the guide and the list,
    however big the catalog."""
    call_command("seed_demo", verbosity=0)
    assert revalidated(api, LIST) == []
    assert revalidated(api, "/api/v1/services/id-card-renew/") == []


@pytest.mark.integration  # the version in Redis
def test_a_revalidation_costs_no_statement_with_redis(api) -> None:
    call_command("seed_demo", verbosity=0)
    assert revalidated(api, LIST) == []
    assert revalidated(api, "/api/v1/services/id-card-renew/") == []


def served_get(path: str, **extra: str) -> tuple[int, dict[str, str], bytes]:
    from config.wsgi import application

    return wsgi_call(application, environ_for(path, b"", "", REQUEST_METHOD="GET", **extra))


def test_a_revalidation_costs_no_statement_where_gunicorn_serves_it(kept) -> None:
    """Through config.wsgi's application: the first 304 is Django's (the
    page kept), the next the layer in front of Django gives again."""
    call_command("seed_demo", verbosity=0)
    for path in (LIST, "/api/v1/services/id-card-renew/"):
        status, headers, _body = served_get(path)
        assert status == 200
        for _ in range(2):
            (status, _headers, body), sql = statements(
                lambda: served_get(path, HTTP_IF_NONE_MATCH=headers["ETag"])  # noqa: B023
            )
            assert (status, body) == (304, b"")
            assert sql == []


def test_a_revalidation_of_a_rendered_page_costs_the_same_for_one_service_and_for_the_city(
    api, not_kept, department, category
) -> None:
    """Without a version (no Redis) the page is rendered for its ETag: the
    count and the page for the list, the service for a guide (README: ≤ 2
    and ≤ 1 when rendered), whatever the catalog holds."""
    ServiceFactory(code="only-one", department=department, category=category)
    small_list = revalidated(api, LIST)
    small_guide = revalidated(api, "/api/v1/services/only-one/")

    call_command("seed_demo", verbosity=0)
    assert Service.objects.count() > 40
    flat(small_list, revalidated(api, LIST), budget=2)
    flat(small_guide, revalidated(api, "/api/v1/services/id-card-renew/"), budget=1)

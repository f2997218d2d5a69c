"""A department's deliveries, ``GET /api/v1/dept/deliveries/``, are read
along an index in the list's order (newest first, by ``created_at`` then
``id``) with each filter the list takes: the department, its status, one
endpoint, one endpoint's status. A city department accumulates millions of
deliveries; reading them all and sorting them for each page grows with
them (benchmarks/scale.py measures the list at 10^4 to 10^6).

The delivery holds its endpoint's department (``Delivery.department``),
written with it; on PostgreSQL the database holds the two together, so an
endpoint with deliveries cannot move to another department and leave them
listed under the old one."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from services.models import Delivery, Endpoint
from services.routing import endpoints, events, outbox
from tests.services.conftest import department_endpoint, submit

pytestmark = pytest.mark.django_db

LIST = "/api/v1/dept/deliveries/"


@pytest.fixture
def unsent(monkeypatch) -> None:
    """Deliveries are written, never sent: they stay pending."""
    monkeypatch.setattr(outbox, "deliveries_nudge", lambda *args: None)
    monkeypatch.setattr(outbox, "deliveries_wake", lambda: True)


@pytest.fixture
def two_endpoints(department, service, department_server, unsent) -> list[Endpoint]:
    first = department_endpoint(department, department_server, [events.APPLICATION_SUBMITTED])
    second, _secret = endpoints.endpoint_create(
        department=department,
        url=department_server.url("/hrss/second"),
        events=[events.APPLICATION_SUBMITTED],
        actor=None,
    )
    return [first, second]


@pytest.fixture
def others(other_department, department_server, unsent) -> Endpoint:
    """Another department's endpoint, with a ping of its own."""
    endpoint = department_endpoint(other_department, department_server, ["ping"])
    endpoints.endpoint_ping(endpoint=endpoint, actor=None)
    return endpoint


def asked(two_endpoints: list[Endpoint]) -> list[dict[str, Any]]:
    """Every combination of the list's filters."""
    hook = str(two_endpoints[0].pk)
    return [{}, {"status": "pending"}, {"endpoint": hook}, {"endpoint": hook, "status": "pending"}]


def list_statement(client, params: dict[str, Any], url: str = LIST) -> tuple[dict, str]:
    """The page ``client`` gets for ``params``, and the statement that read its deliveries."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params)
    assert response.status_code == 200, response.json()
    reads = [q["sql"] for q in captured.captured_queries if '"services_delivery"' in q["sql"]]
    assert len(reads) == 1, reads
    return response.json(), reads[0]


def test_deliveries_carry_their_endpoints_department(
    citizen_api, department, two_endpoints, others
) -> None:
    """An application's event (the event names its department) and a ping
    (the event names none) alike."""
    assert submit(citizen_api).status_code == 201
    endpoints.endpoint_ping(endpoint=two_endpoints[1], actor=None)
    made = list(Delivery.objects.values_list("endpoint__department_id", "department_id"))
    assert len(made) == 4
    assert all(of_endpoint == own for of_endpoint, own in made)


def test_the_list_reads_the_deliveries_own_department_or_one_endpoints(
    citizen_api, integrator_api, two_endpoints, others
) -> None:
    """Filtered through the endpoint's department, PostgreSQL read every
    delivery of the department's endpoints and sorted them for each page;
    on the delivery's own column an index holds them in the list's order.
    One endpoint's are found by the endpoint alone, its department checked
    on its row: with the delivery's department in the query too, PostgreSQL
    may walk the department's index instead and pass over every other
    endpoint's rows. The endpoint is not fetched (the list shows its id),
    and a page costs the same statements for one delivery as for many."""
    assert submit(citizen_api).status_code == 201
    counts = {}
    for params in asked(two_endpoints):
        page, sql = list_statement(integrator_api, params)
        assert page["results"], params
        columns, where = sql.split(" FROM ", 1)[0], sql.split(" WHERE ", 1)[1]
        assert '"services_endpoint"' not in columns, sql
        if "endpoint" in params:
            assert '"services_delivery"."endpoint_id" = ' in where, sql
            assert '"services_endpoint"."department_id" = ' in where, sql
            assert '"services_delivery"."department_id"' not in where, sql
        else:
            assert '"services_delivery"."department_id" = ' in where, sql
            assert '"services_endpoint"' not in sql, sql
        counts[str(params)] = len(page["results"])
    for _ in range(4):
        assert submit(citizen_api).status_code == 201
    for params in asked(two_endpoints):
        with CaptureQueriesContext(connection) as one:
            integrator_api.get(LIST, {**params, "page_size": 1})
        with CaptureQueriesContext(connection) as many:
            page = integrator_api.get(LIST, params).json()
        assert len(page["results"]) > counts[str(params)]
        assert len(many.captured_queries) == len(one.captured_queries), params


def test_another_departments_deliveries_are_never_listed(
    citizen_api, integrator_api, other_integrator_key, two_endpoints, others
) -> None:
    from tests.conftest import client_with_key

    assert submit(citizen_api).status_code == 201
    mine = {
        str(pk) for pk in Delivery.objects.exclude(endpoint=others).values_list("pk", flat=True)
    }
    theirs = str(Delivery.objects.get(endpoint=others).pk)
    assert {d["id"] for d in integrator_api.get(LIST).json()["results"]} == mine
    other_api = client_with_key(other_integrator_key.raw)
    assert [d["id"] for d in other_api.get(LIST).json()["results"]] == [theirs]
    # Another department's endpoint as the filter finds nothing, not its deliveries.
    assert integrator_api.get(LIST, {"endpoint": str(others.pk)}).json()["results"] == []
    assert integrator_api.get(f"{LIST}{theirs}/").status_code == 404


# --- PostgreSQL's plans ------------------------------------------------------------------------

# The indexes each combination of filters may be read along in the list's
# order. With a status, the status index is the one at city scale (the
# scale benchmark's plans); in a test's few rows the planner may as well
# walk the same key's feed and filter the status on the way, as it did now
# and then: either reads no row twice and sorts none.
INDEXES = {
    (): "delivery_dept_feed",
    ("status",): "delivery_dept_status|delivery_dept_feed",
    ("endpoint",): "delivery_endpoint_recent",
    ("endpoint", "status"): "delivery_endpoint_status|delivery_endpoint_recent",
}


def plan_of(sql: str) -> str:
    """The plan PostgreSQL makes for ``sql`` when reading a whole table or
    sorting costs what it costs at city scale (a test's tables are too small
    for the planner to see it): a plan that still sorts has no index to
    read the rows along in the list's order."""
    with connection.cursor() as cursor:
        # Statistics of the rows the test made, not whatever autovacuum left.
        cursor.execute("ANALYZE services_delivery")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        try:
            cursor.execute("EXPLAIN " + sql)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                cursor.execute(f"RESET {setting}")


@pytest.mark.integration
def test_each_page_is_read_along_an_index_in_the_lists_order(
    citizen_api, integrator_api, two_endpoints, others
) -> None:
    """First pages and pages after a position, for each combination of
    filters: the index named, no sort."""
    for _ in range(3):
        assert submit(citizen_api).status_code == 201
    for params in asked(two_endpoints):
        index = INDEXES[tuple(sorted(params))]
        page, first = list_statement(integrator_api, {**params, "page_size": 1})
        assert page["next"], params
        _page, deeper = list_statement(integrator_api, {}, page["next"])
        assert ") < (" in deeper, deeper  # after the position
        for sql in (first, deeper):
            plan = plan_of(sql)
            scan = rf"Index Scan(?: Backward)? using (?:{index}) on services_delivery"
            assert re.search(scan, plan), (params, plan)
            assert "Sort" not in plan, (params, plan)


@pytest.mark.integration
def test_an_endpoint_with_deliveries_cannot_move_to_another_department(
    citizen_api, other_department, two_endpoints
) -> None:
    assert submit(citizen_api).status_code == 201
    hook = two_endpoints[0]
    with pytest.raises(IntegrityError), transaction.atomic():
        Endpoint.objects.filter(pk=hook.pk).update(department=other_department)
    delivery = Delivery.objects.filter(endpoint=hook).get()
    with pytest.raises(IntegrityError), transaction.atomic():
        Delivery.objects.filter(pk=delivery.pk).update(department=other_department)
    # One without deliveries has nothing to leave behind.
    idle, _secret = endpoints.endpoint_create(
        department=hook.department,
        url="https://127.0.0.1:9/idle",
        events=["ping"],
        actor=None,
    )
    Endpoint.objects.filter(pk=idle.pk).update(department=other_department)


@pytest.mark.integration
def test_a_delivery_written_without_its_department_takes_its_endpoints(
    two_endpoints,
) -> None:
    """As code from before the column writes them, while an upgrade rolls
    out over the web nodes and workers."""
    hook = two_endpoints[0]
    event = outbox.event_publish(type="ping", data={}, endpoints=[])
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO services_delivery (id, event_id, endpoint_id, status, attempt_count, "
            "schedule_index, last_error, created_at) "
            "VALUES (gen_random_uuid(), %s, %s, 'pending', 0, 0, '', now())",
            [event.pk, hook.pk],
        )
    assert Delivery.objects.get(event=event).department_id == hook.department_id


@pytest.mark.integration
def test_the_upgrade_gives_each_delivery_its_endpoints_department(
    citizen_api, two_endpoints, others, monkeypatch
) -> None:
    """services 0015: the deliveries written before the column, in batches."""
    for _ in range(3):
        assert submit(citizen_api).status_code == 201
    with connection.cursor() as cursor:
        # As before the upgrade (this test's transaction undoes it).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE services_delivery ALTER COLUMN department_id DROP NOT NULL")
        cursor.execute("UPDATE services_delivery SET department_id = NULL")
    migration = importlib.import_module("services.migrations.0015_delivery_department_fill")
    monkeypatch.setattr(migration, "BATCH", 2)
    migration.fill_departments(apps, None)
    made = list(Delivery.objects.values_list("endpoint__department_id", "department_id"))
    assert len(made) == 7
    assert all(of_endpoint == own for of_endpoint, own in made)

"""Every list paged by number walks through rows that share a time page by
page, each row once: a department's endpoints, its venue codes and an
order's refunds (rows written by one statement, or in one microsecond,
share a ``created_at``). SQL gives no order among equal values, and
PostgreSQL may put them one way for a page's OFFSET and another way for the
next page's, or move a row written since among them, so each list ends its
order with the row's key. (The cursor lists: tests/test_feeds.py.)"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from payments.models import PaymentOrder, Refund
from qr.models import VenueCode
from services.models import Endpoint
from tests.feeds import walk
from tests.services.conftest import GOOD_FORM
from tests.services.factories import ServiceFactory

pytestmark = pytest.mark.django_db

SAME_TIME = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
ROWS = 20  # ROUTING_MAX_ENDPOINTS: a department's endpoints at most
SIZES = (1, 2, 3, 7, 19, 20)


def shuffled_ids(count: int) -> list[uuid.UUID]:
    """Keys whose order is not the order the rows are written in: the
    table's physical order says nothing of the list's."""
    ids = [uuid.UUID(int=(7 << 76) | (0x8 << 60) | n) for n in range(1, count + 1)]
    random.Random(count).shuffle(ids)
    return ids


def assert_each_once(listed: list, expected: list, size: int) -> None:
    twice = sorted({item for item in listed if listed.count(item) > 1})
    missed = sorted(set(expected) - set(listed))
    assert (twice, missed) == ([], []), size


def assert_walks(client, url: str, expected: list, *, key: str = "id") -> None:
    walks = {size: walk(client, url, {"page_size": size}, key=key) for size in SIZES}
    for size, listed in walks.items():
        assert_each_once(listed, expected, size)
    for size, listed in walks.items():
        assert listed == expected, size  # in the list's order, then by key


def test_a_departments_endpoints_made_at_one_time_are_each_listed_once(
    integrator_api, department
) -> None:
    made = Endpoint.objects.bulk_create(
        Endpoint(
            id=pk,
            department=department,
            url=f"https://dept.example.org/hook/{n}",
            events=["application.submitted"],
            secret="whsec_x",
            created_at=SAME_TIME,
        )
        for n, pk in enumerate(shuffled_ids(ROWS))
    )
    expected = sorted(str(e.id) for e in made)  # oldest first, then by id
    assert_walks(integrator_api, "/api/v1/dept/endpoints/", expected)


def venue_codes(department, service, ids: list[uuid.UUID]) -> list[VenueCode]:
    return VenueCode.objects.bulk_create(
        VenueCode(
            id=pk,
            department=department,
            service=service,
            label=f"{n}号窗口",
            jti=str(pk),
            kid="k1",
            code="x",
            created_at=SAME_TIME,
        )
        for n, pk in enumerate(ids)
    )


def test_a_departments_venue_codes_made_at_one_time_are_each_listed_once(
    integrator_api, department, service
) -> None:
    made = venue_codes(department, service, shuffled_ids(ROWS))
    expected = sorted((str(v.id) for v in made), reverse=True)  # newest first, then by id
    assert_walks(integrator_api, "/api/v1/dept/codes/", expected)


def test_venue_codes_deactivated_while_the_department_pages_through_them_are_each_listed_once(
    integrator_api, department, service
) -> None:
    """A department's script reads its codes page by page and deactivates
    those of each page as it goes: a deactivated row is written anew, and
    PostgreSQL puts a written row last among those of its time."""
    made = venue_codes(department, service, shuffled_ids(ROWS))
    listed: list[str] = []
    page = integrator_api.get("/api/v1/dept/codes/", {"page_size": 5}).json()
    while True:
        shown = [code["id"] for code in page["results"]]
        listed += shown
        for code_id in shown:
            response = integrator_api.post(f"/api/v1/dept/codes/{code_id}/deactivate/")
            assert response.status_code == 200, response.json()
        if not page["next"]:
            break
        page = integrator_api.get(page["next"]).json()
    assert_each_once(listed, [str(v.id) for v in made], 5)


@pytest.mark.integration
def test_a_departments_venue_codes_are_still_read_along_their_index(
    integrator_api, department, other_department, service, other_service
) -> None:
    """Newest first along ``venue_code_department``; only the codes of one
    time are put in order by id (an incremental sort of each time's few),
    not all the department's codes sorted for each page (PostgreSQL's plan
    when sorting them all costs what it costs at a department's thousands
    of codes: a test's few rows are too few for the planner to see it)."""
    venue_codes(department, service, shuffled_ids(ROWS))
    venue_codes(other_department, other_service, [uuid.uuid4() for _ in range(ROWS)])
    for page in (1, 3):
        with CaptureQueriesContext(connection) as captured:
            response = integrator_api.get("/api/v1/dept/codes/", {"page_size": 5, "page": page})
        assert response.status_code == 200, response.json()
        [sql] = [
            q["sql"]
            for q in captured.captured_queries
            if 'FROM "qr_venuecode"' in q["sql"] and "ORDER BY" in q["sql"]
        ]
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE qr_venuecode")
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_bitmapscan = off")
            cursor.execute("SET LOCAL enable_sort = off")  # a full sort, not an incremental one
            cursor.execute("EXPLAIN " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                cursor.execute(f"RESET {setting}")
        assert re.search(r"Index Scan(?: Backward)? using venue_code_department", plan), plan
        assert not re.search(r"(?<!Incremental )Sort  ", plan), plan
        assert "Presorted Key: qr_venuecode.created_at" in plan, plan


def test_an_orders_refunds_made_at_one_time_are_each_listed_once(
    citizen_api, integrator_api, department, django_capture_on_commit_callbacks
) -> None:
    paid = ServiceFactory(code="id-card-renew", department=department, fee_fen=2000)
    application = citizen_api.post(
        "/api/v1/applications/", {"service": paid.code, "form": GOOD_FORM}, format="json"
    ).json()
    order = citizen_api.post(
        "/api/v1/payments/", {"application": application["id"], "channel": "alipay"}
    ).json()
    with django_capture_on_commit_callbacks(execute=True):
        response = citizen_api.post(
            f"/api/v1/sandbox/payments/{order['order_no']}/pay/", {"result": "success"}
        )
    assert response.status_code == 202, response.json()
    paid_order = PaymentOrder.objects.get(order_no=order["order_no"])
    assert paid_order.status == "paid"
    made = Refund.objects.bulk_create(
        Refund(
            id=pk,
            refund_no=f"R{n:04d}",
            order=paid_order,
            amount_fen=100,
            status="succeeded",
            created_at=SAME_TIME,
        )
        for n, pk in enumerate(shuffled_ids(ROWS))
    )
    expected = sorted((str(r.id) for r in made), reverse=True)  # newest first, then by id
    assert_walks(integrator_api, f"/api/v1/dept/payments/{order['order_no']}/refunds/", expected)

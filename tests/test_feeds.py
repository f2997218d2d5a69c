"""Every cursor list walks through rows that share a time page by page: each
row once, newest first, forwards and back (a department's deliveries of one
event to many endpoints: tests/services/test_delivery.py)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from urllib.parse import urlencode

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from accounts.models import Message
from config.api import FeedPagination
from payments.models import PaymentOrder
from qr.models import ScanEvent
from services.models import Application
from tests.feeds import walk, walk_back
from tests.services.conftest import GOOD_FORM, submit
from tests.services.factories import ServiceFactory

pytestmark = pytest.mark.django_db

SAME_TIME = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
ROWS = 7
SIZES = (1, 2, 3, ROWS, 20)


def assert_walks(client, url: str, expected: list, *, key: str = "id", **params) -> None:
    for size in SIZES:
        asked = {**params, "page_size": size}
        for listed in (walk(client, url, asked, key=key), walk_back(client, url, asked, key=key)):
            assert sorted(listed) == sorted(expected), size  # each once
            assert listed == expected, size  # newest first, then by id


@pytest.fixture
def applications(citizen_api, service) -> list[Application]:
    """The citizen's free applications, all made and submitted at one time."""
    for _ in range(ROWS):
        assert submit(citizen_api).status_code == 201
    Application.objects.update(created_at=SAME_TIME, submitted_at=SAME_TIME)
    return list(Application.objects.order_by("-id"))


def test_a_citizens_applications_of_one_time_are_each_listed_once(
    citizen_api, applications
) -> None:
    assert_walks(citizen_api, "/api/v1/applications/", [str(a.id) for a in applications])


def test_a_departments_applications_of_one_time_are_each_listed_once(
    integrator_api, applications
) -> None:
    numbers = [a.number for a in applications]
    assert_walks(integrator_api, "/api/v1/dept/applications/", numbers, key="number")
    assert_walks(
        integrator_api, "/api/v1/dept/applications/", numbers, key="number", status="submitted"
    )


def test_orders_of_one_time_are_each_listed_once_to_the_citizen_and_the_department(
    citizen_api, integrator_api, department
) -> None:
    paid = ServiceFactory(code="id-card-renew", department=department, fee_fen=2000)
    for _ in range(ROWS):
        application = citizen_api.post(
            "/api/v1/applications/", {"service": paid.code, "form": GOOD_FORM}, format="json"
        ).json()
        response = citizen_api.post(
            "/api/v1/payments/",
            {"application": application["id"], "channel": "alipay"},
            format="json",
        )
        assert response.status_code == 201, response.json()
    PaymentOrder.objects.update(created_at=SAME_TIME)
    orders = list(PaymentOrder.objects.order_by("-id"))
    assert_walks(citizen_api, "/api/v1/payments/", [str(o.id) for o in orders])
    numbers = [o.order_no for o in orders]
    assert_walks(integrator_api, "/api/v1/dept/payments/", numbers, key="order_no")
    assert_walks(
        integrator_api, "/api/v1/dept/payments/", numbers, key="order_no", status="pending"
    )


def test_messages_of_one_time_are_each_listed_once(citizen, citizen_api) -> None:
    made = Message.objects.bulk_create(
        Message(
            user=citizen, kind="notice", title={"zh-hans": "通知"}, body={}, created_at=SAME_TIME
        )
        for _ in range(ROWS)
    )
    expected = sorted((str(m.id) for m in made), reverse=True)
    assert_walks(citizen_api, "/api/v1/me/messages/", expected)
    assert_walks(citizen_api, "/api/v1/me/messages/", expected, unread="true")


def test_scans_of_one_second_are_each_listed_once(citizen, citizen_api, department) -> None:
    """An offline terminal's times are to the second: several scans share one."""
    made = ScanEvent.objects.bulk_create(
        ScanEvent(
            source=ScanEvent.Source.OFFLINE,
            scanned_at=SAME_TIME,
            department=department,
            kind="citizen",
            valid=True,
            subject=citizen.subject,
        )
        for _ in range(ROWS)
    )
    expected = sorted((str(s.id) for s in made), reverse=True)
    assert_walks(citizen_api, "/api/v1/me/scans/", expected)


def _cursor(position: str) -> str:
    """A cursor as DRF makes one, at ``position``."""
    return base64.b64encode(urlencode({"p": position}).encode()).decode()


def _position(*values: str) -> str:
    return json.dumps(list(values), separators=(",", ":"))


@pytest.mark.parametrize(
    "position",
    [
        _position("2026-01-01 00:00:00+00:00"),
        _position("2026-01-01 00:00:00+00:00", "not-a-uuid"),
        _position("garbage", "01a25000-0000-7000-8000-000000000000"),
        _position("2026-01-01 00:00:00+00:00", "01a25000-0000-7000-8000-000000000000", "x"),
        '["2026-01-01 00:00:00+00:00",7]',
        "[]",
        "{}",
        "[" * 1000,  # nested past the parser's recursion limit
    ],
)
def test_a_tampered_position_is_a_400(citizen_api, integrator_api, position) -> None:
    for client, url in (
        (citizen_api, "/api/v1/applications/"),
        (integrator_api, "/api/v1/dept/deliveries/"),
    ):
        response = client.get(url, {"cursor": _cursor(position)})
        assert response.status_code == 400, (url, response.content[:300])
        assert response.json()["code"] == "pagination_invalid"


def test_a_cursor_holding_the_time_alone_still_goes_on_from_there(
    citizen_api, applications
) -> None:
    """As cursors were made before they held every ordering field: a client
    holding one is not turned away."""
    Application.objects.filter(pk=applications[0].pk).update(
        created_at=SAME_TIME + dt.timedelta(seconds=1)
    )
    held = _cursor(str(SAME_TIME + dt.timedelta(seconds=1)))
    page = citizen_api.get("/api/v1/applications/", {"cursor": held}).json()
    assert [a["id"] for a in page["results"]] == [str(a.id) for a in applications[1:]]


def test_an_ordering_that_does_not_end_with_a_unique_field_is_refused(citizen) -> None:
    class ByTimeOnly(FeedPagination):
        ordering = "-created_at"

    request = Request(APIRequestFactory().get("/"))
    with pytest.raises(ImproperlyConfigured, match="unique"):
        ByTimeOnly().paginate_queryset(Message.objects.all(), request)

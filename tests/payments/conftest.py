"""The cast and props of the payment stories: a fee-bearing service, a
citizen's application awaiting payment, orders, and the sandbox wallet."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from payments.models import PaymentOrder
from qr import caches
from services.models import Service
from tests.services.conftest import GOOD_FORM
from tests.services.factories import ServiceFactory

CHANNELS = ("wechat", "alipay", "unionpay")


@pytest.fixture(autouse=True)
def _fresh_key_memory():
    """Receipts sign with the star-code keys: each test starts with empty
    process caches of them (the database is rolled back under them)."""
    caches.clear()
    yield
    caches.clear()


FEE = 2000


@pytest.fixture
def fee_service(department, category) -> Service:
    """居民身份证换领, 20.00 yuan, of the fixture department (hrss)."""
    return ServiceFactory(
        code="id-card-renew",
        name="居民身份证换领",
        department=department,
        category=category,
        fee_fen=FEE,
    )


def apply_for(client, service: Service) -> dict:
    response = client.post(
        "/api/v1/applications/", {"service": service.code, "form": GOOD_FORM}, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.fixture
def awaiting(citizen_api, fee_service) -> dict:
    """The citizen's application for the fee-bearing service, awaiting payment."""
    application = apply_for(citizen_api, fee_service)
    assert application["status"] == "awaiting_payment"
    return application


def open_order(client, application: dict, channel: str = "wechat", **headers) -> dict:
    response = client.post(
        "/api/v1/payments/",
        {"application": application["id"], "channel": channel},
        format="json",
        **headers,
    )
    assert response.status_code in (200, 201), response.json()
    return response.json()


@pytest.fixture
def pay(citizen_api, django_capture_on_commit_callbacks) -> Callable[..., PaymentOrder]:
    """The citizen pays an order in the sandbox wallet; the channel's
    callback reaches our notify endpoint (and everything after commit runs)."""

    def paying(order: dict, result: str = "success", client=None) -> PaymentOrder:
        with django_capture_on_commit_callbacks(execute=True):
            response = (client or citizen_api).post(
                f"/api/v1/sandbox/payments/{order['order_no']}/pay/",
                {"result": result},
                format="json",
            )
        assert response.status_code == 202, response.json()
        return PaymentOrder.objects.get(order_no=order["order_no"])

    return paying

"""The whole payment loop on the real stack: gunicorn, a Celery worker with
beat, PostgreSQL, Redis, the sandbox channel calling our notify endpoint over
HTTP, and a real HTTP server playing the department, which verifies every
event with standardwebhooks."""

from __future__ import annotations

import httpx
import pytest
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.api_keys import api_key_create
from payments.models import LedgerEntry, NotifyLog, PaymentOrder
from services.models import Application
from services.routing import endpoints, events
from tests.accounts.factories import CitizenFactory, DepartmentFactory
from tests.processes import free_port, wait_for, web_server
from tests.services.department import DepartmentServer
from tests.services.factories import ServiceFactory
from tests.services.test_routing_real_stack import FAST, FORM, worker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(240),
]

PAYMENTS_FAST = {
    "PAYMENTS_SANDBOX": "1",
    "PAYMENTS_SANDBOX_NOTIFY_DELAY_SECONDS": "0.3",
    # The channel sends every callback twice: we must pay once.
    "PAYMENTS_SANDBOX_DUPLICATE_RATE": "1",
    "PAYMENTS_SANDBOX_REFUND_SECONDS": "1",
    "PAYMENTS_SWEEP_EVERY_SECONDS": "1",
    "PAYMENTS_QUERY_AFTER_SECONDS": "1",
}


@pytest.mark.parametrize("channel", ["wechat", "alipay", "unionpay"])
def test_apply_pay_route_refund_cancel(tmp_path, channel) -> None:
    department = DepartmentFactory(code="gaj", name="长沙市公安局")
    ServiceFactory(code="id-card-renew", department=department, fee_fen=2000)
    citizen = CitizenFactory(verified=True, phone="13800138000")
    citizen_auth = {"Authorization": f"Bearer {RefreshToken.for_user(citizen).access_token}"}
    _key, raw_key = api_key_create(department=department, scope="integrator")
    dept_auth = {"Authorization": f"Api-Key {raw_key}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**FAST, **PAYMENTS_FAST, "PAYMENTS_NOTIFY_BASE_URL": base}

    with DepartmentServer() as server:
        endpoint, secret = endpoints.endpoint_create(
            department=department,
            url=server.url("/gaj/events"),
            events=list(events.SUBSCRIBABLE),
            actor=None,
        )
        with web_server(port=port, **env), worker(tmp_path, **env):
            client = httpx.Client(base_url=base, timeout=10)
            application = client.post(
                "/api/v1/applications/",
                json={"service": "id-card-renew", "form": FORM},
                headers=citizen_auth,
            ).json()
            assert application["status"] == "awaiting_payment"
            order = client.post(
                "/api/v1/payments/",
                json={"application": application["id"], "channel": channel},
                headers={**citizen_auth, "Idempotency-Key": "pay-once"},
            ).json()
            assert order["status"] == "pending" and order["amount_fen"] == 2000
            paying = client.post(
                f"/api/v1/sandbox/payments/{order['order_no']}/pay/",
                json={"result": "success"},
                headers=citizen_auth,
            )
            assert paying.status_code == 202, paying.text

            def order_status() -> str:
                return client.get(f"/api/v1/payments/{order['id']}/", headers=citizen_auth).json()[
                    "status"
                ]

            wait_for(lambda: order_status() == "paid", timeout=60, message=order_status())
            # Routed: the department's system took application.submitted.
            wait_for(
                lambda: Application.objects.get(pk=application["id"]).status == "routed",
                timeout=60,
                message="application not routed",
            )
            wait_for(lambda: server.of_type(events.PAYMENT_SUCCEEDED), timeout=30)
            succeeded = server.of_type(events.PAYMENT_SUCCEEDED)[0].verified(secret)
            assert succeeded["data"]["payment"]["order_no"] == order["order_no"]
            assert succeeded["data"]["payment"]["amount_fen"] == 2000
            submitted = server.of_type(events.APPLICATION_SUBMITTED)[0].verified(secret)
            assert submitted["data"]["application"]["number"] == application["number"]
            # The callback came twice; one charge.
            wait_for(lambda: NotifyLog.objects.filter(outcome="duplicate").exists(), timeout=30)
            assert LedgerEntry.objects.filter(kind="charge").count() == 1

            # The department refunds part of it.
            refund = client.post(
                f"/api/v1/dept/payments/{order['order_no']}/refunds/",
                json={"amount_fen": 500, "reason": "材料费减免"},
                headers={**dept_auth, "Idempotency-Key": "refund-1"},
            )
            assert refund.status_code == 201, refund.text
            wait_for(lambda: len(server.of_type(events.PAYMENT_REFUNDED)) == 1, timeout=60)
            first_refund = server.of_type(events.PAYMENT_REFUNDED)[0].verified(secret)
            assert first_refund["data"]["payment"]["refund"] == {
                "id": refund.json()["id"],
                "refund_no": refund.json()["refund_no"],
                "amount_fen": 500,
            }
            assert order_status() == "partially_refunded"

            # The citizen withdraws: the rest goes back by itself.
            cancelled = client.post(
                f"/api/v1/applications/{application['id']}/cancel/", json={}, headers=citizen_auth
            )
            assert cancelled.status_code == 200, cancelled.text
            wait_for(lambda: order_status() == "refunded", timeout=60, message=order_status())
            wait_for(lambda: len(server.of_type(events.PAYMENT_REFUNDED)) == 2, timeout=60)
            second_refund = server.of_type(events.PAYMENT_REFUNDED)[1].verified(secret)
            assert second_refund["data"]["payment"]["refund"]["amount_fen"] == 1500
            assert second_refund["data"]["payment"]["status"] == "refunded"
            assert server.of_type(events.APPLICATION_CANCELLED)

    paid = PaymentOrder.objects.get(pk=order["id"])
    assert (paid.paid_fen, paid.refunded_fen) == (2000, 2000)
    kinds = sorted(LedgerEntry.objects.values_list("kind", "amount_fen"))
    assert kinds == [("charge", 2000), ("refund", 500), ("refund", 1500)]
    # Every event reached the department once per webhook-id, in order.
    types = [r.payload["type"] for r in server.received]
    assert types.index(events.APPLICATION_SUBMITTED) < types.index(events.PAYMENT_SUCCEEDED)

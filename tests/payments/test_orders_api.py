"""A citizen pays for an application: orders, the sandbox wallet, what
follows a payment, expiry and the channel being asked (主动查单)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from django.test import TestCase
from django.utils import timezone

from accounts.models import AuditEntry, Message
from payments import notifications, tasks
from payments.models import LedgerEntry, OrderStatus, PaymentOrder, SandboxRefund, SandboxTrade
from payments.sandbox import books
from payments.sandbox.channels import sandbox_for
from services.models import Application, OutboxEvent
from services.routing import endpoints, events
from tests.payments.conftest import CHANNELS, FEE, apply_for, open_order
from tests.services.department import DepartmentServer

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("channel", CHANNELS)
def test_citizen_pays_and_the_application_goes_to_its_department(
    citizen, citizen_api, awaiting, pay, channel
) -> None:
    order = open_order(citizen_api, awaiting, channel)
    assert order["status"] == "pending"
    assert order["amount_fen"] == FEE and order["currency"] == "CNY"
    assert order["channel"] == channel and order["checkout"]
    assert order["application"] == awaiting["id"]

    paid = pay(order)

    assert paid.status == OrderStatus.PAID and paid.paid_fen == FEE
    assert paid.provider_transaction_id
    application = citizen_api.get(f"/api/v1/applications/{awaiting['id']}/").json()
    assert application["status"] == "submitted"
    assert [step["status"] for step in application["timeline"]] == [
        "awaiting_payment",
        "submitted",
    ]
    charges = LedgerEntry.objects.filter(order=paid)
    assert [(e.kind, e.amount_fen) for e in charges] == [("charge", FEE)]
    published = list(
        OutboxEvent.objects.filter(application_id=awaiting["id"])
        .order_by("created_at")
        .values_list("type", flat=True)
    )
    assert published == [events.APPLICATION_SUBMITTED, events.PAYMENT_SUCCEEDED]
    succeeded = OutboxEvent.objects.get(type=events.PAYMENT_SUCCEEDED)
    assert succeeded.data["payment"]["order_no"] == order["order_no"]
    assert succeeded.data["payment"]["application"] == awaiting["number"]
    assert succeeded.data["payment"]["amount_fen"] == FEE
    assert succeeded.data["payment"]["status"] == "paid"
    assert Message.objects.filter(user=citizen, kind="payment.succeeded").count() == 1
    shown = citizen_api.get(f"/api/v1/payments/{order['id']}/").json()
    assert shown["status"] == "paid" and shown["checkout"] == {}
    assert AuditEntry.objects.filter(action="payment.paid", target_id=str(paid.pk)).exists()


def test_the_amount_comes_from_the_service_never_from_the_client(citizen_api, awaiting) -> None:
    response = citizen_api.post(
        "/api/v1/payments/",
        {"application": awaiting["id"], "channel": "alipay", "amount_fen": 1, "currency": "USD"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["amount_fen"] == FEE
    assert response.json()["currency"] == "CNY"
    assert SandboxTrade.objects.get(order_no=response.json()["order_no"]).amount_fen == FEE


def test_a_free_application_needs_no_payment(citizen_api, service) -> None:
    free = apply_for(citizen_api, service)
    response = citizen_api.post(
        "/api/v1/payments/", {"application": free["id"], "channel": "wechat"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "application_not_payable"


def test_a_citizen_cannot_pay_for_another_citizens_application(other_citizen_api, awaiting) -> None:
    response = other_citizen_api.post(
        "/api/v1/payments/", {"application": awaiting["id"], "channel": "wechat"}, format="json"
    )
    assert response.status_code == 404
    assert not PaymentOrder.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"channel": "wechat"},
        {"application": "not-a-uuid", "channel": "wechat"},
        {"application": "0190f0e0-0000-7000-8000-000000000000", "channel": "paypal"},
        {"application": None, "channel": None},
        [],
    ],
)
def test_a_malformed_order_is_a_400(citizen_api, awaiting, body) -> None:
    response = citizen_api.post("/api/v1/payments/", body, format="json")
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/problem+json")


def test_a_department_key_cannot_open_orders(integrator_api, awaiting) -> None:
    response = integrator_api.post(
        "/api/v1/payments/", {"application": awaiting["id"], "channel": "wechat"}, format="json"
    )
    assert response.status_code in (401, 403)


def test_a_paid_application_takes_no_second_order(citizen_api, awaiting, pay) -> None:
    pay(open_order(citizen_api, awaiting, "wechat"))
    response = citizen_api.post(
        "/api/v1/payments/", {"application": awaiting["id"], "channel": "alipay"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "application_not_payable"


def test_the_same_idempotency_key_gives_the_same_order(citizen_api, awaiting) -> None:
    first = open_order(citizen_api, awaiting, "wechat", HTTP_IDEMPOTENCY_KEY="pay-1")
    again = citizen_api.post(
        "/api/v1/payments/",
        {"application": awaiting["id"], "channel": "wechat"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="pay-1",
    )
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first["id"]
    other_body = citizen_api.post(
        "/api/v1/payments/",
        {"application": awaiting["id"], "channel": "alipay"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="pay-1",
    )
    assert other_body.status_code == 422
    assert other_body.json()["code"] == "idempotency_key_reused"
    assert PaymentOrder.objects.count() == 1


def test_one_open_order_per_application(citizen_api, awaiting) -> None:
    first = open_order(citizen_api, awaiting, "wechat")
    same = citizen_api.post(
        "/api/v1/payments/", {"application": awaiting["id"], "channel": "wechat"}, format="json"
    )
    assert same.status_code == 200 and same.json()["id"] == first["id"]

    switched = open_order(citizen_api, awaiting, "unionpay")

    assert switched["id"] != first["id"]
    statuses = dict(PaymentOrder.objects.values_list("order_no", "status"))
    assert statuses == {first["order_no"]: "closed", switched["order_no"]: "pending"}
    # Closed at the channel too: the old order can no longer be paid there.
    assert SandboxTrade.objects.get(order_no=first["order_no"]).state == "CLOSED"


def test_an_open_order_whose_channel_was_switched_off_does_not_block_another_channel(
    citizen_api, awaiting, settings, django_capture_on_commit_callbacks
) -> None:
    first = open_order(citizen_api, awaiting, "wechat")
    channels = settings.PAYMENTS_CHANNELS
    settings.PAYMENTS_CHANNELS = {name: c for name, c in channels.items() if name != "wechat"}

    switched = citizen_api.post(
        "/api/v1/payments/", {"application": awaiting["id"], "channel": "alipay"}, format="json"
    )

    assert switched.status_code == 201, switched.json()
    assert PaymentOrder.objects.get(pk=first["id"]).status == "closed"
    # WeChat comes back: a payment the citizen made there meanwhile is still
    # recorded (a late success), and the order left open closes.
    settings.PAYMENTS_CHANNELS = channels
    trade = books.trade_pay(channel="wechat", order_no=first["order_no"], succeed=True)
    headers, body = sandbox_for("wechat").payment_notify(trade)
    with django_capture_on_commit_callbacks(execute=True):
        notifications.notify_receive(channel="wechat", headers=headers, body=body, client_ip=None)
    assert PaymentOrder.objects.get(pk=first["id"]).status == "paid"
    assert PaymentOrder.objects.get(pk=switched.json()["id"]).status == "closed"
    assert Application.objects.get(pk=awaiting["id"]).status == "submitted"


def switch(client, application: dict, channel: str, key: str | None = None):
    """The citizen asks for an order through ``channel`` (another than the
    open one's), with an Idempotency-Key if ``key``."""
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(
        "/api/v1/payments/",
        {"application": application["id"], "channel": channel},
        format="json",
        **headers,
    )


def wechat_refuses_to_close(monkeypatch) -> None:
    """WeChat Pay refuses to close any order, for good (not "paid")."""
    from payments.providers.base import ProviderError
    from payments.providers.wechat import WechatPayProvider

    def refuse(self, *, order_no):
        raise ProviderError("refused", retryable=False, code="INVALID_REQUEST")

    monkeypatch.setattr(WechatPayProvider, "order_close", refuse)


@pytest.mark.parametrize("idempotency_key", [None, "switch-1"])
@pytest.mark.parametrize(("first_channel", "then"), [("wechat", "alipay"), ("alipay", "wechat")])
def test_switching_channel_just_after_paying_brings_the_payment_in(
    citizen_api, awaiting, django_capture_on_commit_callbacks, first_channel, then, idempotency_key
) -> None:
    """The wallet took the money and its callback is still on its way when
    the citizen asks for another channel: the channel will not close a paid
    order. The payment is brought in (asked of the channel, once no lock is
    held) and the answer is that order, paid, not that the channel failed
    and nothing was charged; with an Idempotency-Key too (the payment is
    kept with the stored answer)."""
    first = open_order(citizen_api, awaiting, first_channel)
    books.trade_pay(channel=first_channel, order_no=first["order_no"], succeed=True)

    with django_capture_on_commit_callbacks(execute=True):
        switched = switch(citizen_api, awaiting, then, idempotency_key)

    assert switched.status_code == 200, switched.json()
    assert (switched.json()["id"], switched.json()["status"]) == (first["id"], "paid")
    paid = PaymentOrder.objects.get()
    assert (str(paid.pk), paid.status, paid.paid_fen) == (first["id"], "paid", FEE)
    assert Application.objects.get(pk=awaiting["id"]).status == "submitted"
    assert LedgerEntry.objects.count() == 1
    if idempotency_key:
        again = switch(citizen_api, awaiting, then, idempotency_key)
        assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
        assert LedgerEntry.objects.count() == 1


def test_a_close_the_channel_refuses_for_another_reason_leaves_the_order_open(
    citizen_api, awaiting, monkeypatch
) -> None:
    first = open_order(citizen_api, awaiting, "wechat")
    wechat_refuses_to_close(monkeypatch)
    switched = switch(citizen_api, awaiting, "alipay")
    assert switched.status_code == 502
    assert switched.json()["code"] == "payment_provider_error"
    assert list(PaymentOrder.objects.values_list("order_no", "status")) == [
        (first["order_no"], "pending")
    ]


@pytest.mark.parametrize("idempotency_key", [None, "switch-2"])
def test_a_switch_the_new_channel_refuses_leaves_the_open_order_payable(
    citizen_api, awaiting, monkeypatch, idempotency_key
) -> None:
    """The citizen with an open WeChat Pay order asks for Alipay, and Alipay
    refuses the checkout. A close at WeChat is final, and our transaction
    (the request's, with an Idempotency-Key) rolls back with the refusal:
    so WeChat must not have been told to close the order. The sandbox keeps
    its books in our transaction, so the close calls WeChat received are
    recorded. Going back to WeChat, the citizen gets that order, pending
    and payable there."""
    from payments.providers.alipay import AlipayProvider
    from payments.providers.base import ProviderError
    from payments.providers.wechat import WechatPayProvider

    first = open_order(citizen_api, awaiting, "wechat")
    closed_at_wechat: list[str] = []
    real_close = WechatPayProvider.order_close

    def recording_close(self, *, order_no):
        result = real_close(self, order_no=order_no)
        closed_at_wechat.append(order_no)
        return result

    def refused(self, **kwargs):
        raise ProviderError("alipay precreate: HTTP 503", unreachable=True)

    monkeypatch.setattr(WechatPayProvider, "order_close", recording_close)
    monkeypatch.setattr(AlipayProvider, "checkout_create", refused)

    switched = switch(citizen_api, awaiting, "alipay", idempotency_key)

    assert switched.status_code == 502, switched.json()
    assert switched.json()["code"] == "payment_provider_error"
    assert closed_at_wechat == []
    again = open_order(citizen_api, awaiting, "wechat")
    assert (again["id"], again["status"]) == (first["id"], "pending")
    assert list(PaymentOrder.objects.values_list("order_no", "status")) == [
        (first["order_no"], "pending")
    ]
    assert SandboxTrade.objects.get(order_no=first["order_no"]).state != "CLOSED"
    assert not AuditEntry.objects.filter(action="payment.closed").exists()


@pytest.mark.parametrize("idempotency_key", [None, "switch-3"])
def test_an_order_its_channel_ended_but_would_not_close_gives_way_to_the_new_one(
    citizen_api, awaiting, monkeypatch, idempotency_key
) -> None:
    """The channel refuses to close an order its payer failed to pay: asked,
    it says so; the order ends here too and the order asked for is opened
    (with an Idempotency-Key too, where a 502 would have rolled the end back
    and every retry met the same open order)."""
    first = open_order(citizen_api, awaiting, "wechat")
    books.trade_pay(channel="wechat", order_no=first["order_no"], succeed=False)
    wechat_refuses_to_close(monkeypatch)
    switched = switch(citizen_api, awaiting, "alipay", idempotency_key)

    assert switched.status_code == 201, switched.json()
    assert switched.json()["channel"] == "alipay"
    statuses = dict(PaymentOrder.objects.values_list("order_no", "status"))
    assert statuses == {first["order_no"]: "failed", switched.json()["order_no"]: "pending"}


def test_a_payment_found_at_closing_but_refused_is_not_the_answer(
    citizen_api, awaiting, monkeypatch
) -> None:
    """The channel says the order it would not close was paid, but its word
    does not fit the order (refused and audited): the citizen is not handed
    that order's checkout for the channel they asked."""
    from payments import orders

    first = open_order(citizen_api, awaiting, "wechat")
    books.trade_pay(channel="wechat", order_no=first["order_no"], succeed=True)
    monkeypatch.setattr(orders, "_mismatch", lambda order, result: "amount_mismatch")

    switched = switch(citizen_api, awaiting, "alipay")

    assert switched.status_code == 502, switched.json()
    assert switched.json()["code"] == "payment_provider_error"
    assert PaymentOrder.objects.get().status == "pending"
    assert AuditEntry.objects.filter(action="payment.result_refused").count() == 1


def test_an_expired_order_paid_between_the_query_and_the_close_is_shown_paid(
    citizen_api, awaiting, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    """The payer opens an expired order: the channel, asked, says not paid;
    the wallet takes the money that moment; the close is refused. The
    payment is brought in, not answered as a failure of the channel."""
    from payments.providers.wechat import WechatPayProvider

    order = open_order(citizen_api, awaiting, "wechat")
    PaymentOrder.objects.filter(pk=order["id"]).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    asked = WechatPayProvider.order_query

    def paid_right_after_the_first_question(self, *, order_no):
        answer = asked(self, order_no=order_no)
        if not SandboxTrade.objects.filter(order_no=order_no, state="SUCCESS").exists():
            books.trade_pay(channel="wechat", order_no=order_no, succeed=True)
        return answer

    monkeypatch.setattr(WechatPayProvider, "order_query", paid_right_after_the_first_question)
    with django_capture_on_commit_callbacks(execute=True):
        shown = citizen_api.get(f"/api/v1/payments/{order['id']}/")

    assert shown.status_code == 200, shown.json()
    assert shown.json()["status"] == "paid"
    assert Application.objects.get(pk=awaiting["id"]).status == "submitted"


def test_a_citizen_sees_only_their_own_orders(citizen_api, other_citizen_api, awaiting) -> None:
    order = open_order(citizen_api, awaiting)
    assert other_citizen_api.get(f"/api/v1/payments/{order['id']}/").status_code == 404
    assert other_citizen_api.get("/api/v1/payments/").json()["results"] == []
    mine = citizen_api.get("/api/v1/payments/").json()["results"]
    assert [o["id"] for o in mine] == [order["id"]]


def test_an_expired_order_is_closed_here_and_at_the_channel(citizen_api, awaiting) -> None:
    order = open_order(citizen_api, awaiting, "wechat")
    PaymentOrder.objects.filter(pk=order["id"]).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    shown = citizen_api.get(f"/api/v1/payments/{order['id']}/").json()

    assert shown["status"] == "closed"
    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "CLOSED"
    refused = citizen_api.post(
        f"/api/v1/sandbox/payments/{order['order_no']}/pay/", {"result": "success"}, format="json"
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "sandbox_payment_refused"
    # The application still waits for a payment: a new order is allowed.
    assert open_order(citizen_api, awaiting, "wechat")["status"] == "pending"


def test_the_sweep_closes_expired_orders(citizen_api, awaiting, settings) -> None:
    order = open_order(citizen_api, awaiting, "alipay")
    PaymentOrder.objects.filter(pk=order["id"]).update(
        created_at=timezone.now() - dt.timedelta(hours=1),
        expires_at=timezone.now() - dt.timedelta(minutes=30),
    )
    assert tasks.payments_sweep()["orders"] == 1
    assert PaymentOrder.objects.get(pk=order["id"]).status == "closed"


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_failed_payment_leaves_the_order_failed(
    citizen_api, awaiting, pay, channel, settings
) -> None:
    order = open_order(citizen_api, awaiting, channel)
    failed = pay(order, result="fail")
    if channel == "wechat":
        # WeChat Pay calls back on success only: the sweep's query finds it.
        assert failed.status == "pending"
        settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
        tasks.payments_sweep()
        failed.refresh_from_db()
    assert failed.status == OrderStatus.FAILED
    assert not LedgerEntry.objects.exists()
    assert Application.objects.get(pk=awaiting["id"]).status == "awaiting_payment"


def cashier(client, order: dict, result: str = "success"):
    """The sandbox wallet, without the callback that follows."""
    return client.post(
        f"/api/v1/sandbox/payments/{order['order_no']}/pay/", {"result": result}, format="json"
    )


@pytest.mark.parametrize("channel", ["alipay", "unionpay"])
def test_a_payment_failed_where_the_channel_ends_the_trade_cannot_be_made_after_all(
    citizen_api, awaiting, pay, channel
) -> None:
    """Alipay shows the trade closed (TRADE_CLOSED is final), UnionPay the
    transaction failed for good: the wallet does not pay it later."""
    order = open_order(citizen_api, awaiting, channel)
    assert pay(order, result="fail").status == OrderStatus.FAILED

    refused = cashier(citizen_api, order)

    assert refused.status_code == 409, refused.json()
    assert refused.json()["code"] == "sandbox_payment_refused"
    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "PAYERROR"
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.FAILED
    assert not LedgerEntry.objects.exists()


def test_a_failed_wechat_payment_can_be_tried_again_while_the_order_is_open(
    citizen_api, awaiting, pay
) -> None:
    """WeChat Pay leaves an order whose payment failed open to another try
    (why a merchant closes it when it gives up on it: see below)."""
    order = open_order(citizen_api, awaiting, "wechat")
    pay(order, result="fail")
    assert pay(order).status == OrderStatus.PAID


def test_a_wechat_order_closed_after_its_payment_failed_cannot_be_paid_after_all(
    citizen_api, awaiting, pay
) -> None:
    """The citizen's payment failed and they chose another channel: the
    WeChat order is closed there, so the wallet cannot pay it any more (a
    second payment for one application)."""
    first = open_order(citizen_api, awaiting, "wechat")
    pay(first, result="fail")
    switched = switch(citizen_api, awaiting, "alipay")
    assert switched.status_code == 201, switched.json()
    assert SandboxTrade.objects.get(order_no=first["order_no"]).state == "CLOSED"

    refused = cashier(citizen_api, first)

    assert refused.status_code == 409, refused.json()
    assert refused.json()["code"] == "sandbox_payment_refused"
    assert SandboxTrade.objects.get(order_no=first["order_no"]).state == "CLOSED"
    assert PaymentOrder.objects.get(pk=first["id"]).status != OrderStatus.PAID
    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_lost_callback_is_made_up_by_asking_the_channel(
    citizen_api, awaiting, settings, channel
) -> None:
    order = open_order(citizen_api, awaiting, channel)
    # The citizen pays; the channel's callback never arrives (its nudge is
    # never run: no after-commit callbacks are executed here).
    citizen_api.post(
        f"/api/v1/sandbox/payments/{order['order_no']}/pay/", {"result": "success"}, format="json"
    )
    assert PaymentOrder.objects.get(pk=order["id"]).status == "pending"
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0

    tasks.payments_sweep()

    paid = PaymentOrder.objects.get(pk=order["id"])
    assert paid.status == "paid" and paid.paid_fen == FEE
    assert Application.objects.get(pk=awaiting["id"]).status == "submitted"


def test_the_sweep_resends_a_callback_the_channel_could_not_deliver(
    citizen_api, awaiting, settings
) -> None:
    order = open_order(citizen_api, awaiting, "alipay")
    citizen_api.post(
        f"/api/v1/sandbox/payments/{order['order_no']}/pay/", {"result": "success"}, format="json"
    )
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 3600  # no query: the callback must do it
    with TestCase.captureOnCommitCallbacks(execute=True):  # the worker applies it
        assert tasks.payments_sweep()["callbacks"] == 1
    assert PaymentOrder.objects.get(pk=order["id"]).status == "paid"
    assert SandboxTrade.objects.get(order_no=order["order_no"]).notified_at is not None


def test_the_sandbox_cashier_is_only_there_with_the_sandbox(
    citizen_api, awaiting, settings
) -> None:
    order = open_order(citizen_api, awaiting)
    settings.PAYMENTS_SANDBOX = False
    response = citizen_api.post(
        f"/api/v1/sandbox/payments/{order['order_no']}/pay/", {"result": "success"}, format="json"
    )
    assert response.status_code == 404
    assert response.json()["code"] == "sandbox_disabled"


def test_the_sandbox_cashier_pays_only_the_citizens_own_order(
    citizen_api, other_citizen_api, awaiting
) -> None:
    order = open_order(citizen_api, awaiting)
    response = other_citizen_api.post(
        f"/api/v1/sandbox/payments/{order['order_no']}/pay/", {"result": "success"}, format="json"
    )
    assert response.status_code == 404
    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "NOTPAY"


def test_withdrawing_an_application_closes_its_open_orders(
    citizen_api, awaiting, django_capture_on_commit_callbacks
) -> None:
    first = open_order(citizen_api, awaiting, "alipay")
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = citizen_api.post(f"/api/v1/applications/{awaiting['id']}/cancel/", {})
    assert cancelled.json()["status"] == "cancelled"

    assert citizen_api.get(f"/api/v1/payments/{first['id']}/").json()["status"] == "closed"
    assert SandboxTrade.objects.get(order_no=first["order_no"]).state == "CLOSED"
    # Nothing is left to pay for: the wallet no longer takes it.
    paying = citizen_api.post(
        f"/api/v1/sandbox/payments/{first['order_no']}/pay/", {"result": "success"}, format="json"
    )
    assert paying.status_code == 409
    assert paying.json()["detail"] == "订单已关闭"
    entry = AuditEntry.objects.get(action="payment.closed")
    assert entry.data == {"order_no": first["order_no"], "reason": "application_cancelled"}
    assert not LedgerEntry.objects.exists()


def test_a_payment_that_arrives_after_the_application_was_withdrawn_goes_back(
    citizen_api, awaiting, django_capture_on_commit_callbacks
) -> None:
    order = open_order(citizen_api, awaiting, "alipay")
    # The wallet takes the money just as the citizen withdraws: closed here,
    # the channel will not close the trade, and its callback comes after.
    trade = books.trade_pay(channel="alipay", order_no=order["order_no"], succeed=True)
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = citizen_api.post(f"/api/v1/applications/{awaiting['id']}/cancel/", {})
    assert cancelled.json()["status"] == "cancelled"
    assert PaymentOrder.objects.get(order_no=order["order_no"]).status == OrderStatus.CLOSED
    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "SUCCESS"

    headers, body = sandbox_for("alipay").payment_notify(trade)
    with django_capture_on_commit_callbacks(execute=True):
        notifications.notify_receive(channel="alipay", headers=headers, body=body, client_ip=None)

    paid = PaymentOrder.objects.get(order_no=order["order_no"])
    assert paid.status == OrderStatus.REFUNDED
    assert paid.paid_fen == paid.refunded_fen == FEE
    assert Application.objects.get(pk=awaiting["id"]).status == "cancelled"
    kinds = list(LedgerEntry.objects.filter(order=paid).values_list("kind", "amount_fen"))
    assert kinds == [("charge", FEE), ("refund", FEE)]


@pytest.fixture
def department_system(department) -> Iterator[DepartmentServer]:
    """The department's system, its endpoint subscribed to every event."""
    with DepartmentServer() as server:
        endpoints.endpoint_create(
            department=department,
            url=server.url("/events"),
            events=list(events.SUBSCRIBABLE),
            actor=None,
        )
        yield server


def test_a_department_hears_nothing_of_money_for_an_application_it_never_received(
    citizen,
    citizen_api,
    awaiting,
    pay,
    integrator_api,
    department_system,
    settings,
    django_capture_on_commit_callbacks,
) -> None:
    """Withdrawn before payment, the application never reached its
    department. UnionPay cannot close a trade, so the wallet still takes the
    money, which goes back by itself: the citizen hears of both, the ledger
    holds both, the department neither (its API has no such application)."""
    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    order = open_order(citizen_api, awaiting, "unionpay")
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = citizen_api.post(f"/api/v1/applications/{awaiting['id']}/cancel/", {})
    assert cancelled.json()["status"] == "cancelled"

    paid = pay(order)
    assert paid.status == OrderStatus.PAID
    SandboxRefund.objects.update(settles_at=timezone.now() - dt.timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        tasks.payments_sweep()

    paid.refresh_from_db()
    assert paid.status == OrderStatus.REFUNDED and paid.refunded_fen == FEE
    kinds = list(LedgerEntry.objects.filter(order=paid).values_list("kind", "amount_fen"))
    assert kinds == [("charge", FEE), ("refund", FEE)]
    assert {m.kind for m in Message.objects.filter(user=citizen)} >= {
        "payment.succeeded",
        "payment.refunded",
    }
    assert AuditEntry.objects.filter(action="payment.paid").exists()
    assert AuditEntry.objects.filter(action="payment.refunded").exists()
    assert integrator_api.get(f"/api/v1/dept/applications/{awaiting['number']}/").status_code == 404
    assert [r.payload["type"] for r in department_system.received] == []
    assert integrator_api.get("/api/v1/dept/deliveries/").json()["results"] == []


def test_a_department_hears_of_the_payment_and_the_refund_of_an_application_it_received(
    citizen_api,
    awaiting,
    pay,
    integrator_api,
    department_system,
    settings,
    django_capture_on_commit_callbacks,
) -> None:
    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    paid = pay(open_order(citizen_api, awaiting, "unionpay"))
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = citizen_api.post(f"/api/v1/applications/{awaiting['id']}/cancel/", {})
    assert cancelled.json()["status"] == "cancelled"
    SandboxRefund.objects.update(settles_at=timezone.now() - dt.timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        tasks.payments_sweep()

    paid.refresh_from_db()
    assert paid.status == OrderStatus.REFUNDED
    assert [r.payload["type"] for r in department_system.received] == [
        events.APPLICATION_SUBMITTED,
        events.PAYMENT_SUCCEEDED,
        events.APPLICATION_CANCELLED,
        events.PAYMENT_REFUNDED,
    ]
    refunded = department_system.received[-1].payload["data"]["payment"]
    assert refunded["order_no"] == paid.order_no and refunded["refund"]["amount_fen"] == FEE
    assert integrator_api.get(f"/api/v1/dept/applications/{awaiting['number']}/").status_code == 200


def test_a_late_success_for_a_closed_order_is_recorded_and_sent_back_if_not_needed(
    citizen_api, awaiting, pay, settings
) -> None:
    first = open_order(citizen_api, awaiting, "alipay")
    second = open_order(citizen_api, awaiting, "unionpay")  # closes the first
    paid_second = pay(second)
    assert paid_second.status == "paid"
    # The first order's trade is paid at the channel after all (the wallet
    # took it just before the close): its callback comes late.
    SandboxTrade.objects.filter(order_no=first["order_no"]).update(state="NOTPAY")
    paid_first = pay(first)

    paid_first.refresh_from_db()
    assert paid_first.status == OrderStatus.REFUNDED
    assert paid_first.refunded_fen == FEE
    paid_second.refresh_from_db()
    assert paid_second.status == OrderStatus.PAID


def test_a_late_successs_failed_automatic_refund_is_listed_as_owed(
    citizen_api, awaiting, pay, settings
) -> None:
    """The money of a payment nothing needed went back by itself, and that
    refund failed at its channel: the order is listed as owed (the
    application was not withdrawn: it was paid through another order)."""
    from payments import selectors
    from payments.models import Refund, SandboxRefund

    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    first = open_order(citizen_api, awaiting, "wechat")
    pay(open_order(citizen_api, awaiting, "alipay"))  # closes the first, pays
    SandboxTrade.objects.filter(order_no=first["order_no"]).update(state="NOTPAY")
    pay(first)  # the wallet took it after all: sent back by the platform
    automatic = Refund.objects.get(order_id=first["id"])
    assert automatic.automatic and automatic.status == "pending"
    SandboxRefund.objects.filter(refund_no=automatic.refund_no).update(state="CLOSED")
    tasks.payments_sweep()
    assert Refund.objects.get(pk=automatic.pk).status == "failed"

    [owed] = selectors.orders_owed_back()
    assert str(owed.pk) == first["id"] and owed.owed_fen == FEE


def test_the_citizens_export_holds_their_orders_and_refunds(
    citizen_api, awaiting, pay, integrator_api, django_capture_on_commit_callbacks
) -> None:
    order = open_order(citizen_api, awaiting)
    pay(order)
    with django_capture_on_commit_callbacks(execute=True):
        integrator_api.post(
            f"/api/v1/dept/payments/{order['order_no']}/refunds/",
            {"amount_fen": 500, "reason": "多收"},
            format="json",
        )
    exported = citizen_api.get("/api/v1/me/export/").json()["payments"]["orders"]
    assert [o["order_no"] for o in exported] == [order["order_no"]]
    assert exported[0]["refunds"][0]["amount_fen"] == 500
    assert exported[0]["refunds"][0]["status"] == "succeeded"


def test_closing_the_account_keeps_the_ledger_under_the_pseudonymous_account(
    citizen, citizen_api, awaiting, pay, integrator_api
) -> None:
    order = open_order(citizen_api, awaiting)
    pay(order)
    assert citizen_api.delete("/api/v1/me/").status_code == 204

    kept = PaymentOrder.objects.get(pk=order["id"])
    assert kept.status == "paid" and kept.payer_id == citizen.pk
    assert LedgerEntry.objects.filter(order=kept, kind="charge").count() == 1
    # The department still sees its order; nothing personal is on it.
    listed = integrator_api.get("/api/v1/dept/payments/").json()["results"]
    assert [o["order_no"] for o in listed] == [order["order_no"]]
    assert "13800138000" not in str(listed)


def test_closing_the_account_withdraws_an_unpaid_application_and_closes_its_order(
    citizen_api, awaiting, django_capture_on_commit_callbacks
) -> None:
    """An application still waiting for its fee never reached its
    department; paid after the close, it would reach it with nothing but a
    pseudonym. The close withdraws it, and its open order closes."""
    order = open_order(citizen_api, awaiting, "alipay")
    with django_capture_on_commit_callbacks(execute=True):
        assert citizen_api.delete("/api/v1/me/").status_code == 204

    assert Application.objects.get(pk=awaiting["id"]).status == "cancelled"
    assert PaymentOrder.objects.get(pk=order["id"]).status == "closed"
    assert SandboxTrade.objects.get(order_no=order["order_no"]).state == "CLOSED"
    withdrawn = OutboxEvent.objects.get(type=events.APPLICATION_CANCELLED)
    assert withdrawn.department_id is None  # no department hears of it
    assert "13800138000" not in str(withdrawn.data)


def test_order_lists_take_as_many_queries_for_many_orders_as_for_one(
    citizen_api, integrator_api, fee_service, pay
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries(client, url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    pay(open_order(citizen_api, apply_for(citizen_api, fee_service)))
    # Once first: a key's first use of the minute also notes when it was used.
    queries(integrator_api, "/api/v1/dept/payments/")
    one = (
        queries(citizen_api, "/api/v1/payments/"),
        queries(integrator_api, "/api/v1/dept/payments/"),
    )
    for _ in range(4):
        pay(open_order(citizen_api, apply_for(citizen_api, fee_service), "alipay"))
    many = (
        queries(citizen_api, "/api/v1/payments/"),
        queries(integrator_api, "/api/v1/dept/payments/"),
    )
    assert many == one


def test_opening_an_order_takes_a_fixed_number_of_statements(
    citizen_api, citizen, fee_service, django_assert_max_num_queries
) -> None:
    """The citizen; in one transaction the application locked, then its
    open order, the sandbox channel's trade (in a savepoint: the channel's
    side), the order, the audit entry. Ten with the transaction's own, the
    same for every channel."""
    for channel in CHANNELS:
        application = apply_for(citizen_api, fee_service)
        with django_assert_max_num_queries(10) as captured:
            open_order(citizen_api, application, channel)
        tables = [q["sql"].split('"')[1] for q in captured.captured_queries if '"' in q["sql"]]
        assert "payments_paymentorder" in tables and "accounts_auditentry" in tables

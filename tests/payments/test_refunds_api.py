"""A department refunds its orders; a cancelled paid application is
refunded by itself; refunds never add up to more than was paid."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from django.utils import timezone

from accounts.models import AuditEntry, Message
from payments import refunds, tasks
from payments.models import LedgerEntry, OrderStatus, PaymentOrder, Refund, SandboxRefund
from services import applications
from services.models import OutboxEvent
from services.routing import events
from tests.concurrency import at_once
from tests.conftest import client_with_key
from tests.payments.conftest import CHANNELS, FEE, open_order
from tests.services.conftest import GOOD_FORM

pytestmark = pytest.mark.django_db


@pytest.fixture
def paid(citizen_api, awaiting, pay) -> dict:
    order = open_order(citizen_api, awaiting, "wechat")
    assert pay(order).status == "paid"
    return order


@pytest.fixture
def refund(integrator_api, django_capture_on_commit_callbacks):
    def refunding(order: dict, amount_fen: int, reason: str = "部分退费", **headers):
        with django_capture_on_commit_callbacks(execute=True):
            return integrator_api.post(
                f"/api/v1/dept/payments/{order['order_no']}/refunds/",
                {"amount_fen": amount_fen, "reason": reason},
                format="json",
                **headers,
            )

    return refunding


def settle(refund_id: str) -> None:
    """The channel's answer on a refund comes now (WeChat Pay and Alipay may
    settle at once; UnionPay answers asynchronously, found by the query)."""
    if Refund.objects.get(pk=refund_id).status == "pending":
        tasks.payments_sweep()


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_department_refunds_part_then_the_rest(
    citizen, citizen_api, awaiting, pay, refund, channel, settings, integrator_key
) -> None:
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    order = open_order(citizen_api, awaiting, channel)
    pay(order)

    first = refund(order, 500)

    assert first.status_code == 201, first.json()
    body = first.json()
    assert body["amount_fen"] == 500 and body["order_no"] == order["order_no"]
    assert body["status"] == "pending"  # the channel answers after commit
    settle(body["id"])
    assert Refund.objects.get(pk=body["id"]).status == "succeeded"
    assert Refund.objects.get(pk=body["id"]).requested_by == f"hrss:mcs_{integrator_key.prefix}"
    partly = PaymentOrder.objects.get(pk=order["id"])
    assert partly.status == OrderStatus.PARTIALLY_REFUNDED and partly.refunded_fen == 500

    rest = refund(order, FEE - 500)

    assert rest.status_code == 201
    settle(rest.json()["id"])
    whole = PaymentOrder.objects.get(pk=order["id"])
    assert whole.status == OrderStatus.REFUNDED and whole.refunded_fen == FEE
    entries = list(LedgerEntry.objects.filter(order=whole).values_list("kind", "amount_fen"))
    assert entries == [("charge", FEE), ("refund", 500), ("refund", FEE - 500)]
    refunded_events = OutboxEvent.objects.filter(type=events.PAYMENT_REFUNDED).order_by(
        "created_at"
    )
    # As DESIGN §6 has it, inside data.payment (and beside it, as earlier
    # versions of the department guide said).
    assert [e.data["payment"]["refund"]["amount_fen"] for e in refunded_events] == [
        500,
        FEE - 500,
    ]
    assert refunded_events[0].data["payment"]["refund"]["id"] == body["id"]
    assert all(e.data["refund"] == e.data["payment"]["refund"] for e in refunded_events)
    assert refunded_events[1].data["payment"]["status"] == "refunded"
    assert Message.objects.filter(user=citizen, kind="payment.refunded").count() == 2
    assert AuditEntry.objects.filter(action="payment.refund_requested").count() == 2
    assert AuditEntry.objects.filter(action="payment.refunded").count() == 2


def test_a_refund_beyond_what_was_paid_is_refused(paid, refund) -> None:
    assert refund(paid, 1500).status_code == 201
    over = refund(paid, 501)
    assert over.status_code == 422
    assert over.json()["code"] == "refund_exceeds_paid"
    assert over.json()["refundable_fen"] == 500
    assert Refund.objects.count() == 1


def test_pending_refunds_count_against_what_may_still_be_refunded(paid, refund, settings) -> None:
    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    assert refund(paid, 1500).status_code == 201
    assert Refund.objects.get().status == "pending"
    over = refund(paid, 501)
    assert over.status_code == 422


def test_a_refund_settles_when_the_channel_says_so(paid, refund, settings) -> None:
    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    refund(paid, 700)
    pending = Refund.objects.get()
    assert pending.status == "pending" and pending.submitted_at is not None
    tasks.payments_sweep()
    assert Refund.objects.get().status == "pending"
    assert PaymentOrder.objects.get(pk=paid["id"]).status == OrderStatus.PAID

    SandboxRefund.objects.update(settles_at=timezone.now() - dt.timedelta(seconds=1))
    tasks.payments_sweep()

    assert Refund.objects.get().status == "succeeded"
    assert PaymentOrder.objects.get(pk=paid["id"]).status == OrderStatus.PARTIALLY_REFUNDED


def test_a_refund_wechat_holds_as_abnormal_stays_reserved_until_it_settles(
    paid, refund, settings
) -> None:
    # ABNORMAL: the payer's card refused the money; an operator completes
    # the same refund at WeChat Pay (to the payer's balance), and it turns
    # SUCCESS. Failing it here would free its amount and miss that money.
    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    refund(paid, 700)
    SandboxRefund.objects.update(state="ABNORMAL")
    tasks.payments_sweep()

    held = Refund.objects.get()
    assert held.status == "pending" and "ABNORMAL" in held.failure_reason
    again = refund(paid, FEE)
    assert again.status_code == 422 and again.json()["refundable_fen"] == FEE - 700

    SandboxRefund.objects.update(state="SUCCESS", succeeded_at=timezone.now())
    tasks.payments_sweep()

    settled = Refund.objects.get()
    assert settled.status == "succeeded" and settled.failure_reason == ""
    order = PaymentOrder.objects.get(pk=paid["id"])
    assert order.status == OrderStatus.PARTIALLY_REFUNDED and order.refunded_fen == 700
    assert LedgerEntry.objects.filter(order=order, kind="refund").count() == 1


def on_the_way(monkeypatch, channel: str, answer) -> None:
    """The channel's answers to our calls pass through ``answer(request,
    handle)`` (``handle``: the sandbox channel's own answer)."""
    from payments.providers import provider_for
    from payments.sandbox.channels import sandbox_for

    handle = sandbox_for(channel).handle
    monkeypatch.setattr(
        provider_for(channel).http,
        "_transport",
        httpx.MockTransport(lambda request: answer(request, handle)),
    )


def sent_again_by_the_sweep() -> None:
    Refund.objects.update(created_at=timezone.now() - dt.timedelta(minutes=1))
    tasks.payments_sweep()


def test_a_refund_refused_while_the_merchants_balance_is_short_waits_for_it(
    paid, refund, monkeypatch
) -> None:
    """WeChat Pay refuses a refund while the merchant's balance is short
    (NOT_ENOUGH) and asks for the same refund again once topped up: it
    stays pending, its amount reserved and its cause shown, never failed."""
    from payments.sandbox.channels import sandbox_for

    sandbox = sandbox_for("wechat")

    def short(request: httpx.Request, handle) -> httpx.Response:
        if request.url.path == "/v3/refund/domestic/refunds":
            return sandbox._answer(403, {"code": "NOT_ENOUGH", "message": "基本账户余额不足"})
        return handle(request)

    on_the_way(monkeypatch, "wechat", short)
    assert refund(paid, 700).status_code == 201
    for _ in range(2):
        held = Refund.objects.get()
        assert held.status == "pending" and "NOT_ENOUGH" in held.failure_reason
        assert refund(paid, FEE).json()["refundable_fen"] == FEE - 700
        sent_again_by_the_sweep()

    monkeypatch.undo()  # topped up
    sent_again_by_the_sweep()
    settled = Refund.objects.get()
    assert settled.status == "succeeded" and settled.failure_reason == ""
    assert PaymentOrder.objects.get(pk=paid["id"]).refunded_fen == 700


# What something on the way (not the channel) might answer a refund with: a
# success, its signature not the channel's.
FORGED = {
    "wechat": lambda: httpx.Response(200, json={"status": "SUCCESS"}),
    "alipay": lambda: httpx.Response(
        200,
        json={
            "alipay_trade_refund_response": {"code": "10000", "msg": "Success"},
            "sign": "bm90IEFsaXBheSdz",
        },
    ),
    "unionpay": lambda: httpx.Response(200, text="respCode=00&respMsg=ok&signature=bm90"),
}


@pytest.mark.parametrize("channel", CHANNELS)
def test_an_answer_we_cannot_trust_is_no_refusal(
    citizen_api, awaiting, pay, refund, monkeypatch, channel, settings
) -> None:
    """An answer to a refund that is not the channel's (its signature does
    not hold) is nobody's word: the refund is sent again with the same
    number, not failed because the channel does not know it (yet)."""
    order = open_order(citizen_api, awaiting, channel)
    pay(order)
    forged = []

    def on_the_way_instead(request: httpx.Request, handle) -> httpx.Response:
        if forged or not refunds_call(channel, request):
            return handle(request)
        forged.append(request)
        return FORGED[channel]()

    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    on_the_way(monkeypatch, channel, on_the_way_instead)
    assert refund(order, 700).status_code == 201
    assert forged and Refund.objects.get().status == "pending"
    sent_again_by_the_sweep()
    tasks.payments_sweep()  # UnionPay answers asynchronously
    assert Refund.objects.get().status == "succeeded"
    assert PaymentOrder.objects.get(pk=order["id"]).refunded_fen == 700


def refunds_call(channel: str, request: httpx.Request) -> bool:
    if channel == "wechat":
        return request.url.path == "/v3/refund/domestic/refunds"
    if channel == "alipay":
        return b"alipay.trade.refund" in request.url.query + request.content
    return request.url.path.endswith("backTransReq.do") and b"txnType=04" in request.content


def test_a_refund_the_channel_settled_for_another_amount_is_not_booked(
    paid, refund, settings, monkeypatch
) -> None:
    """The channel's signed word says another amount went back than was
    asked for: nothing is booked on our word alone, the refund stays
    reserved and pending, and operators see why (audited once)."""
    import json

    from payments.sandbox.channels import sandbox_for

    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    sandbox = sandbox_for("wechat")

    def more(request: httpx.Request, handle) -> httpx.Response:
        answer = handle(request)
        if not request.url.path.startswith("/v3/refund/domestic/refunds/"):
            return answer
        body = json.loads(answer.content)
        body["amount"]["refund"] = FEE
        return sandbox._answer(answer.status_code, body)

    on_the_way(monkeypatch, "wechat", more)
    refund(paid, 700)
    settle_the_rest_at_the_channel()
    for _ in range(2):
        tasks.payments_sweep()
    held = Refund.objects.get()
    assert held.status == "pending" and "2000" in held.failure_reason
    assert LedgerEntry.objects.filter(kind="refund").count() == 0
    assert PaymentOrder.objects.get(pk=paid["id"]).refunded_fen == 0
    assert AuditEntry.objects.filter(action="payment.refund_mismatch").count() == 1


def test_a_refund_no_worker_sent_is_sent_by_the_sweep(paid, integrator_api) -> None:
    response = integrator_api.post(
        f"/api/v1/dept/payments/{paid['order_no']}/refunds/", {"amount_fen": 300}, format="json"
    )
    assert response.status_code == 201
    Refund.objects.update(created_at=timezone.now() - dt.timedelta(minutes=1))
    tasks.payments_sweep()
    assert Refund.objects.get().status == "succeeded"


@pytest.mark.parametrize("sent", [False, True])
def test_refunds_whose_channel_is_off_go_to_the_back_of_the_sweeps_line(
    citizen, citizen_api, awaiting, fee_service, pay, integrator_api, settings, sent
) -> None:
    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600  # sent ones wait for the query
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    stuck = pay(open_order(citizen_api, awaiting, "unionpay"))
    other = applications.application_submit(citizen=citizen, service=fee_service, form=GOOD_FORM)
    moving = pay(open_order(citizen_api, {"id": str(other.pk)}, "wechat"))
    for order in (stuck, moving):  # their nudges are never run here
        response = integrator_api.post(
            f"/api/v1/dept/payments/{order.order_no}/refunds/", {"amount_fen": 300}, format="json"
        )
        assert response.status_code == 201
    if sent:
        for refund in Refund.objects.all():
            refunds.refund_send(refund.pk)
        assert not Refund.objects.exclude(status="pending").exists()
        SandboxRefund.objects.update(settles_at=timezone.now())
    long_ago = timezone.now() - dt.timedelta(days=1)
    Refund.objects.filter(order=stuck).update(created_at=long_ago)
    Refund.objects.filter(order=moving).update(created_at=long_ago + dt.timedelta(seconds=1))
    settings.PAYMENTS_CHANNELS = {
        name: config for name, config in settings.PAYMENTS_CHANNELS.items() if name != "unionpay"
    }

    # One refund per sweep: the one whose channel is off first (the oldest),
    # then the others, not that one again and again.
    refunds.refunds_sweep(limit=1)
    refunds.refunds_sweep(limit=1)

    taken_up = Refund.objects.get(order=moving)
    # Sent to its channel (where it settles later), or settled by its query.
    assert taken_up.submitted_at is not None
    assert taken_up.status == ("succeeded" if sent else "pending")
    assert Refund.objects.get(order=stuck).status == "pending"


def test_a_department_cannot_refund_another_departments_order(paid, other_integrator_key) -> None:
    other = client_with_key(other_integrator_key.raw)
    response = other.post(
        f"/api/v1/dept/payments/{paid['order_no']}/refunds/", {"amount_fen": 1}, format="json"
    )
    assert response.status_code == 404
    assert other.get(f"/api/v1/dept/payments/{paid['order_no']}/").status_code == 404
    assert other.get("/api/v1/dept/payments/").json()["results"] == []
    assert not Refund.objects.exists()


def test_an_unpaid_order_cannot_be_refunded(citizen_api, awaiting, refund) -> None:
    order = open_order(citizen_api, awaiting)
    response = refund(order, 100)
    assert response.status_code == 409
    assert response.json()["code"] == "refund_not_allowed"


@pytest.mark.parametrize("amount", [0, -5, "10", 1.5, None, 10**12])
def test_a_malformed_refund_is_a_400(paid, refund, amount) -> None:
    response = refund(paid, amount)
    assert response.status_code == 400, response.json()
    assert "amount_fen" in response.json()["errors"]


def test_the_same_idempotency_key_refunds_once(paid, refund) -> None:
    first = refund(paid, 300, HTTP_IDEMPOTENCY_KEY="r-1")
    again = refund(paid, 300, HTTP_IDEMPOTENCY_KEY="r-1")
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert refund(paid, 301, HTTP_IDEMPOTENCY_KEY="r-1").status_code == 422
    assert Refund.objects.count() == 1


def test_cancelling_a_paid_application_refunds_the_rest(
    citizen_api, awaiting, paid, refund, django_capture_on_commit_callbacks
) -> None:
    refund(paid, 500)
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = citizen_api.post(f"/api/v1/applications/{awaiting['id']}/cancel/", {})
    assert cancelled.status_code == 200, cancelled.json()

    order = PaymentOrder.objects.get(pk=paid["id"])
    assert order.status == OrderStatus.REFUNDED and order.refunded_fen == FEE
    automatic = Refund.objects.get(requested_by="system")
    assert automatic.amount_fen == FEE - 500 and automatic.status == "succeeded"
    # Handled once: running the subscriber again finds nothing to refund.
    from payments import refunds

    refunds.application_cancelled(OutboxEvent.objects.get(type=events.APPLICATION_CANCELLED))
    assert Refund.objects.count() == 2


def refund_at_the_channel(refund_obj: Refund, **state) -> None:
    SandboxRefund.objects.filter(refund_no=refund_obj.refund_no).update(**state)


def settle_the_rest_at_the_channel() -> None:
    SandboxRefund.objects.filter(state="PROCESSING").update(
        settles_at=timezone.now() - dt.timedelta(seconds=1)
    )


def test_a_withdrawn_applications_money_goes_back_though_a_refund_before_it_failed(
    citizen_api, awaiting, paid, refund, settings, django_capture_on_commit_callbacks
) -> None:
    """A department's refund was under way when the citizen withdrew, so
    the automatic refund took the rest; the department's then failed at the
    channel. What it held goes back by itself too: all was paid back."""
    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    refund(paid, 500)
    with django_capture_on_commit_callbacks(execute=True):
        citizen_api.post(f"/api/v1/applications/{awaiting['id']}/cancel/", {})
    departments = Refund.objects.exclude(requested_by="system").get()
    refund_at_the_channel(departments, state="CLOSED")
    settle_the_rest_at_the_channel()
    tasks.payments_sweep()
    assert Refund.objects.get(pk=departments.pk).status == "failed"

    sent_again_by_the_sweep()  # sends what was asked for since
    settle_the_rest_at_the_channel()
    tasks.payments_sweep()
    # By id (time-ordered): the sweep gave every refund one created_at.
    automatic = Refund.objects.filter(requested_by="system").order_by("id")
    assert [(r.amount_fen, r.status) for r in automatic] == [
        (FEE - 500, "succeeded"),
        (500, "succeeded"),
    ]
    order = PaymentOrder.objects.get(pk=paid["id"])
    assert order.status == OrderStatus.REFUNDED and order.refunded_fen == FEE


def test_money_a_failed_automatic_refund_leaves_is_shown_to_operators(
    citizen_api,
    awaiting,
    paid,
    refund,
    settings,
    django_capture_on_commit_callbacks,
    operator_client,
) -> None:
    """The automatic refund itself failed (the channel closed it): it is not
    asked for again and again; the order is listed as owed until an
    operator pays it back."""
    from payments import selectors

    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    with django_capture_on_commit_callbacks(execute=True):
        citizen_api.post(f"/api/v1/applications/{awaiting['id']}/cancel/", {})
    automatic = Refund.objects.get()
    refund_at_the_channel(automatic, state="CLOSED")
    for _ in range(2):
        sent_again_by_the_sweep()
    assert [r.status for r in Refund.objects.all()] == ["failed"]
    [owed] = selectors.orders_owed_back()
    assert str(owed.pk) == paid["id"] and owed.owed_fen == FEE
    assert selectors.owed_back_totals() == {"count": 1, "fen": FEE}
    dashboard = operator_client.get("/admin/").content.decode()
    assert "自动退款失败待退" in dashboard and "?owed=yes" in dashboard
    listed = operator_client.get("/admin/payments/paymentorder/", {"owed": "yes"})
    assert paid["order_no"] in listed.content.decode()

    assert refund(paid, FEE).status_code == 201  # paid back another way
    assert list(selectors.orders_owed_back()) == []
    listed = operator_client.get("/admin/payments/paymentorder/", {"owed": "yes"})
    assert paid["order_no"] not in listed.content.decode()


def test_the_department_lists_its_orders_with_filters(
    citizen_api, awaiting, paid, integrator_api
) -> None:
    listed = integrator_api.get("/api/v1/dept/payments/").json()["results"]
    assert [o["order_no"] for o in listed] == [paid["order_no"]]
    assert listed[0]["application"] == awaiting["number"]
    assert listed[0]["status"] == "paid" and listed[0]["amount_fen"] == FEE
    today = timezone.localdate().isoformat()
    assert len(integrator_api.get("/api/v1/dept/payments/", {"date": today}).json()["results"]) == 1
    assert (
        integrator_api.get("/api/v1/dept/payments/", {"date": "2001-01-01"}).json()["results"] == []
    )
    assert (
        integrator_api.get("/api/v1/dept/payments/", {"status": "refunded"}).json()["results"] == []
    )
    assert (
        len(integrator_api.get("/api/v1/dept/payments/", {"channel": "wechat"}).json()["results"])
        == 1
    )
    assert (
        integrator_api.get("/api/v1/dept/payments/", {"channel": "alipay"}).json()["results"] == []
    )
    # The day as the parameter says it, YYYY-MM-DD only (not the week or
    # basic forms Python's ISO reader also takes).
    for bad in (
        {"date": "yesterday"},
        {"date": "2026-W49-1"},
        {"date": "20261207"},
        {"status": "lost"},
        {"channel": "paypal"},
    ):
        response = integrator_api.get("/api/v1/dept/payments/", bad)
        assert response.status_code == 400, bad
    # The calendar's ends: days without bounds in China time, refused, not a 500.
    for day in ("0001-01-01", "9999-12-31"):
        response = integrator_api.get("/api/v1/dept/payments/", {"date": day})
        assert (response.status_code, response.json()["code"]) == (400, "invalid"), day
    for day in ("0001-01-02", "9999-12-30"):
        response = integrator_api.get("/api/v1/dept/payments/", {"date": day})
        assert (response.status_code, response.json()["results"]) == (200, []), day
    detail = integrator_api.get(f"/api/v1/dept/payments/{paid['order_no']}/").json()
    assert detail["refunds"] == []


@pytest.mark.integration  # real row locks: the PostgreSQL pass
@pytest.mark.django_db(transaction=True)
def test_concurrent_refunds_never_exceed_what_was_paid(
    citizen_api, awaiting, integrator_key, settings
) -> None:
    from payments import orders
    from payments.errors import PaymentsError
    from payments.providers.base import PaymentResult
    from payments.sandbox import books

    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    order_data = open_order(citizen_api, awaiting, "alipay")
    order = PaymentOrder.objects.get(pk=order_data["id"])
    # Paid at the channel too: a refund the channel refused (an unpaid trade)
    # would be failed by its worker and free its amount for another request
    # while the others are still asking, whenever the worker is quick.
    trade = books.trade_pay(channel="alipay", order_no=order.order_no, succeed=True)
    orders.order_apply_result(
        order=order,
        result=PaymentResult(
            order_no=order.order_no,
            state="paid",
            transaction_id=trade.transaction_id,
            amount_fen=FEE,
        ),
        source="notify",
    )

    def ask(index: int) -> str:
        try:
            orders.refund_request(order=order, amount_fen=700, reason=f"#{index}", actor=None)
        except PaymentsError as exc:
            return exc.code
        return "ok"

    outcomes = at_once(8, ask)

    assert sorted(outcomes) == ["ok", "ok"] + ["refund_exceeds_paid"] * 6
    assert sum(Refund.objects.values_list("amount_fen", flat=True)) == 1400
    assert not Refund.objects.filter(status="failed").exists()

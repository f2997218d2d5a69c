"""The edges of money: what a channel says that does not fit, callbacks
that arrive when another order was opened meanwhile, channels that are down
or answer what we cannot read, races on real row locks."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import AuditEntry
from payments import notifications, orders, refunds, tasks
from payments.models import LedgerEntry, NotifyLog, OrderStatus, PaymentOrder, Refund, SandboxTrade
from payments.providers import provider_for
from payments.providers.base import PaymentResult, ProviderError
from payments.sandbox import books
from payments.sandbox.channels import sandbox_for
from services import applications
from services.errors import ServicesError
from services.models import Application
from tests.concurrency import at_once
from tests.payments.conftest import FEE, open_order
from tests.services.conftest import GOOD_FORM

pytestmark = pytest.mark.django_db


def test_a_query_answer_with_another_amount_changes_nothing_and_is_audited(
    citizen_api, awaiting, settings
) -> None:
    order = open_order(citizen_api, awaiting, "alipay")
    books.trade_pay(channel="alipay", order_no=order["order_no"], succeed=True)
    SandboxTrade.objects.filter(order_no=order["order_no"]).update(amount_fen=1)
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0

    tasks.payments_sweep()

    kept = PaymentOrder.objects.get(pk=order["id"])
    assert kept.status == OrderStatus.PENDING and kept.paid_fen == 0
    assert Application.objects.get(pk=awaiting["id"]).status == "awaiting_payment"
    refused = AuditEntry.objects.get(action="payment.result_refused")
    assert refused.data["reason"] == "amount_mismatch" and refused.data["source"] == "query"


def test_the_channels_word_on_another_order_is_refused(citizen_api, awaiting) -> None:
    from payments.errors import PaymentsError

    order = PaymentOrder.objects.get(pk=open_order(citizen_api, awaiting, "alipay")["id"])
    with pytest.raises(PaymentsError) as refused:
        orders.order_apply_result(
            order=order,
            result=PaymentResult(
                order_no="P-SOMEONE-ELSES", state="paid", transaction_id="T9", amount_fen=FEE
            ),
            source="query",
        )
    assert refused.value.code == "payment_result_mismatch"
    assert PaymentOrder.objects.get(pk=order.pk).status == OrderStatus.PENDING


def test_a_late_success_closes_the_order_the_citizen_opened_meanwhile(
    api, citizen_api, awaiting, django_capture_on_commit_callbacks
) -> None:
    first = open_order(citizen_api, awaiting, "wechat")
    second = open_order(citizen_api, awaiting, "alipay")  # the first is closed
    # Closing the first at WeChat did not reach it: the citizen paid there.
    SandboxTrade.objects.filter(order_no=first["order_no"]).update(state="NOTPAY")
    trade = books.trade_pay(channel="wechat", order_no=first["order_no"], succeed=True)
    headers, body = sandbox_for("wechat").payment_notify(trade)

    with django_capture_on_commit_callbacks(execute=True):
        notifications.notify_receive(channel="wechat", headers=headers, body=body, client_ip=None)

    assert PaymentOrder.objects.get(pk=first["id"]).status == OrderStatus.PAID
    assert Application.objects.get(pk=awaiting["id"]).status == "submitted"
    # The order left open is closed, here and at its channel: it cannot be
    # paid a second time.
    assert PaymentOrder.objects.get(pk=second["id"]).status == OrderStatus.CLOSED
    assert SandboxTrade.objects.get(order_no=second["order_no"]).state == "CLOSED"
    refused = citizen_api.post(
        f"/api/v1/sandbox/payments/{second['order_no']}/pay/", {"result": "success"}, format="json"
    )
    assert refused.status_code == 409


def test_one_order_whose_channel_is_off_does_not_stop_the_sweep(
    citizen_api, awaiting, fee_service, pay, integrator_api, settings
) -> None:
    stuck = open_order(citizen_api, awaiting, "unionpay")
    other = applications.application_submit(
        citizen=PaymentOrder.objects.get(pk=stuck["id"]).payer, service=fee_service, form=GOOD_FORM
    )
    paid = pay(open_order(citizen_api, {"id": str(other.pk)}, "alipay"))
    response = integrator_api.post(
        f"/api/v1/dept/payments/{paid.order_no}/refunds/", {"amount_fen": 300}, format="json"
    )
    assert response.status_code == 201  # its nudge is never run here
    PaymentOrder.objects.filter(pk=stuck["id"]).update(expires_at=paid.created_at)
    Refund.objects.update(created_at=paid.created_at.replace(year=2000))
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    settings.PAYMENTS_CHANNELS = {
        name: config for name, config in settings.PAYMENTS_CHANNELS.items() if name != "unionpay"
    }

    tasks.payments_sweep()

    # Expired, its channel off: closed as if the channel were unreachable
    # (a payment that still comes is a late success, sent back).
    assert PaymentOrder.objects.get(pk=stuck["id"]).status == OrderStatus.CLOSED
    assert Refund.objects.get().status == "succeeded"


def test_an_expired_order_whose_channel_is_off_is_closed_by_the_sweep(
    citizen_api, awaiting, settings
) -> None:
    """Its payer sees it as it stands (the channel cannot be asked whether
    the wallet took the money), never a failure; the sweep closes it as if
    its channel were unreachable."""
    order = open_order(citizen_api, awaiting, "unionpay")
    PaymentOrder.objects.filter(pk=order["id"]).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    settings.PAYMENTS_CHANNELS = {
        name: config for name, config in settings.PAYMENTS_CHANNELS.items() if name != "unionpay"
    }

    shown = citizen_api.get(f"/api/v1/payments/{order['id']}/")

    assert shown.status_code == 200
    assert shown.json()["status"] == "pending"
    tasks.payments_sweep()
    shown = citizen_api.get(f"/api/v1/payments/{order['id']}/")
    assert shown.json()["status"] == "closed" and shown.json()["checkout"] == {}


def test_orders_whose_channel_is_off_go_to_the_back_of_the_sweeps_line(
    citizen_api, awaiting, fee_service, settings
) -> None:
    stuck = open_order(citizen_api, awaiting, "unionpay")
    other = applications.application_submit(
        citizen=PaymentOrder.objects.get(pk=stuck["id"]).payer, service=fee_service, form=GOOD_FORM
    )
    expired = open_order(citizen_api, {"id": str(other.pk)}, "alipay")
    long_ago = PaymentOrder.objects.get(pk=stuck["id"]).created_at.replace(year=2000)
    # Not expired (so it cannot close): due to be asked, which it cannot be.
    PaymentOrder.objects.filter(pk=stuck["id"]).update(
        created_at=long_ago, expires_at=timezone.now() + dt.timedelta(minutes=10)
    )
    PaymentOrder.objects.filter(pk=expired["id"]).update(expires_at=long_ago)
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    settings.PAYMENTS_CHANNELS = {
        name: config for name, config in settings.PAYMENTS_CHANNELS.items() if name != "unionpay"
    }

    # One order per sweep: the one whose channel is off first (the oldest),
    # then the others, not that one again and again.
    orders.orders_sweep(limit=1)
    orders.orders_sweep(limit=1)

    assert PaymentOrder.objects.get(pk=expired["id"]).status == OrderStatus.CLOSED
    assert PaymentOrder.objects.get(pk=stuck["id"]).status == OrderStatus.PENDING


def test_a_refund_answer_we_cannot_trust_is_settled_by_asking_the_channel(
    paid_order_factory, monkeypatch
) -> None:
    order = paid_order_factory("alipay")
    provider = provider_for("alipay")
    create = provider.refund_create

    def taken_but_unreadable(**kwargs):
        create(**kwargs)  # the channel refunds…
        raise ProviderError(
            "answer signature does not verify", retryable=False
        )  # …we can't read it

    monkeypatch.setattr(provider, "refund_create", taken_but_unreadable)
    refund = orders.refund_request(order=order, amount_fen=500, reason="", actor=None)
    refunds.refund_send(refund.pk)

    refund.refresh_from_db()
    assert refund.status == "succeeded"
    order.refresh_from_db()
    assert order.refunded_fen == 500 and order.status == OrderStatus.PARTIALLY_REFUNDED


def test_a_refund_the_channel_refuses_and_does_not_know_fails_and_frees_its_amount(
    paid_order_factory, monkeypatch
) -> None:
    order = paid_order_factory("alipay")
    provider = provider_for("alipay")

    def refused(**kwargs):
        raise ProviderError("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", retryable=False)

    monkeypatch.setattr(provider, "refund_create", refused)
    refund = orders.refund_request(order=order, amount_fen=500, reason="", actor=None)
    refunds.refund_send(refund.pk)

    refund.refresh_from_db()
    assert refund.status == "failed"
    monkeypatch.undo()
    again = orders.refund_request(order=order, amount_fen=FEE, reason="", actor=None)
    assert again.amount_fen == FEE


@pytest.mark.parametrize("channel", ["wechat", "alipay", "unionpay"])
def test_a_refund_whose_fate_the_channel_cannot_tell_us_keeps_its_amount(
    paid_order_factory, monkeypatch, settings, channel
) -> None:
    order = paid_order_factory(channel)
    provider = provider_for(channel)
    create = provider.refund_create

    def taken_but_unreadable(**kwargs):
        create(**kwargs)  # the channel refunds…
        raise ProviderError("answer signature does not verify", retryable=False)

    def unreadable(**kwargs):
        raise ProviderError("answer signature does not verify", retryable=False)

    monkeypatch.setattr(provider, "refund_create", taken_but_unreadable)
    monkeypatch.setattr(provider, "refund_query", unreadable)
    refund = orders.refund_request(order=order, amount_fen=500, reason="", actor=None)
    assert refunds.refund_send(refund.pk) is False

    # The money may have gone back: not failed, its amount still taken.
    refund.refresh_from_db()
    assert refund.status == "pending"
    from payments.errors import PaymentsError

    with pytest.raises(PaymentsError) as refused:
        orders.refund_request(order=order, amount_fen=FEE, reason="", actor=None)
    assert refused.value.code == "refund_exceeds_paid"

    monkeypatch.undo()  # the channel's answers can be read again: the sweep settles it
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    Refund.objects.filter(pk=refund.pk).update(created_at=order.created_at.replace(year=2000))
    refunds.refunds_sweep()
    refund.refresh_from_db()
    if refund.status == "pending":  # channels that settle later
        refunds.refunds_sweep()
        refund.refresh_from_db()
    assert refund.status == "succeeded"
    order.refresh_from_db()
    assert order.refunded_fen == 500 and order.status == OrderStatus.PARTIALLY_REFUNDED


@pytest.fixture
def paid_order_factory(citizen, fee_service):
    def make(channel: str) -> PaymentOrder:
        application = applications.application_submit(
            citizen=citizen, service=fee_service, form=GOOD_FORM
        )
        order, _ = orders.order_create(
            citizen=citizen, application_id=application.pk, channel=channel
        )
        trade = books.trade_pay(channel=channel, order_no=order.order_no, succeed=True)
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
        order.refresh_from_db()
        return order

    return make


def test_a_channel_whose_key_files_are_missing_is_unavailable_not_an_error(
    citizen_api, awaiting, settings
) -> None:
    settings.PAYMENTS_SANDBOX = False
    settings.PAYMENTS_CHANNELS = {
        **settings.PAYMENTS_CHANNELS,
        "wechat": {
            **settings.PAYMENTS_CHANNELS["wechat"],
            "private_key_file": "/nonexistent/apiclient_key.pem",
            "platform_key_file": "/nonexistent/pub_key.pem",
        },
    }
    response = citizen_api.post(
        "/api/v1/payments/", {"application": awaiting["id"], "channel": "wechat"}, format="json"
    )
    assert response.status_code == 503
    assert response.json()["code"] == "payment_channel_unavailable"


def test_the_database_holds_one_open_order_per_application(citizen_api, awaiting) -> None:
    order = PaymentOrder.objects.get(pk=open_order(citizen_api, awaiting)["id"])
    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentOrder.objects.create(
            order_no="P20261206SECONDOPENORDER",
            application=order.application,
            payer=order.payer,
            department=order.department,
            service=order.service,
            description="x",
            amount_fen=FEE,
            channel="alipay",
            expires_at=order.expires_at,
        )


@pytest.mark.parametrize(
    "headers",
    [
        {"Wechatpay-Timestamp": "²"},
        {"Wechatpay-Timestamp": "1" * 5000},
        {"Wechatpay-Signature": "签名"},
    ],
)
def test_odd_wechat_headers_are_refused_not_a_500(api, citizen_api, awaiting, headers) -> None:
    order = open_order(citizen_api, awaiting, "wechat")
    trade = books.trade_pay(channel="wechat", order_no=order["order_no"], succeed=True)
    genuine, body = sandbox_for("wechat").payment_notify(trade)
    sent = {**genuine, **headers}
    response = api.generic(
        "POST",
        "/api/v1/payments/notify/wechat/",
        body,
        content_type="application/json",
        headers={k: v for k, v in sent.items() if k.lower() != "content-type"},
    )
    assert 400 <= response.status_code < 500
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PENDING


@pytest.mark.parametrize("channel", ["wechat", "alipay", "unionpay"])
def test_a_nul_in_a_callback_is_refused_and_logged(api, channel) -> None:
    response = api.generic(
        "POST",
        f"/api/v1/payments/notify/{channel}/",
        b"out_trade_no=P1\x00&total_amount=1",
        content_type="application/x-www-form-urlencoded",
    )
    assert 400 <= response.status_code < 500
    log = NotifyLog.objects.get()
    assert "\x00" not in log.body_excerpt and log.outcome == "rejected"


# --- Races on real row locks (the PostgreSQL pass) -------------------------------------------


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_same_callback_arriving_eight_times_at_once_pays_once(citizen, fee_service) -> None:
    application = applications.application_submit(
        citizen=citizen, service=fee_service, form=GOOD_FORM
    )
    order, _ = orders.order_create(citizen=citizen, application_id=application.pk, channel="wechat")
    trade = books.trade_pay(channel="wechat", order_no=order.order_no, succeed=True)
    headers, body = sandbox_for("wechat").payment_notify(trade)

    replies = at_once(
        8,
        lambda _: (
            notifications.notify_receive(
                channel="wechat", headers=headers, body=body, client_ip=None
            ).status
        ),
    )

    assert replies == [204] * 8
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    assert (
        sorted(NotifyLog.objects.values_list("outcome", flat=True))
        == ["accepted"] + ["duplicate"] * 7
    )
    assert Application.objects.get(pk=application.pk).status == "submitted"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_orders_opened_at_once_for_one_application_leave_one_open(citizen, fee_service) -> None:
    application = applications.application_submit(
        citizen=citizen, service=fee_service, form=GOOD_FORM
    )
    channels = ["wechat", "alipay", "unionpay", "wechat", "alipay", "unionpay"]

    opened = at_once(
        len(channels),
        lambda i: (
            orders.order_create(
                citizen=citizen, application_id=application.pk, channel=channels[i]
            )[0].order_no
        ),
    )

    assert len(opened) == len(channels)
    assert PaymentOrder.objects.filter(application=application, status="pending").count() == 1


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_callback_and_a_refund_racing_a_withdrawal_keep_the_books_straight(
    citizen, fee_service
) -> None:
    application = applications.application_submit(
        citizen=citizen, service=fee_service, form=GOOD_FORM
    )
    order, _ = orders.order_create(citizen=citizen, application_id=application.pk, channel="alipay")
    trade = books.trade_pay(channel="alipay", order_no=order.order_no, succeed=True)
    headers, body = sandbox_for("alipay").payment_notify(trade)

    def step(i: int) -> None:
        if i % 2 == 0:
            notifications.notify_receive(
                channel="alipay", headers=headers, body=body, client_ip=None
            )
        else:
            # Already cancelled, or paid and routed on: refused, fine.
            with contextlib.suppress(ServicesError):
                applications.application_cancel(citizen=citizen, application=application)

    at_once(6, step)

    final = Application.objects.get(pk=application.pk)
    paid = PaymentOrder.objects.get(pk=order.pk)
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    if final.status == "cancelled":
        # Paid after (or as) it was withdrawn: the money is on its way back.
        from services.models import OutboxEvent

        for event in OutboxEvent.objects.filter(type="application.cancelled"):
            refunds.application_cancelled(event)
        reserved = sum(Refund.objects.exclude(status="failed").values_list("amount_fen", flat=True))
        assert reserved == paid.paid_fen == FEE
    else:
        assert final.status == "submitted" and paid.status == "paid"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_withdrawal_handled_as_the_account_closes_goes_through_both(
    citizen, fee_service, monkeypatch
) -> None:
    """The withdrawal's subscribers (its open order closes) and the account's
    close both lock the application before its event: a close that comes
    while the subscribers run waits for them, instead of holding the
    application while they hold the event (PostgreSQL would abort one)."""
    from accounts.models import User
    from services.models import OutboxEvent
    from services.routing import events, outbox
    from tests.concurrency import close_meanwhile, pause_in

    application = applications.application_submit(
        citizen=citizen, service=fee_service, form=GOOD_FORM
    )
    order, _ = orders.order_create(citizen=citizen, application_id=application.pk, channel="alipay")
    monkeypatch.setattr(outbox, "events_nudge", lambda ids: True)  # handled below, in a thread
    applications.application_cancel(citizen=citizen, application=application)
    withdrawn = OutboxEvent.objects.get(type="application.cancelled")

    # Paused with the event held, its subscribers about to run.
    paused, release = pause_in(monkeypatch, events, "subscribers")
    close_waited = close_meanwhile(
        lambda: outbox.event_handle(withdrawn.pk),
        paused=paused,
        release=release,
        user_id=citizen.pk,
    )

    assert close_waited
    withdrawn.refresh_from_db()
    assert withdrawn.handled_at is not None
    assert withdrawn.data["application"]["applicant"] == {"sub": citizen.subject}
    assert PaymentOrder.objects.get(pk=order.pk).status == OrderStatus.CLOSED
    assert User.objects.get(pk=citizen.pk).closed_at is not None

"""The channels' callbacks at our notify endpoint: genuine ones are applied
once; forged, replayed, reordered, duplicated ones change nothing they
should not, and every refusal is logged and audited."""

from __future__ import annotations

import pytest
from django.test import TestCase

from accounts.models import AuditEntry
from payments import inbox, notifications
from payments.models import LedgerEntry, NotifyLog, OrderStatus, PaymentOrder, SandboxTrade
from payments.sandbox import books
from payments.sandbox.channels import sandbox_for
from services.models import Application, OutboxEvent
from services.routing import events
from tests.payments.conftest import CHANNELS, FEE, open_order

pytestmark = pytest.mark.django_db

ACKNOWLEDGED = {"wechat": (204, b""), "alipay": (200, b"success"), "unionpay": (200, b"ok")}


def paid_trade(order: dict, *, succeed: bool = True) -> SandboxTrade:
    """The citizen paid at the channel; its callback is not sent yet."""
    return books.trade_pay(channel=order["channel"], order_no=order["order_no"], succeed=succeed)


def callback(trade: SandboxTrade) -> tuple[dict[str, str], bytes]:
    built = sandbox_for(trade.channel).payment_notify(trade)
    assert built is not None
    return built


def post(api, channel: str, headers: dict[str, str], body: bytes):
    """The channel calls; what our endpoint starts after commit (the worker
    applying the callback) runs too."""
    others = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    with TestCase.captureOnCommitCallbacks(execute=True):
        return api.generic(
            "POST",
            f"/api/v1/payments/notify/{channel}/",
            body,
            content_type=headers.get("Content-Type") or headers.get("content-type", ""),
            headers=others,
        )


def assert_acknowledged(response, channel: str) -> None:
    status, body = ACKNOWLEDGED[channel]
    assert response.status_code == status, response.content
    assert response.content == body


def tamper(channel: str, body: bytes) -> bytes:
    """The same callback with one thing changed after it was signed."""
    if channel == "wechat":
        return body.replace(b'"summary":', b'"summary" :', 1)
    if channel == "alipay":
        return body.replace(b"total_amount=20.00", b"total_amount=0.01")
    return body.replace(b"txnAmt=2000", b"txnAmt=1")


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_genuine_callback_pays_the_order_once(api, citizen_api, awaiting, channel) -> None:
    order = open_order(citizen_api, awaiting, channel)
    headers, body = callback(paid_trade(order))

    first = post(api, channel, headers, body)
    again = post(api, channel, headers, body)

    assert_acknowledged(first, channel)
    assert_acknowledged(again, channel)
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PAID
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    assert OutboxEvent.objects.filter(type=events.PAYMENT_SUCCEEDED).count() == 1
    outcomes = list(NotifyLog.objects.order_by("received_at").values_list("outcome", flat=True))
    assert outcomes == ["accepted", "duplicate"]


@pytest.mark.parametrize("accept", ["text/html", ""])
@pytest.mark.parametrize("channel", CHANNELS)
def test_a_callback_is_handled_whatever_accept_the_channel_sends(
    api, citizen_api, awaiting, channel, accept
) -> None:
    """The view behind the fast path handles it too: DRF's negotiation
    answered 406 before reading it, where the fast path handled it."""
    order = open_order(citizen_api, awaiting, channel)
    headers, body = callback(paid_trade(order))

    response = post(api, channel, {**headers, "Accept": accept}, body)

    assert_acknowledged(response, channel)
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PAID


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_forged_callback_changes_nothing_and_is_audited(
    api, citizen_api, awaiting, channel
) -> None:
    order = open_order(citizen_api, awaiting, channel)
    headers, body = callback(paid_trade(order))

    response = post(api, channel, headers, tamper(channel, body))

    assert response.status_code == 401
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PENDING
    assert not LedgerEntry.objects.exists()
    assert Application.objects.get(pk=awaiting["id"]).status == "awaiting_payment"
    log = NotifyLog.objects.get()
    assert (log.outcome, log.reason) == ("rejected", "bad_signature")
    audit = AuditEntry.objects.get(action="payment.notify_rejected")
    assert audit.data["reason"] == "bad_signature" and audit.data["channel"] == channel


@pytest.mark.parametrize("channel", CHANNELS)
def test_garbage_at_the_notify_endpoint_is_refused_in_the_channels_format(api, channel) -> None:
    for body, content_type in [
        (b"", "application/json"),
        (b"\xff\xfe\x00", "application/octet-stream"),
        (b"[" * 5000, "application/json"),
        (b"a=b&c=d", "application/x-www-form-urlencoded"),
    ]:
        response = api.generic(
            "POST", f"/api/v1/payments/notify/{channel}/", body, content_type=content_type
        )
        assert 400 <= response.status_code < 500, (channel, body[:10], response.content)
    assert NotifyLog.objects.filter(outcome="rejected").count() == 4


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_callback_for_an_order_we_do_not_have_is_refused(
    api, citizen_api, awaiting, channel
) -> None:
    order = open_order(citizen_api, awaiting, channel)
    trade = paid_trade(order)
    PaymentOrder.objects.filter(pk=order["id"]).update(order_no="P20260101UNKNOWN0000001")
    headers, body = callback(trade)

    response = post(api, channel, headers, body)

    assert response.status_code == 404
    assert not LedgerEntry.objects.exists()
    assert NotifyLog.objects.get().reason == "unknown_order"


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_genuine_callback_for_another_amount_is_refused(
    api, citizen_api, awaiting, channel
) -> None:
    order = open_order(citizen_api, awaiting, channel)
    trade = paid_trade(order)
    trade.amount_fen = 1  # the channel says one fen was paid, genuinely signed
    headers, body = callback(trade)

    response = post(api, channel, headers, body)

    assert response.status_code == 400
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PENDING
    assert NotifyLog.objects.get().reason == "amount_mismatch"
    assert AuditEntry.objects.filter(action="payment.notify_rejected").count() == 1


def test_a_callback_sent_to_another_channels_endpoint_is_refused(
    api, citizen_api, awaiting
) -> None:
    order = open_order(citizen_api, awaiting, "alipay")
    headers, body = callback(paid_trade(order))
    response = post(api, "unionpay", headers, body)
    assert 400 <= response.status_code < 500
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PENDING


def test_an_unknown_channel_is_not_found(api) -> None:
    response = api.post("/api/v1/payments/notify/paypal/", b"{}", content_type="application/json")
    assert response.status_code == 404


@pytest.mark.parametrize("channel", ["alipay", "unionpay"])
def test_a_failure_callback_after_the_success_does_not_undo_it(
    api, citizen_api, awaiting, channel
) -> None:
    order = open_order(citizen_api, awaiting, channel)
    trade = paid_trade(order)
    success = callback(trade)
    # The same trade as the channel first reported it: failed (sent earlier,
    # arriving later).
    trade.state = "PAYERROR"
    failure = callback(trade)

    assert_acknowledged(post(api, channel, *success), channel)
    assert_acknowledged(post(api, channel, *failure), channel)

    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PAID
    assert LedgerEntry.objects.count() == 1


@pytest.mark.parametrize("channel", ["alipay", "unionpay"])
def test_a_success_after_a_failure_callback_is_the_truth(
    api, citizen_api, awaiting, channel
) -> None:
    order = open_order(citizen_api, awaiting, channel)
    trade = paid_trade(order)
    success = callback(trade)
    trade.state = "PAYERROR"
    failure = callback(trade)

    assert_acknowledged(post(api, channel, *failure), channel)
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.FAILED
    assert_acknowledged(post(api, channel, *success), channel)

    paid = PaymentOrder.objects.get(pk=order["id"])
    assert paid.status == OrderStatus.PAID and paid.paid_fen == FEE
    assert Application.objects.get(pk=awaiting["id"]).status == "submitted"


@pytest.mark.parametrize("channel", CHANNELS)
def test_the_channel_sending_its_callback_twice_pays_once(
    citizen_api, awaiting, pay, settings, channel
) -> None:
    settings.PAYMENTS_SANDBOX_DUPLICATE_RATE = 1.0
    paid = pay(open_order(citizen_api, awaiting, channel))
    assert paid.status == OrderStatus.PAID
    assert list(NotifyLog.objects.values_list("outcome", flat=True).order_by("id")) == [
        "accepted",
        "duplicate",
    ]
    assert LedgerEntry.objects.count() == 1
    assert OutboxEvent.objects.filter(type=events.PAYMENT_SUCCEEDED).count() == 1


def test_a_callback_the_merchant_refused_is_sent_again_on_the_channels_schedule(
    citizen_api, awaiting, settings
) -> None:
    from payments import tasks
    from payments.sandbox import notify

    order = open_order(citizen_api, awaiting, "wechat")
    trade = paid_trade(order)
    real_url = trade.notify_url
    SandboxTrade.objects.filter(pk=trade.pk).update(
        notify_url=real_url.replace("wechat", "nowhere")
    )

    wait = notify.notify_send(trade.pk)

    assert wait == pytest.approx(15 * settings.PAYMENTS_SANDBOX_TIME_SCALE)
    trade.refresh_from_db()
    assert trade.notify_attempts == 1 and trade.notified_at is None
    SandboxTrade.objects.filter(pk=trade.pk).update(
        notify_url=real_url, notify_due_at=trade.created_at
    )
    with TestCase.captureOnCommitCallbacks(execute=True):  # the worker applies it
        assert tasks.payments_sweep()["callbacks"] == 1
    trade.refresh_from_db()
    assert trade.notified_at is not None and trade.notify_attempts == 2
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PAID


def test_callbacks_are_throttled_per_address(api, settings) -> None:
    settings.PAYMENTS_NOTIFY_RATE = "3/day"
    codes = [
        api.post("/api/v1/payments/notify/alipay/", b"x=1", content_type="text/plain").status_code
        for _ in range(4)
    ]
    assert codes[:3] == [400, 400, 400]
    assert codes[3] == 429


def test_a_callback_whose_worker_never_came_is_applied_by_the_sweep(
    api, citizen_api, awaiting
) -> None:
    import datetime as dt

    from django.utils import timezone

    from payments import tasks

    order = open_order(citizen_api, awaiting, "alipay")
    headers, body = callback(paid_trade(order))
    # Acknowledged, written down; the nudge to the worker is lost (the
    # after-commit work is never run here).
    response = api.generic(
        "POST",
        "/api/v1/payments/notify/alipay/",
        body,
        content_type=headers["Content-Type"],
    )
    assert_acknowledged(response, "alipay")
    if inbox.enabled():  # waiting in the Redis inbox
        assert inbox.inbox_size() == 1 and not NotifyLog.objects.exists()
    else:
        log = NotifyLog.objects.get()
        assert log.outcome == "received" and log.result["transaction_id"]
        NotifyLog.objects.update(received_at=timezone.now() - dt.timedelta(seconds=10))
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PENDING

    assert tasks.payments_sweep()["applied"] == 1

    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PAID
    log = NotifyLog.objects.exclude(outcome="duplicate").get()  # the sandbox's repeat may follow
    assert log.outcome == "accepted" and log.handled_at is not None
    assert log.result["transaction_id"]
    assert tasks.payments_sweep()["applied"] == 0


@pytest.mark.integration  # the mark lives in the cache web and workers share (Redis)
@pytest.mark.parametrize("where", ["redis", "database"])
def test_one_nudge_serves_every_callback_that_arrives_before_its_drain(
    api, citizen_api, fee_service, monkeypatch, settings, where
) -> None:
    settings.PAYMENTS_NOTIFY_INBOX = where
    from celery import current_app

    from tests.payments.conftest import apply_for

    published = []
    task = current_app.tasks[notifications.NOTIFY_APPLY_TASK]
    monkeypatch.setattr(task, "apply_async", lambda *a, **k: published.append(1))
    orders_ = [
        open_order(citizen_api, apply_for(citizen_api, fee_service), "alipay") for _ in "abc"
    ]

    for order in orders_[:2]:
        assert_acknowledged(post(api, "alipay", *callback(paid_trade(order))), "alipay")
    assert len(published) == 1  # the second found the first's drain on its way

    assert notifications.notifies_drain() == 2  # the drain reads both
    assert {PaymentOrder.objects.get(pk=o["id"]).status for o in orders_[:2]} == {"paid"}

    assert_acknowledged(post(api, "alipay", *callback(paid_trade(orders_[2]))), "alipay")
    assert len(published) == 2  # after a drain began, the next callback nudges again


def _received(api, citizen_api, awaiting, channel: str = "alipay") -> tuple[dict, NotifyLog]:
    order = open_order(citizen_api, awaiting, channel)
    headers, body = callback(paid_trade(order))
    # Acknowledged and written down; the worker's nudge is not run here.
    response = api.generic(
        "POST", f"/api/v1/payments/notify/{channel}/", body, content_type=headers["Content-Type"]
    )
    assert_acknowledged(response, channel)
    notifications.notifies_collect()  # what a worker does first (Redis inbox → rows)
    return order, NotifyLog.objects.filter(outcome="received").latest("received_at")


def test_a_callback_the_worker_cannot_apply_yet_stays_received_then_is_parked_and_audited(
    api, citizen_api, awaiting, settings
) -> None:

    order, log = _received(api, citizen_api, awaiting)
    # The worker has no account at the channel (a key file missing there).
    settings.PAYMENTS_CHANNELS = {
        k: v for k, v in settings.PAYMENTS_CHANNELS.items() if k != "alipay"
    }

    assert notifications.notify_apply(log_id=log.pk) is None
    log.refresh_from_db()
    assert (log.outcome, log.reason, log.apply_attempts) == (
        "received",
        "payment_channel_unavailable",
        1,
    )
    for _ in range(notifications.APPLY_ATTEMPTS - 1):
        notifications.notify_apply(log_id=log.pk)
    log.refresh_from_db()
    assert log.outcome == "rejected" and log.handled_at is not None
    audit = AuditEntry.objects.get(action="payment.notify_not_applied")
    assert audit.data["order_no"] == order["order_no"]
    assert audit.data["reason"] == "apply_failed:payment_channel_unavailable"
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PENDING


def test_a_callback_is_applied_once_whoever_applies_it(api, citizen_api, awaiting) -> None:

    order, log = _received(api, citizen_api, awaiting)
    assert notifications.notify_apply(log_id=log.pk) == "accepted"
    assert notifications.notify_apply(log_id=log.pk) is None
    log.refresh_from_db()
    assert log.outcome == "accepted"
    assert LedgerEntry.objects.filter(kind="charge").count() == 1


def test_a_callback_whose_order_went_away_is_rejected_and_audited(
    api, citizen_api, awaiting
) -> None:

    order, log = _received(api, citizen_api, awaiting)
    log.result = {**log.result, "order_no": "P20260101GONE"}
    log.save(update_fields=["result"])
    assert notifications.notify_apply(log_id=log.pk) == "rejected"
    assert AuditEntry.objects.get(action="payment.notify_not_applied").data["reason"] == (
        "unknown_order"
    )


def test_a_drain_takes_one_batch_and_nudges_again_for_the_rest(
    api, citizen_api, fee_service, monkeypatch
) -> None:
    from celery import current_app

    from tests.payments.conftest import apply_for

    for _ in range(3):
        _received(api, citizen_api, apply_for(citizen_api, fee_service))
    published = []
    monkeypatch.setattr(notifications, "DRAIN_BATCH", 2)
    monkeypatch.setattr(
        current_app.tasks[notifications.NOTIFY_APPLY_TASK],
        "apply_async",
        lambda *a, **k: published.append(1),
    )
    assert notifications.notifies_drain() == 2
    assert published == [1]  # a full batch: the rest is another drain's
    assert notifications.notifies_drain() == 1
    assert published == [1]


def test_a_signed_success_without_a_transaction_id_is_refused_not_taken_as_a_repeat(
    api, citizen_api, awaiting
) -> None:
    import urllib.parse

    from payments.sandbox import keys
    from tests.payments.test_unionpay_channel import spec_signed

    order = open_order(citizen_api, awaiting, "unionpay")
    headers, body = callback(paid_trade(order))
    notice = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
    del notice["queryId"]
    signed = spec_signed(notice, keys.private_key("unionpay.platform"))

    response = post(api, "unionpay", headers, urllib.parse.urlencode(signed).encode())

    # Not acknowledged as a repeat of a charge the order does not have:
    # refused, so that UnionPay sends it again, and the order waits for
    # the channel's word (its query) instead.
    assert response.status_code == 400
    assert NotifyLog.objects.get().outcome == "rejected"
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PENDING


def test_unionpays_genuine_refund_notice_is_acknowledged_not_audited_as_forged(
    api, citizen_api, awaiting
) -> None:
    """UnionPay posts a refund's notice (txnType 04) to the same back URL,
    signed like any: it is acknowledged (or UnionPay sends it again and
    again) and logged, not refused and audited as an attack; the refund is
    still settled by its query."""
    import urllib.parse

    from payments.sandbox import keys
    from tests.payments.test_unionpay_channel import spec_signed

    order = open_order(citizen_api, awaiting, "unionpay")
    headers, body = callback(paid_trade(order))
    notice = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
    notice.update(
        txnType="04", txnSubType="00", orderId="R20261207ABCDEF0123456", txnAmt="500",
        origQryId=notice["queryId"], queryId="U20261207REFUND000001",
    )  # fmt: skip
    signed = spec_signed(notice, keys.private_key("unionpay.platform"))

    response = post(api, "unionpay", headers, urllib.parse.urlencode(signed).encode())

    assert_acknowledged(response, "unionpay")
    logged = NotifyLog.objects.get()
    assert (logged.outcome, logged.reason) == ("ignored", "not_a_payment")
    assert not AuditEntry.objects.filter(action="payment.notify_rejected").exists()
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PENDING

    # A forged one still is refused.
    forged = urllib.parse.urlencode({**signed, "txnAmt": "501"}).encode()
    assert post(api, "unionpay", headers, forged).status_code == 401  # bad signature

"""Every change of a payment order and of its ledger: open, pay, fail,
close, refund. One status table, one place that moves an order, and the
ledger written in the same transaction as the move it explains.

The channel is the truth about money: a success it reports is recorded
whatever our order says (even closed: the citizen paid just as we gave up
waiting), and money that no longer has an application to pay for (it was
withdrawn meanwhile, or paid through another order) goes back at once.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import operator
import secrets
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from kombu.exceptions import OperationalError as BrokerError

from accounts import audit
from accounts.audit import audit_record
from accounts.inbox import message_post
from accounts.models import ApiKey, User
from config.errors import NOT_FOUND
from payments import inbox, selectors
from payments.errors import (
    APPLICATION_NOT_PAYABLE,
    PAYMENT_CHANNEL_UNAVAILABLE,
    PAYMENT_PROVIDER_ERROR,
    PAYMENT_RESULT_MISMATCH,
    REFUND_EXCEEDS_PAID,
    REFUND_NOT_ALLOWED,
    PaymentsError,
)
from payments.models import (
    EntryKind,
    LedgerEntry,
    OrderStatus,
    PaymentOrder,
    Refund,
    RefundStatus,
)
from payments.providers import ChannelUnavailable, provider_for
from payments.providers.base import (
    BasePaymentProvider,
    PaymentResult,
    ProviderError,
    RefundResult,
)
from services import applications
from services.errors import INVALID_TRANSITION, ServicesError
from services.models import Application, ApplicationStatus
from services.routing import events, outbox

logger = logging.getLogger(__name__)

OS = OrderStatus

# How an order may move. Nothing else.
TRANSITIONS: dict[str, set[str]] = {
    OS.PENDING: {OS.PAID, OS.CLOSED, OS.FAILED},
    # The channel took the money after we stopped waiting for it: the money
    # is real, so the order is paid (and refunded if nothing needs it).
    OS.CLOSED: {OS.PAID},
    OS.FAILED: {OS.PAID},
    OS.PAID: {OS.PARTIALLY_REFUNDED, OS.REFUNDED},
    OS.PARTIALLY_REFUNDED: {OS.PARTIALLY_REFUNDED, OS.REFUNDED},
}
REFUNDABLE = (OS.PAID, OS.PARTIALLY_REFUNDED)

REFUND_SEND_TASK = "payments.refund_send"

Outcome = Literal["accepted", "duplicate", "ignored"]


def transition_allowed(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, set())


def _move(order: PaymentOrder, target: str, *, also: tuple[str, ...] = ()) -> None:
    """The one place an order's status changes; ``order`` must be locked."""
    if not transition_allowed(order.status, target):
        raise ServicesError(
            INVALID_TRANSITION,
            f"payment order {order.order_no}: {order.status} -> {target}",
            extra={"current_status": order.status},
        )
    order.status = target
    order.save(update_fields=["status", "updated_at", *also])
    # What the notify door checks callbacks against follows every change.
    inbox.facts_remember(order)


def _locked(order_id: Any) -> PaymentOrder:
    """The order, locked, after its application: every change of money locks
    the application first and the order second (the application's changes,
    and the outbox numbering its events, lock the application too), so two
    of them never wait on each other in opposite orders."""
    application_id = (
        PaymentOrder.objects.filter(pk=order_id).values_list("application_id", flat=True).get()
    )
    # of=("self",): the rows themselves only, not the joined ones (see
    # services.applications._locked for the deadlock this avoids).
    Application.objects.select_for_update(of=("self",)).filter(pk=application_id).exists()
    return (
        PaymentOrder.objects.select_for_update(of=("self",))
        .select_related("application", "service", "department", "payer")
        .get(pk=order_id)
    )


def _new_number(prefix: str, now: dt.datetime) -> str:
    # 23 characters of [0-9A-Z]: within every channel's limits on order and
    # refund numbers (WeChat 32, UnionPay 40, Alipay 64).
    return f"{prefix}{timezone.localtime(now):%Y%m%d}{secrets.token_hex(7).upper()}"


def notify_url(channel: str) -> str:
    return f"{settings.PAYMENTS_NOTIFY_BASE_URL.rstrip('/')}/api/v1/payments/notify/{channel}/"


def provider(channel: str) -> BasePaymentProvider:
    try:
        return provider_for(channel)
    except ChannelUnavailable as exc:
        raise PaymentsError(PAYMENT_CHANNEL_UNAVAILABLE) from exc


def _publish(order: PaymentOrder, event_type: str, *, refund: Refund | None = None) -> None:
    payment = selectors.payment_view(order)
    data: dict[str, Any] = {"payment": payment}
    if refund is not None:
        # In data.payment as DESIGN §6 has it; beside it too, where earlier
        # versions of the department guide put it.
        payment["refund"] = data["refund"] = {
            "id": str(refund.id),
            "refund_no": refund.refund_no,
            "amount_fen": refund.amount_fen,
        }
    application = order.application
    outbox.event_publish(
        type=event_type,
        # The department hears of an order's money only if it had heard of
        # the application (as of its withdrawal, and as its API lists them:
        # submitted_at, when it reached it). One withdrawn before payment
        # never did; a late payment through a channel that cannot close a
        # trade, and the refund that follows, are the citizen's and the
        # ledger's business, not news of an application it cannot look up.
        department=order.department if application.submitted_at is not None else None,
        application=application,
        data=data,
    )


# --- Citizen ---------------------------------------------------------------------------------


def order_create(*, citizen: User, application_id: Any, channel: str) -> tuple[PaymentOrder, bool]:
    """Open an order through ``channel`` for the citizen's application
    ``application_id`` (another's, or none, is ``not_found``); the amount is
    the application's fee.

    An open order of the same channel that is not about to expire is
    returned as it is (``created`` False): one open order per application.
    An open order of another channel (or one about to expire) is closed,
    at its channel first, once the new channel has given the new order its
    checkout: refused, the open order stays as it is, payable.
    """
    chosen = provider(channel)
    try:
        return _order_open(
            citizen=citizen, application_id=application_id, channel=channel, chosen=chosen
        )
    except _CloseRefused as refused:
        # The open order's channel would not close it: if it was paid there
        # as the citizen left it, the payment is brought in and that order
        # is the answer (paid: nothing is left to pay).
        _bring_in(refused)
        brought = PaymentOrder.objects.get(pk=refused.order.pk)
        if brought.status == OS.PAID:
            return brought, False
        if brought.status in (OS.CLOSED, OS.FAILED):
            # Ended at its channel meanwhile, and now here: nothing is in
            # the way of the order asked for.
            return _order_open(
                citizen=citizen, application_id=application_id, channel=channel, chosen=chosen
            )
        # Its word was refused (audited): not this order's checkout in
        # place of the channel asked for.
        raise PaymentsError(PAYMENT_PROVIDER_ERROR) from refused


@transaction.atomic
def _order_open(
    *, citizen: User, application_id: Any, channel: str, chosen: BasePaymentProvider
) -> tuple[PaymentOrder, bool]:
    # The application, locked, with what an order needs of it (not its
    # encrypted form) and its service's name.
    application = (
        Application.objects.select_for_update(of=("self",))
        .select_related("service", "department")
        .only("status", "fee_fen", "service__name", "department__name", "department__name_en")
        .filter(pk=application_id, applicant=citizen)
        .first()
    )
    if application is None:
        raise PaymentsError(NOT_FOUND)
    if application.status != ApplicationStatus.AWAITING_PAYMENT or application.fee_fen <= 0:
        raise PaymentsError(
            APPLICATION_NOT_PAYABLE, extra={"application_status": application.status}
        )
    now = timezone.now()
    current = None
    current_id = selectors.open_order_id(application.pk)
    if current_id is not None:
        current = _locked(current_id)
        if current.channel == channel and current.expires_at > now + dt.timedelta(minutes=1):
            return current, False
    order = PaymentOrder(
        order_no=_new_number("P", now),
        application=application,
        payer=citizen,
        department_id=application.department_id,
        service=application.service,
        description=application.service.name[:127],
        payee_name=application.department.name,
        payee_name_en=application.department.name_en,
        amount_fen=application.fee_fen,
        channel=channel,
        expires_at=now + dt.timedelta(seconds=settings.PAYMENTS_ORDER_TTL_SECONDS),
        created_at=now,
    )
    # The channel first, then one INSERT with what it answered. If the
    # INSERT fails, the channel holds an unpaid trade nobody can pay:
    # it expires there.
    try:
        order.checkout = chosen.checkout_create(
            order_no=order.order_no,
            amount_fen=order.amount_fen,
            description=order.description,
            expires_at=order.expires_at,
            notify_url=notify_url(channel),
        )
    except ProviderError as exc:
        logger.warning("%s checkout of %s failed: %s", channel, order.order_no, exc)
        raise PaymentsError(PAYMENT_PROVIDER_ERROR) from exc
    if current is not None:
        # The open order is closed at its channel only once the new one has
        # its checkout: a close there is final, and a refused checkout rolls
        # this transaction back (the request's too, with an Idempotency-Key),
        # which would leave the order pending here, handed out again, though
        # its channel would take no payment for it. Refused in turn (paid
        # there just now?), the new checkout is left to expire unpaid at its
        # channel, as when the INSERT fails.
        _close(current, reason="superseded")
    order.save(force_insert=True)
    inbox.facts_remember(order)
    audit_record(
        actor=citizen,
        action="payment.created",
        target=order,
        data={"order_no": order.order_no, "amount_fen": order.amount_fen, "channel": channel},
    )
    return order, True


# --- What the channel says --------------------------------------------------------------------


def order_apply_result(*, order: PaymentOrder, result: PaymentResult, source: str) -> Outcome:
    """Apply the channel's word on an order (a callback, or the answer to
    a query). Paid: the charge is written once per channel transaction id,
    the order is paid, the application goes to its department (or, if it
    cannot take the money any more, the money goes back). Failed or closed:
    a pending order ends; one whose payment failed is closed at its channel
    too, after commit. Anything else changes nothing.

    A word that does not fit the order (another order number, merchant or
    amount) changes nothing either: it is audited and refused with
    ``payment_result_mismatch``, whichever way it came."""
    mismatch = _mismatch(order, result)
    if mismatch:
        audit_record(
            actor=None,
            action="payment.result_refused",
            target=order,
            data={
                "order_no": order.order_no,
                "source": source,
                "reason": mismatch,
                "amount_fen": result.amount_fen,
            },
        )
        raise PaymentsError(PAYMENT_RESULT_MISMATCH, extra={"reason": mismatch})
    with transaction.atomic():
        order = _locked(order.pk)
        if result.state == "paid":
            return _charge(order, result, source=source)
        if result.state in ("failed", "closed") and order.status == OS.PENDING:
            now = timezone.now()
            order.closed_at = now
            # The channel closed it after the order's time ran out: closed.
            # Closed or failed while we still held it open: the payment
            # did not go through.
            expired = result.state == "closed" and order.expires_at <= now
            _move(order, OS.CLOSED if expired else OS.FAILED, also=("closed_at",))
            if result.state == "failed":
                # The payment failed, the trade is not closed: WeChat Pay
                # leaves it open to another try until the merchant closes
                # it, and the citizen could pay an order we gave up on.
                # Closed at its channel as every order we close is (a
                # channel that says "closed" has closed it already).
                _close_at_channel_after_commit(order)
            message_post(
                user=order.payer,
                kind="payment.failed",
                title=_("支付未成功"),
                body=_("订单 %(order_no)s（%(amount)s 元）支付未成功，您可以重新发起支付。"),
                params={"order_no": order.order_no, "amount": selectors.yuan(order.amount_fen)},
                data={"order": str(order.id), "order_no": order.order_no, "status": order.status},
            )
            audit_record(
                actor=None,
                action="payment.failed",
                target=order,
                data={"order_no": order.order_no, "source": source, "state": result.raw_state},
            )
            return "accepted"
    return "ignored"


def _mismatch(order: PaymentOrder, result: PaymentResult) -> str:
    """Why the channel's word cannot be about this order, or ""."""
    if result.order_no != order.order_no:
        return "wrong_order"
    if result.state == "paid" and result.amount_fen != order.amount_fen:
        return "amount_mismatch"
    credentials = provider(order.channel).credentials
    if result.merchant_id and result.merchant_id != credentials.merchant_id:
        return "wrong_merchant"
    if result.app_id and credentials.app_id and result.app_id != credentials.app_id:
        return "wrong_merchant"
    return ""


def _charge(order: PaymentOrder, result: PaymentResult, *, source: str) -> Outcome:
    if (
        order.paid_fen
        or LedgerEntry.objects.filter(
            channel=order.channel, kind=EntryKind.CHARGE, reference=result.transaction_id
        ).exists()
    ):
        # Channels pay an order number once; this is the same payment again.
        return "duplicate"
    now = timezone.now()
    LedgerEntry.objects.create(
        order=order,
        kind=EntryKind.CHARGE,
        amount_fen=result.amount_fen,
        channel=order.channel,
        reference=result.transaction_id,
        at=result.paid_at or now,
        created_at=now,
    )
    order.paid_fen = result.amount_fen
    order.provider_transaction_id = result.transaction_id
    order.paid_at = result.paid_at or now
    _move(order, OS.PAID, also=("paid_fen", "provider_transaction_id", "paid_at"))
    application = (
        Application.objects.select_for_update(of=("self",))
        .select_related("service", "department", "applicant")
        .get(pk=order.application_id)
    )
    takes_it = application.status == ApplicationStatus.AWAITING_PAYMENT
    if takes_it:
        # As it now is: submitted, and when (the department hears of it).
        application = applications.application_mark_paid(application=application)
        _close_others(order)
    order.application = application
    _publish(order, events.PAYMENT_SUCCEEDED)
    message_post(
        user=order.payer,
        kind="payment.succeeded",
        title=_("支付成功"),
        body=_("您已为“%(service)s”（%(number)s）支付 %(amount)s 元，订单号 %(order_no)s。"),
        params={
            "service": order.service.name,
            "number": application.number,
            "amount": selectors.yuan(order.paid_fen),
            "order_no": order.order_no,
        },
        data={"order": str(order.id), "order_no": order.order_no, "status": order.status},
    )
    audit_record(
        actor=None,
        action="payment.paid",
        target=order,
        data={
            "order_no": order.order_no,
            "amount_fen": order.paid_fen,
            "transaction_id": result.transaction_id,
            "source": source,
        },
    )
    if not takes_it:
        # Withdrawn meanwhile, or paid through another order: nothing needs
        # this money any more.
        refund_request(
            order=order,
            amount_fen=order.paid_fen,
            reason=str(_("办件已撤回或已通过其他订单缴费，自动退款")),
            actor=None,
        )
    return "accepted"


def _close_others(paid: PaymentOrder) -> None:
    """The application is paid: another open order of it (a channel the
    citizen left) closes here at once and at its channel after commit, so it
    can no longer be paid; money that still reaches it is a late success,
    recorded and sent back."""
    others = selectors.open_orders(paid.application_id).select_for_update(of=("self",))
    for other in others.exclude(pk=paid.pk):
        _close_here_then_at_channel(other, reason="application_paid")


def _close_here(order: PaymentOrder, *, reason: str) -> None:
    """Close a locked pending order on our side (audited)."""
    order.closed_at = timezone.now()
    _move(order, OS.CLOSED, also=("closed_at",))
    audit_record(
        actor=None,
        action="payment.closed",
        target=order,
        data={"order_no": order.order_no, "reason": reason},
    )


def _close_here_then_at_channel(order: PaymentOrder, *, reason: str) -> None:
    """Close a locked pending order here, and at its channel once this
    transaction commits (no channel call while rows are locked)."""
    _close_here(order, reason=reason)
    _close_at_channel_after_commit(order)


def _close_at_channel_after_commit(order: PaymentOrder) -> None:
    """Close ``order`` at its channel once this transaction commits (no
    channel call while rows are locked). Closing a closed trade is fine; a
    channel that cannot be reached leaves it open there: the order stays
    owed a close (``channel_close_owed``, written in this transaction) and
    the sweep tries again (:func:`orders_close_owed`). A payment that still
    arrives meanwhile is a late success, recorded and sent back if not
    needed (see :func:`order_apply_result`)."""
    _owe_close_at_channel(order)
    transaction.on_commit(
        functools.partial(_close_at_channel, order.pk, bring_in=False), robust=True
    )


def _owe_close_at_channel(order: PaymentOrder) -> None:
    """Still open at its channel: ``order`` is owed the close there, which
    the sweep tries again (:func:`orders_close_owed`) while the channel
    could take a payment for it. Written in the caller's transaction."""
    PaymentOrder.objects.filter(pk=order.pk).update(channel_close_owed=True)
    order.channel_close_owed = True


# How long after an order's expiry its channel may still take a payment for
# it, by our clock: each channel is sent the expiry with the order and takes
# none after it; this allows for the two clocks' difference.
CHANNEL_CLOSE_GRACE = dt.timedelta(minutes=5)


def _close_at_channel(order_id: Any, *, bring_in: bool = True) -> bool:
    """One try at closing an order owed a close at its channel. Done (no
    longer owed) when the channel closes it, or when there is no point any
    more: the order was paid meanwhile, or its channel takes no payment for
    it any longer (expired). Refused for good (paid there meanwhile?): with
    ``bring_in`` (the sweep's tries, when the payment's callback had its
    time), the channel is asked and a payment is brought in. True if the
    channel was called and could not be reached
    (:attr:`ProviderError.unreachable`): still owed (see :func:`sweep_line`)."""
    order = PaymentOrder.objects.filter(pk=order_id, channel_close_owed=True).first()
    if order is None:
        return False
    owed = PaymentOrder.objects.filter(pk=order_id, channel_close_owed=True)
    if (
        order.status not in (OS.CLOSED, OS.FAILED)
        or order.expires_at + CHANNEL_CLOSE_GRACE <= timezone.now()
    ):
        owed.update(channel_close_owed=False)
        return False
    try:
        provider(order.channel).order_close(order_no=order.order_no)
    except ProviderError as exc:
        logger.warning("closing %s at %s failed: %s", order.order_no, order.channel, exc)
        if exc.retryable:
            # Still owed; only a channel that could not be reached holds
            # back its other closes (one that failed on this order does not).
            return exc.unreachable
        if bring_in:
            try:
                _bring_in(_CloseRefused(order))
            except PaymentsError as refused:
                logger.warning("closing %s: %s", order.order_no, refused)
            if PaymentOrder.objects.filter(pk=order_id, status__in=REFUNDABLE).exists():
                owed.update(channel_close_owed=False)
        return False
    except PaymentsError as exc:  # the channel is off here: tried again once it is on
        logger.warning("closing %s at %s failed: %s", order.order_no, order.channel, exc)
        return False
    owed.update(channel_close_owed=False)
    return False


# What became of one try in a sweep run (an order's, a refund's): done
# (whatever the channel answered, "later" for this row included, or nothing
# to ask it), its channel called and down (it could not be reached, or not
# in time: ProviderError.unreachable), or left for the next run by a
# failure here.
Tried = Literal["done", "down", "left"]

Swept = TypeVar("Swept", PaymentOrder, Refund)


def sweep_line(
    line: QuerySet[Swept],
    *,
    limit: int,
    step: str,
    attempt: Callable[[Swept], Tried],
    channel: str = "channel",
    down: set[str] | None = None,
    what: str = "orders",
    held: Callable[[], bool] | None = None,
) -> int:
    """Try the rows of ``line`` in its order, at most ``limit`` of them.
    Once one's channel is down, the rest of that channel's rows are left
    as they are (owed, pending) for the next run: each call to a channel
    that cannot be reached waits out the client's timeout, and the sweep's
    other steps, every channel's, wait on this one. Such a channel costs a
    step one failed try (a query, and the close of an expired order), not
    one per row. The line goes on with the other channels' rows, those
    after the skipped ones taking their places within ``limit``.

    ``channel`` is the lookup of a row's channel (``order__channel`` for a
    refund; the rows then come with their order). ``down``, shared by the
    lines of one step, holds the channels found down (those in it at the
    start are skipped from the first row).

    ``held``, the sweep run's lease (:meth:`config.leases.Lease.keep`), is
    asked before each row: a row's calls are bounded (a few of
    ``ANSWER_SECONDS`` each), a line of them is not, and the lease is
    renewed as the line goes. Once it says the lease was lost (it ran out
    and another run has it), the line stops where it is: the other run
    goes through the same rows. Returns the rows tried but those
    ``left``."""
    channel_of = operator.attrgetter(channel.replace("__", "."))
    tried: list[Any] = []
    down = set() if down is None else down
    skipped = set(down)
    done = 0
    while len(tried) < limit:
        rest = line.exclude(pk__in=tried) if tried else line
        if down:
            # Joined to the orders only then (see refunds_sweep).
            rest = rest.exclude(**{f"{channel}__in": sorted(down)})
        batch = list(rest[: limit - len(tried)])
        down_before = len(down)
        for row in batch:
            if channel_of(row) in down:
                continue
            if held is not None and not held():
                logger.warning(
                    "payments sweep (%s): its lease was lost to another run, stopped after %d %s",
                    step,
                    len(tried),
                    what,
                )
                return done
            tried.append(row.pk)
            outcome = attempt(row)
            if outcome == "down":
                down.add(channel_of(row))
            done += outcome != "left"
        if len(down) == down_before:
            # Every row of the batch tried: the limit is reached, or the
            # line is at its end.
            break
    skipped |= down
    for name in sorted(skipped):
        left = line.filter(**{channel: name}).exclude(pk__in=tried).count()
        if left:
            logger.warning(
                "payments sweep (%s): %s cannot be reached, %d more of its %s left"
                " for the next run",
                step,
                name,
                left,
                what,
            )
    return done


def orders_close_owed(*, limit: int = 200, held: Callable[[], bool] | None = None) -> int:
    """Close at their channel the orders closed here whose close there
    failed (:func:`_close_at_channel`), each on its own, the soonest to
    expire first; those past the point where their channel could take a
    payment are let go. A channel that cannot be reached is tried once a
    run (:func:`sweep_line`, which asks ``held`` before each order).
    Returns the orders tried."""

    def attempt(order: PaymentOrder) -> Tried:
        try:
            down = _close_at_channel(order.pk)
        except DatabaseError as exc:
            logger.warning("payments sweep: close of order %s left for later: %s", order.pk, exc)
            return "left"
        return "down" if down else "done"

    owed = PaymentOrder.objects.filter(channel_close_owed=True).order_by("expires_at", "pk")
    return sweep_line(
        owed.only("pk", "channel"), limit=limit, step="closes", attempt=attempt, held=held
    )


def order_as_of_now(order: PaymentOrder) -> PaymentOrder:
    """The order as its payer should see it now: a pending one past its
    expiry is checked with the channel and closed (or found paid) first.

    If the channel cannot tell where it stands (its answer cannot be had or
    read) and does not close it either, the order is shown as we know it,
    pending: the wallet may have taken the money. The sweep settles it, as
    it does every order it could not ask. Asked since it expired and less
    than ``PAYMENTS_QUERY_AFTER_SECONDS`` ago (a payer's app polling while
    the channel is down), it is shown as it stands without asking again."""
    now = timezone.now()
    if order.status == OS.PENDING and order.expires_at <= now:
        asked = order.last_queried_at
        quiet = now - dt.timedelta(seconds=settings.PAYMENTS_QUERY_AFTER_SECONDS)
        if asked is not None and asked >= order.expires_at and asked > quiet:
            return order
        try:
            return order_refresh(order, close_unknown=False)
        except PaymentsError as exc:
            # The channel refused to close it and could not be asked why
            # (_bring_in): as the sweep does, left for later.
            logger.info("%s shown as it stands: %s", order.order_no, exc)
            return PaymentOrder.objects.get(pk=order.pk)
    return order


def order_refresh(order: PaymentOrder, *, close_unknown: bool = True) -> PaymentOrder:
    """Ask the channel where a pending order stands (主动查单) and apply the
    answer; close it, at the channel and here, once it has expired.

    ``close_unknown``: whether an expired order whose channel could be
    neither asked nor made to close it is closed here all the same (the
    sweep: a payment that still arrives is a late success); if not, it
    stays pending."""
    return _refresh(order, close_unknown=close_unknown)[0]


def _refresh(order: PaymentOrder, *, close_unknown: bool) -> tuple[PaymentOrder, bool]:
    """:func:`order_refresh`, and whether the order's channel is down: its
    last call (the query, or the close that followed it) failed as a call
    to a channel that cannot be reached does (see :func:`sweep_line`)."""
    if order.status != OS.PENDING:
        return order, False
    now = timezone.now()
    # Asked now, whatever comes of it: one whose channel is off or refuses
    # goes to the back of the sweep's line (orders_due_for_query).
    PaymentOrder.objects.filter(pk=order.pk).update(last_queried_at=now)
    result = None
    down = False
    try:
        result = provider(order.channel).order_query(order_no=order.order_no)
    except ProviderError as exc:
        logger.info("query of %s failed: %s", order.order_no, exc)
        down = exc.unreachable
    except PaymentsError as exc:
        # Its channel was switched off here since: nothing to ask; once
        # expired it closes as if its channel were unreachable (_close).
        logger.info("query of %s: %s", order.order_no, exc)
    if result is not None and result.state != "pending":
        try:
            order_apply_result(order=order, result=result, source="query")
        except PaymentsError as exc:
            # Audited there; an operator looks into it. Not closed meanwhile:
            # the channel says something was paid.
            logger.warning("query of %s refused: %s", order.order_no, exc)
    elif order.expires_at <= now:
        try:
            with transaction.atomic():
                locked = _locked(order.pk)
                if locked.status == OS.PENDING:
                    down = _close(
                        locked,
                        reason="expired",
                        close_unreached=close_unknown or result is not None,
                    )
        except _CloseRefused as refused:  # paid between the query and the close?
            down = False  # it answered
            _bring_in(refused)
    return PaymentOrder.objects.get(pk=order.pk), down


class _CloseRefused(Exception):
    """The channel would not close an order (it was paid there just now, or
    it refuses for good). Raised out of the transaction that holds the
    order's and the application's locks: the caller asks the channel once
    they are released (:func:`_bring_in`)."""

    def __init__(self, order: PaymentOrder) -> None:
        super().__init__(order.order_no)
        self.order = order


def _close(order: PaymentOrder, *, reason: str, close_unreached: bool = True) -> bool:
    """Close a locked pending order, at the channel first. If the channel
    refuses for good, :class:`_CloseRefused`; if it cannot be reached, the
    order closes here anyway, unless ``close_unreached`` is false (then it
    stays as it is). True if the channel was called and could not be
    reached (:attr:`ProviderError.unreachable`, see :func:`sweep_line`)."""
    down = False
    try:
        provider_for(order.channel).order_close(order_no=order.order_no)
    except ProviderError as exc:
        if not exc.retryable:
            raise _CloseRefused(order) from exc
        # Unreachable, or "later": close here anyway. A payment that still
        # arrives is a late success, recorded and sent back (see
        # order_apply_result).
        logger.warning("closing %s at the channel failed: %s", order.order_no, exc)
        down = exc.unreachable
    except ChannelUnavailable:
        # Switched off here since the order was opened: as unreachable (its
        # callbacks wait at the channel until it is on again), so that the
        # citizen may pay through another channel meanwhile.
        logger.warning("closing %s: channel %s is off here", order.order_no, order.channel)
    else:
        _close_here(order, reason=reason)
        return False
    if close_unreached:
        _close_here(order, reason=reason)
        _owe_close_at_channel(order)
    return down


def _bring_in(refused: _CloseRefused) -> None:
    """After a refused close, with no lock held: ask the channel, and if the
    order was paid there, apply it; otherwise the channel's refusal stands
    (``payment_provider_error``, the order still open)."""
    order = refused.order
    try:
        result = provider_for(order.channel).order_query(order_no=order.order_no)
    except (ProviderError, ChannelUnavailable) as exc:
        logger.warning("query of %s after a refused close failed: %s", order.order_no, exc)
        result = None
    if result is None or result.state == "pending":
        raise PaymentsError(PAYMENT_PROVIDER_ERROR) from refused.__cause__
    try:  # paid, or ended at the channel: recorded here too
        order_apply_result(order=order, result=result, source="query")
    except PaymentsError as exc:  # audited there; an operator looks into it
        logger.warning("%s found at closing refused: %s", order.order_no, exc)


def orders_close_open(*, application_id: Any, reason: str) -> int:
    """Close the application's open orders (the citizen withdrew it:
    nothing is left to pay for), here at once and at their channel after
    commit (:func:`_close_here_then_at_channel`), as an order left for
    another channel is: no channel is called while the rows are locked. Money that still reaches one (the wallet took it that
    moment, or a channel that cannot close a trade) is a late success,
    recorded and sent back, since the application can no longer take it.
    Returns the orders closed."""
    closed = 0
    for pk in selectors.open_orders(application_id).values_list("pk", flat=True):
        with transaction.atomic():
            order = _locked(pk)
            if order.status != OS.PENDING:
                continue
            _close_here_then_at_channel(order, reason=reason)
            closed += 1
    return closed


def orders_sweep(*, limit: int = 200, held: Callable[[], bool] | None = None) -> int:
    """Query or close the orders :func:`orders_due_for_query` lists, each on
    its own: one whose channel refuses does not hold up the rest (it is
    tried again next time), and a channel that cannot be reached is tried
    once a run (:func:`sweep_line`, which asks ``held`` before each order).
    Returns the orders handled."""

    def attempt(order: PaymentOrder) -> Tried:
        try:
            _, down = _refresh(order, close_unknown=True)
        except (PaymentsError, ProviderError, DatabaseError) as exc:
            logger.warning("payments sweep: order %s left for later: %s", order.order_no, exc)
            return "left"
        return "down" if down else "done"

    return sweep_line(_due_for_query(), limit=limit, step="orders", attempt=attempt, held=held)


def orders_due_for_query(*, limit: int = 200) -> list[PaymentOrder]:
    """Pending orders that heard nothing for a while, or have expired."""
    return list(_due_for_query()[:limit])


def _due_for_query() -> QuerySet[PaymentOrder]:
    now = timezone.now()
    quiet = now - dt.timedelta(seconds=settings.PAYMENTS_QUERY_AFTER_SECONDS)
    pending = PaymentOrder.objects.filter(status=OS.PENDING, created_at__lte=quiet)
    due = pending.filter(last_queried_at__isnull=True) | pending.filter(last_queried_at__lte=quiet)
    expired = PaymentOrder.objects.filter(status=OS.PENDING, expires_at__lte=now)
    # Least recently asked first: one the channel keeps refusing goes to the
    # back of the line instead of holding up the rest.
    return (due | expired).order_by(F("last_queried_at").asc(nulls_first=True), "created_at", "pk")


# --- Refunds ------------------------------------------------------------------------------------


# Who asked for a refund the platform asks for itself (Refund.requested_by).
SYSTEM = "system"
WITHDRAWN_REFUND_REASON = _("办件已撤回，自动全额退款")


def refund_what_is_left(order: PaymentOrder) -> Refund | None:
    """The whole of what no refund of ``order`` takes or may still take,
    asked for by the platform (the application was withdrawn)."""
    left = order.paid_fen - selectors.refunds_reserved_fen(order)
    if left <= 0:
        return None
    return refund_request(
        order=order, amount_fen=left, reason=str(WITHDRAWN_REFUND_REASON), actor=None
    )


def refund_request(
    *,
    order: PaymentOrder,
    amount_fen: int,
    reason: str,
    actor: User | ApiKey | None,
    ip: str | None = None,
    seen_reserved_fen: int | None = None,
) -> Refund:
    """Ask for ``amount_fen`` of a paid order back. What is already being
    refunded counts: refunds never add up to more than was paid, also when
    several are asked for at once (the order's row lock orders them). The
    channel is asked after commit; its answer settles the refund later.

    ``seen_reserved_fen``: what was refunded or being refunded when the
    asker decided (the admin's form shows it); if another refund came
    since (the same form sent twice), this one is refused with
    ``refund_not_allowed`` rather than refunding twice."""
    with transaction.atomic():
        order = _locked(order.pk)
        if order.status not in REFUNDABLE:
            raise PaymentsError(REFUND_NOT_ALLOWED, extra={"order_status": order.status})
        reserved = selectors.refunds_reserved_fen(order)
        if seen_reserved_fen is not None and reserved != seen_reserved_fen:
            raise PaymentsError(
                REFUND_NOT_ALLOWED,
                _("该订单在您查看后已有其他退款，请核对可退金额后重新提交"),
                extra={"order_status": order.status},
            )
        refundable = order.paid_fen - reserved
        if amount_fen <= 0 or amount_fen > refundable:
            raise PaymentsError(
                REFUND_EXCEEDS_PAID,
                _("最多还可退 %(fen)s 分") % {"fen": refundable},
                extra={"refundable_fen": refundable},
            )
        refund = Refund.objects.create(
            refund_no=_new_number("R", timezone.now()),
            order=order,
            amount_fen=amount_fen,
            reason=reason[:200],
            # Who asked, as the audit trail names them; the system by name.
            requested_by=(audit.actor_label(actor) or SYSTEM)[:100],
            automatic=actor is None,
        )
        audit_record(
            actor=actor,
            action="payment.refund_requested",
            target=refund,
            data={
                "order_no": order.order_no,
                "refund_no": refund.refund_no,
                "amount_fen": amount_fen,
            },
            ip=ip,
        )
        refund_id = str(refund.id)
        transaction.on_commit(lambda: refunds_nudge([refund_id]), robust=True)
    return refund


def refunds_nudge(refund_ids: list[str]) -> bool:
    """Wake a worker to send these refunds to their channel now rather than
    at the next sweep (the rows are the truth; a lost nudge loses nothing)."""
    try:
        task = current_app.tasks[REFUND_SEND_TASK]
        for refund_id in refund_ids:
            task.apply_async((refund_id,), retry=False)
    except (BrokerError, OSError) as exc:
        logger.warning("broker unavailable, the payments sweep will send the refunds: %s", exc)
        return False
    return True


def refund_apply_result(*, refund: Refund, result: RefundResult) -> bool:
    """Apply the channel's word on a refund. Succeeded: the ledger's refund
    entry is written once, the order becomes partially or fully refunded,
    the department hears ``payment.refunded``, the citizen a message.
    Failed: the reservation is released. True if the refund changed."""
    with transaction.atomic():
        order = _locked(refund.order_id)
        refund = Refund.objects.select_for_update().get(pk=refund.pk)
        now = timezone.now()
        if refund.status != RefundStatus.PENDING:
            return False
        if result.state == "pending":
            refund.last_queried_at = now
            refund.provider_refund_id = result.refund_id or refund.provider_refund_id
            # Why the channel holds it (WeChat's ABNORMAL), for an operator.
            refund.failure_reason = result.failure_reason[:200]
            refund.save(update_fields=["last_queried_at", "provider_refund_id", "failure_reason"])
            return False
        if result.state == "failed":
            refund.status = RefundStatus.FAILED
            refund.failure_reason = result.failure_reason[:200]
            refund.save(update_fields=["status", "failure_reason"])
            audit_record(
                actor=None,
                action="payment.refund_failed",
                target=refund,
                data={"order_no": order.order_no, "refund_no": refund.refund_no},
            )
            if not refund.automatic and order.application.status == ApplicationStatus.CANCELLED:
                # Under way when the citizen withdrew, it kept its amount out
                # of the automatic refund: that amount goes back by itself
                # too. (One the platform asked for is not asked for again:
                # the order is listed as owed for an operator.)
                refund_what_is_left(order)
            return True
        if result.amount_fen and result.amount_fen != refund.amount_fen:
            # The channel's word names another amount than was asked for:
            # nothing is booked on it. The refund stays pending and reserved
            # (asked again); an operator looks (the statement shows what
            # moved).
            why = f"渠道称退款 {result.amount_fen} 分，申请为 {refund.amount_fen} 分"
            if refund.failure_reason != why:
                logger.error("refund %s: %s", refund.refund_no, why)
                audit_record(
                    actor=None,
                    action="payment.refund_mismatch",
                    target=refund,
                    data={
                        "order_no": order.order_no,
                        "refund_no": refund.refund_no,
                        "asked_fen": refund.amount_fen,
                        "channel_fen": result.amount_fen,
                    },
                )
            refund.failure_reason = why
            refund.last_queried_at = now
            refund.save(update_fields=["failure_reason", "last_queried_at"])
            return False
        # Dated when the channel says the money went back, as its statement
        # lists it, not when we heard (a refund settled before midnight and
        # queried after it belongs to the day before).
        settled_at = result.succeeded_at or now
        LedgerEntry.objects.create(
            order=order,
            kind=EntryKind.REFUND,
            amount_fen=refund.amount_fen,
            channel=order.channel,
            reference=refund.refund_no,
            at=settled_at,
            created_at=now,
        )
        order.refunded_fen += refund.amount_fen
        _move(
            order,
            OS.REFUNDED if order.refunded_fen == order.paid_fen else OS.PARTIALLY_REFUNDED,
            also=("refunded_fen",),
        )
        refund.status = RefundStatus.SUCCEEDED
        refund.provider_refund_id = result.refund_id or refund.provider_refund_id
        refund.succeeded_at = settled_at
        refund.failure_reason = ""  # what held it (ABNORMAL) is over
        refund.save(
            update_fields=["status", "provider_refund_id", "succeeded_at", "failure_reason"]
        )
        _publish(order, events.PAYMENT_REFUNDED, refund=refund)
        message_post(
            user=order.payer,
            kind="payment.refunded",
            title=_("退款成功"),
            body=_("订单 %(order_no)s 已退款 %(amount)s 元，将原路退回。%(reason)s"),
            params={
                "order_no": order.order_no,
                "amount": selectors.yuan(refund.amount_fen),
                "reason": refund.reason,
            },
            data={"order": str(order.id), "order_no": order.order_no, "refund": str(refund.id)},
        )
        audit_record(
            actor=None,
            action="payment.refunded",
            target=refund,
            data={
                "order_no": order.order_no,
                "refund_no": refund.refund_no,
                "amount_fen": refund.amount_fen,
            },
        )
    return True

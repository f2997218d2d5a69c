"""Event types, their payloads, and in-process subscribers.

Departments receive events over HTTP (see :mod:`services.routing.deliveries`).
Other apps of the monolith react to the same events through subscribers they
register explicitly in their ``AppConfig.ready`` (the payments app refunds a
cancelled paid application this way), so the flow stays visible in code;
:func:`services.routing.outbox.event_handle` runs them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

PING = "ping"
APPLICATION_SUBMITTED = "application.submitted"
APPLICATION_CANCELLED = "application.cancelled"
APPLICATION_SUPPLEMENTED = "application.supplemented"
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_REFUNDED = "payment.refunded"

# What a department endpoint may subscribe to (ping always reaches it).
SUBSCRIBABLE = (
    APPLICATION_SUBMITTED,
    APPLICATION_CANCELLED,
    APPLICATION_SUPPLEMENTED,
    PAYMENT_SUCCEEDED,
    PAYMENT_REFUNDED,
)


def pseudonymised(data: dict[str, Any], *, subject: str) -> dict[str, Any]:
    """An event's payload once its applicant has closed their account: the
    applicant is the pseudonymous ``subject`` alone (no name, ID number or
    phone) and what the citizen wrote (form, supplement, cancel reason) is
    gone. Everything else, the application's number and status included,
    stays as it was sent."""
    data = dict(data)
    application = data.get("application")
    if isinstance(application, dict):
        data["application"] = {**application, "form": {}, "applicant": {"sub": subject}}
    if "supplement" in data:
        data["supplement"] = {}
    if "reason" in data:
        data["reason"] = ""
    return data


Subscriber = Callable[[Any], None]  # receives the OutboxEvent
_subscribers: dict[str, list[Subscriber]] = defaultdict(list)


def subscribe(event_type: str, subscriber: Subscriber) -> None:
    """Call ``subscriber(event)`` for every event of ``event_type``, after the
    transaction that wrote it commits (at least once: it must be idempotent)."""
    if subscriber not in _subscribers[event_type]:
        _subscribers[event_type].append(subscriber)


def subscribers(event_type: str) -> list[Subscriber]:
    return list(_subscribers.get(event_type, ()))

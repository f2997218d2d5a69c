"""Event types, their payloads, and in-process subscribers.

Departments receive events over HTTP (see :mod:`services.routing`). Other
apps of the monolith react to the same events through subscribers they
register explicitly in their ``AppConfig.ready`` (the payments app refunds a
cancelled paid application this way), so the flow stays visible in code.
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

Subscriber = Callable[[Any], None]  # receives the OutboxEvent
_subscribers: dict[str, list[Subscriber]] = defaultdict(list)


def subscribe(event_type: str, subscriber: Subscriber) -> None:
    """Call ``subscriber(event)`` for every event of ``event_type``, after the
    transaction that wrote it commits (at least once: it must be idempotent)."""
    if subscriber not in _subscribers[event_type]:
        _subscribers[event_type].append(subscriber)


def subscribers(event_type: str) -> list[Subscriber]:
    return list(_subscribers.get(event_type, ()))

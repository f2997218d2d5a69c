"""Department endpoints: registering, changing and removing them, their
secrets (rotation with an overlap), pings, the circuit breaker that pauses
an endpoint that keeps failing, disables one that answers 410 Gone, and
resumes it, sending what waited; and an operator's hold, which only an
operator lifts.

Three switches stop deliveries, each lifted by whoever set it: the
department's ``is_active`` (and a 410, which the department answers by
switching it on again), the breaker's ``paused_at`` (lifted by a success,
a ping answered, the department switching the endpoint on, or an
operator), and the operator's ``held_at``."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.audit import audit_record
from accounts.inbox import message_post
from accounts.models import ApiKey, Department, User
from config.errors import NOT_FOUND, SERVICE_UNAVAILABLE
from config.masking import mask_url_query
from services.errors import (
    ENDPOINT_HELD,
    ENDPOINT_LIMIT_REACHED,
    ENDPOINT_URL_INVALID,
    ENDPOINT_URL_NOT_ALLOWED,
    ServicesError,
)
from services.models import Delivery, DeliveryStatus, Endpoint
from services.routing import events, outbox, transport

Actor = User | ApiKey | None


def _locked_live(endpoint: Endpoint) -> Endpoint:
    """The endpoint's row, locked, unless it was removed meanwhile (read
    before a removal committed, a change written after it would bring the
    endpoint back): then 404, as for an endpoint never seen."""
    locked = Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    if locked is None or locked.deleted_at is not None:
        raise ServicesError(NOT_FOUND)
    return locked


# How long a department is asked to wait when its URL's host could not be
# looked up now: the lookups that fill the bound end when the system
# resolver gives up on them, in tens of seconds.
LOOKUPS_BUSY_RETRY_AFTER_SECONDS = 30


def _checked_url(url: str, *, department_id: Any) -> str:
    """The URL as stored (host in ASCII), if it may receive events. Its
    host's lookup counts against the department's share of the lookups
    under way: one that cannot be looked up now is 503
    ``service_unavailable``, never a refusal of the URL."""
    try:
        transport.url_resolve(url, caller=str(department_id))
        normalized = transport.url_normalize(url)
    except transport.LookupsBusy as exc:
        raise ServicesError(
            SERVICE_UNAVAILABLE,
            str(exc),
            headers={"Retry-After": str(LOOKUPS_BUSY_RETRY_AFTER_SECONDS)},
        ) from exc
    except transport.UrlNotAllowed as exc:
        error = ENDPOINT_URL_INVALID if exc.shape else ENDPOINT_URL_NOT_ALLOWED
        raise ServicesError(error, str(exc), errors={"url": [str(exc)]}) from exc
    # The host in ASCII (punycode, ligatures unfolded) may be longer than
    # the one sent, which the serializer measured.
    limit = Endpoint._meta.get_field("url").max_length
    if limit is not None and len(normalized) > limit:
        message = str(
            _("地址的主机名转为 ASCII 后，整个地址超过 %(limit)s 个字符") % {"limit": limit}
        )
        raise ServicesError(ENDPOINT_URL_INVALID, message, errors={"url": [message]})
    return normalized


def endpoint_create(
    *,
    department: Department,
    url: str,
    events: list[str],
    description: str = "",
    is_active: bool = True,
    actor: Actor,
    ip: str | None = None,
) -> tuple[Endpoint, str]:
    """Register a department system's URL; returns it with its new secret
    (``whsec_...``), which is shown this once. A department has at most
    ``ROUTING_MAX_ENDPOINTS`` (not deleted) at once: each takes a delivery of
    every event it subscribes to, from the workers all departments share."""
    secret = transport.secret_generate()
    checked = _checked_url(url, department_id=department.pk)
    with transaction.atomic():
        # The department's row orders its registrations, so that two at once
        # cannot both pass the count.
        Department.objects.select_for_update(no_key=True).filter(pk=department.pk).exists()
        live = Endpoint.objects.filter(department=department, deleted_at__isnull=True)
        if live.count() >= settings.ROUTING_MAX_ENDPOINTS:
            raise ServicesError(ENDPOINT_LIMIT_REACHED)
        held = _hold_on(department.pk, checked)
        endpoint = Endpoint.objects.create(
            department=department,
            url=checked,
            events=list(dict.fromkeys(events)),
            description=description,
            is_active=is_active,
            secret=secret,
            held_at=held.held_at if held else None,
            hold_reason=held.hold_reason if held else "",
        )
        if held is not None:
            audit_record(
                actor=None,
                action="endpoint.held",
                target=endpoint,
                data={"reason": held.hold_reason, "as": str(held.pk)},
            )
        audit_record(
            actor=actor,
            action="endpoint.created",
            target=endpoint,
            data={"url": mask_url_query(checked), "events": events},
            ip=ip,
        )
    return endpoint, secret


def endpoint_update(
    *, endpoint: Endpoint, actor: Actor, ip: str | None = None, **values: Any
) -> Endpoint:
    """Change URL, events, description or the active switch. Switching an
    endpoint (back) on also lifts a circuit-breaker pause (not an
    operator's hold)."""
    changes: dict[str, Any] = {}
    if "url" in values and values["url"] != endpoint.url:
        changes["url"] = _checked_url(values["url"], department_id=endpoint.department_id)
    if "events" in values:
        changes["events"] = list(dict.fromkeys(values["events"]))
    if "description" in values:
        changes["description"] = values["description"]
    with transaction.atomic():
        # Locked and saved field by field: a concurrent secret rotation,
        # pause or 410 must not be written back over by this change.
        endpoint = _locked_live(endpoint)
        if "url" in changes and endpoint.held_at is not None:
            # Moved away, the held address would be free to register again.
            raise ServicesError(ENDPOINT_HELD)
        if "url" in changes:
            held = _hold_on(endpoint.department_id, changes["url"])
            if held is not None:
                changes["held_at"], changes["hold_reason"] = held.held_at, held.hold_reason
        resume = False
        if "is_active" in values:
            changes["is_active"] = values["is_active"]
            if values["is_active"]:
                changes["disabled_reason"] = ""
                resume = endpoint.paused_at is not None or not endpoint.is_active
        for name, value in changes.items():
            setattr(endpoint, name, value)
        endpoint.save(update_fields=list(changes))
        audit_record(
            actor=actor,
            action="endpoint.updated",
            target=endpoint,
            data={
                k: mask_url_query(v) if k == "url" else v
                for k, v in changes.items()
                if k not in ("disabled_reason", "held_at", "hold_reason")
            },
            ip=ip,
        )
        if resume:
            _resume(endpoint)
    return endpoint


def endpoint_delete(*, endpoint: Endpoint, actor: Actor, ip: str | None = None) -> None:
    """Stop delivering to the endpoint; its history stays for the record.
    What was still to go, and its dead letters (no replay can reach a
    deleted endpoint), are cancelled with it; their attempts stay."""
    with transaction.atomic():
        endpoint = _locked_live(endpoint)
        endpoint.deleted_at = timezone.now()
        endpoint.is_active = False
        endpoint.save(update_fields=["deleted_at", "is_active"])
        endpoint.deliveries.filter(
            status__in=[DeliveryStatus.PENDING, DeliveryStatus.FAILED]
        ).update(status=DeliveryStatus.CANCELLED, next_attempt_at=None)
        audit_record(actor=actor, action="endpoint.deleted", target=endpoint, ip=ip)


# Secrets before the last rotation that still sign, newest first, kept
# space-separated in ``previous_secret`` (a secret has no space in it).
PREVIOUS_SECRETS_KEPT = 3


def _previous_secrets(endpoint: Endpoint, now: dt.datetime) -> list[str]:
    if not (
        endpoint.previous_secret
        and endpoint.previous_secret_expires_at
        and now < endpoint.previous_secret_expires_at
    ):
        return []
    return endpoint.previous_secret.split()


def endpoint_rotate_secret(*, endpoint: Endpoint, actor: Actor, ip: str | None = None) -> str:
    """A new secret; the old one keeps signing alongside it for
    ``ROUTING_SECRET_OVERLAP_HOURS`` so the department can switch over.

    A rotation during another's overlap keeps the older secrets signing
    too (a few, until the new overlap ends): the department may not have
    seen the secret it replaces (the answer lost, the request sent again)
    and still verify with the one before."""
    secret = transport.secret_generate()
    with transaction.atomic():
        endpoint = _locked_live(endpoint)
        now = timezone.now()
        kept = [endpoint.secret, *_previous_secrets(endpoint, now)]
        endpoint.previous_secret = " ".join(kept[:PREVIOUS_SECRETS_KEPT])
        endpoint.previous_secret_expires_at = now + dt.timedelta(
            hours=settings.ROUTING_SECRET_OVERLAP_HOURS
        )
        endpoint.secret = secret
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
        audit_record(actor=actor, action="endpoint.secret_rotated", target=endpoint, ip=ip)
    return secret


def signing_keys_of(endpoint: Endpoint, now: dt.datetime) -> list[str]:
    """The secrets a delivery is signed with at ``now``: the current one,
    and those before it while the last rotation's overlap lasts."""
    return [endpoint.secret, *_previous_secrets(endpoint, now)]


def endpoint_ping(*, endpoint: Endpoint, actor: Actor, ip: str | None = None) -> Delivery:
    """Send a ``ping`` to this endpoint only. A paused endpoint that answers
    the ping is resumed. One removed meanwhile is ``not_found``."""
    department_code = endpoint.department.code
    with transaction.atomic():
        live = _locked_live(endpoint)
        event = outbox.event_publish(
            type=events.PING,
            data={"endpoint": str(live.id), "department": department_code},
            endpoints=[live],
        )
        audit_record(actor=actor, action="endpoint.pinged", target=endpoint, ip=ip)
    return event.deliveries.get()


# --- An operator's hold ------------------------------------------------------------------------
# A hold is on the department's address (scheme, host and port): an endpoint
# registered again, or moved, to an address the department has held, deleted
# or not, is held as well, and a held endpoint's URL cannot change; so
# removing and re-registering an endpoint, under any path or query, does not
# lift an operator's hold.


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    # ``dept.example.org.`` is the same name as ``dept.example.org``.
    host = (parts.hostname or "").lower().rstrip(".")
    return scheme, host, parts.port or (443 if scheme == "https" else 80)


def _hold_on(department_id: Any, url: str) -> Endpoint | None:
    """The department's latest held endpoint at ``url``'s address, if any."""
    origin = _origin(url)
    held = Endpoint.objects.filter(department_id=department_id, held_at__isnull=False)
    # An inherited hold has its origin's time: the first registered of
    # those is the one the operator held.
    ordered = held.order_by("-held_at", "created_at", "pk")
    return next((e for e in ordered if _origin(e.url) == origin), None)


def endpoint_hold(
    *, endpoint: Endpoint, actor: User, reason: str, ip: str | None = None
) -> Endpoint:
    """An operator stops deliveries to the endpoint (pings still go): its
    events wait, their retries kept, until an operator resumes it. The
    department's staff are told; its own switch does not lift the hold."""
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        if endpoint.held_at is not None or endpoint.deleted_at is not None:
            return endpoint
        endpoint.held_at = timezone.now()
        endpoint.hold_reason = reason[:200]
        endpoint.save(update_fields=["held_at", "hold_reason"])
        _tell_department(
            endpoint,
            action="endpoint.held",
            title=_("回调地址已被平台暂停投递"),
            body=_(
                "平台运营人员暂停了向回调地址 %(url)s 的投递；事件不会丢失，恢复后补发。如有疑问请联系平台运营。"
            ),
            reason=endpoint.hold_reason,
            actor=actor,
            ip=ip,
        )
    return endpoint


def endpoint_resume(*, endpoint: Endpoint, actor: User, ip: str | None = None) -> Endpoint:
    """An operator lifts their hold and the breaker's pause; what waited
    goes now, unless the department has the endpoint switched off (that
    switch is the department's)."""
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        if endpoint.deleted_at is not None:
            return endpoint
        lifted = {"hold": endpoint.held_at is not None, "pause": endpoint.paused_at is not None}
        if not any(lifted.values()):
            return endpoint
        if lifted["hold"]:
            endpoint.held_at, endpoint.hold_reason = None, ""
            endpoint.save(update_fields=["held_at", "hold_reason"])
            # Removed endpoints at the same address would pass the hold on again.
            origin = _origin(endpoint.url)
            removed = Endpoint.objects.filter(
                department_id=endpoint.department_id,
                deleted_at__isnull=False,
                held_at__isnull=False,
            )
            Endpoint.objects.filter(
                pk__in=[e.pk for e in removed if _origin(e.url) == origin]
            ).update(held_at=None, hold_reason="")
        audit_record(
            actor=actor,
            action="endpoint.resumed",
            target=endpoint,
            data={"by": "operator", **{k: v for k, v in lifted.items() if v}},
            ip=ip,
        )
        _resume(endpoint)
    return endpoint


# --- Circuit breaker -------------------------------------------------------------------------


def endpoint_mark_succeeded(endpoint: Endpoint, now: dt.datetime) -> None:
    """A delivery to the endpoint succeeded (in the transaction recording
    it): the failure count starts again, and a paused endpoint resumes."""
    # Every delivery to a busy endpoint would otherwise queue on this one
    # row; the success time is kept to the second, the failure count exactly.
    stale = endpoint.last_success_at is None or now - endpoint.last_success_at > dt.timedelta(
        seconds=1
    )
    if endpoint.consecutive_failures or stale:
        Endpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=0, last_success_at=now)
        endpoint.consecutive_failures, endpoint.last_success_at = 0, now
    if endpoint.paused_at is not None and endpoint.is_active:
        endpoint.refresh_from_db()
        _resume(endpoint)
        audit_record(actor=None, action="endpoint.resumed", target=endpoint, data={"by": "ping"})


def endpoint_mark_failed(
    endpoint: Endpoint, now: dt.datetime, result: transport.SendResult
) -> None:
    """A delivery to the endpoint failed (in the transaction recording it):
    410 Gone disables it; ``ROUTING_BREAKER_THRESHOLD`` failures in a row
    pause it. Either way the department's staff are told."""
    if result.status_code == 410 and endpoint.is_active:
        _endpoint_gone(endpoint)
    Endpoint.objects.filter(pk=endpoint.pk).update(
        consecutive_failures=F("consecutive_failures") + 1, last_failure_at=now
    )
    endpoint.refresh_from_db(fields=["consecutive_failures", "paused_at", "is_active"])
    if (
        endpoint.is_active
        and endpoint.paused_at is None
        and endpoint.consecutive_failures >= settings.ROUTING_BREAKER_THRESHOLD
    ):
        reason = f"{endpoint.consecutive_failures} consecutive failures, last: {result.status_code or result.error}"
        Endpoint.objects.filter(pk=endpoint.pk).update(paused_at=now, pause_reason=reason[:200])
        endpoint.paused_at = now  # the batch's tries still to go are held, not sent
        _tell_department(
            endpoint,
            action="endpoint.paused",
            title=_("回调地址已暂停投递"),
            body=_(
                "回调地址 %(url)s 连续失败，已暂停投递；事件不会丢失，恢复后补发。请排查后在接口中发送测试事件或重新启用。"
            ),
            reason=reason,
        )


def _endpoint_gone(endpoint: Endpoint) -> None:
    Endpoint.objects.filter(pk=endpoint.pk).update(is_active=False, disabled_reason="410 Gone")
    _tell_department(
        endpoint,
        action="endpoint.disabled",
        title=_("回调地址已停用"),
        body=_("回调地址 %(url)s 返回 410 Gone，已停用。事件会保留，重新启用后补发。"),
        reason="410 Gone",
    )


def _tell_department(
    endpoint: Endpoint,
    *,
    action: str,
    title: Any,
    body: Any,
    reason: str,
    actor: User | None = None,
    ip: str | None = None,
) -> None:
    audit_record(actor=actor, action=action, target=endpoint, data={"reason": reason}, ip=ip)
    for staff in User.objects.filter(department_id=endpoint.department_id, is_active=True):
        message_post(
            user=staff,
            kind=action,
            title=title,
            body=body,
            params={"url": endpoint.url_shown},
            data={"endpoint": str(endpoint.id)},
        )


def _resume(endpoint: Endpoint) -> None:
    """Lift a pause and send everything that waited, now, if the endpoint
    takes events (``endpoint`` as its locked or just read row has it)."""
    now = timezone.now()
    Endpoint.objects.filter(pk=endpoint.pk).update(
        paused_at=None, pause_reason="", consecutive_failures=0
    )
    endpoint.paused_at, endpoint.pause_reason, endpoint.consecutive_failures = None, "", 0
    if not outbox.endpoint_open(endpoint):
        return
    waiting = Delivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.PENDING)
    waiting.update(next_attempt_at=now)
    # Only the first waiting event of each application goes now; each one
    # delivered or dead-lettered releases the next (see deliveries._release_next).
    # Every earlier event still pending to this endpoint is itself waiting:
    # read once along delivery_endpoint_status (asked per delivery, PostgreSQL
    # hashed every delivery the endpoint ever had to answer it).
    rows = list(waiting.order_by("created_at").values_list("id", "ordering_key", "sequence"))
    lowest: dict[Any, int] = {}
    for _pk, key, sequence in rows:
        if key is not None and sequence is not None:
            lowest[key] = min(sequence, lowest.get(key, sequence))
    ids = [
        str(pk)
        for pk, key, sequence in rows
        if key is None or sequence is None or sequence <= lowest[key]
    ]
    transaction.on_commit(lambda: outbox.deliveries_nudge(ids), robust=True)

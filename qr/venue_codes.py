"""Venue codes: created for a department's own service, deactivated for
good, resolved by the app (each resolution is a scan)."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from accounts.audit import audit_record
from accounts.models import ApiKey, Department, User
from config.errors import NOT_FOUND
from qr import codes, keys, scans, selectors
from qr.codes import Kind, Reason
from qr.errors import CODE_INVALID, CODE_REVOKED, QrError
from qr.models import ScanEvent, VenueCode
from qr.recorders import ScanStateUnavailable, get_recorder
from services.models import Service


def venue_code_create(
    *,
    department: Department,
    service: Service,
    label: str,
    location: str = "",
    actor: ApiKey | User | None = None,
    ip: str | None = None,
) -> VenueCode:
    """A venue code for one of the department's own services: signed, then
    stored in one transaction with its audit entry, which names the caller's
    address. (Signing stays outside that transaction: a first signing key
    made for it commits on its own, before the key ring takes it up, rather
    than with a code that may yet be rolled back.)"""
    if service.department_id != department.pk:
        raise QrError(NOT_FOUND)
    venue = VenueCode(department=department, service=service, label=label, location=location)
    venue.jti = str(venue.id)
    kid, private = keys.keyring_ensure()
    venue.kid = kid
    venue.code = codes.sign(
        {
            "iss": settings.QR_ISSUER,
            "sub": service.code,
            "iat": int(time.time()),
            "jti": venue.jti,
            "lvl": int(service.identity_level),
            "knd": Kind.VENUE.value,
        },
        kid=kid,
        private_key=private,
    )
    with transaction.atomic():
        venue.save()
        audit_record(
            actor=actor,
            action="qr.venue_code.created",
            target=venue,
            data={"service": service.code, "label": label, "kid": kid},
            ip=ip,
        )
    return venue


def venue_code_deactivate(
    *, venue: VenueCode, actor: ApiKey | User | None = None, ip: str | None = None
) -> VenueCode:
    """Deactivate for good (idempotent): the code then resolves as revoked
    and appears in the revocation list."""
    with transaction.atomic():
        # The database's clock: the revocation list pages by these stamps.
        updated = VenueCode.objects.filter(pk=venue.pk, deactivated_at__isnull=True).update(
            deactivated_at=Now()
        )
        venue.refresh_from_db(fields=["deactivated_at"])
        if updated:
            audit_record(
                actor=actor,
                action="qr.venue_code.deactivated",
                target=venue,
                data={"service": venue.service_id, "label": venue.label},
                ip=ip,
            )
    return venue


def venue_code_resolve(*, text: str) -> VenueCode:
    """What a scanned venue code opens (the app asks; anyone may). Each
    resolution is a scan of that code."""
    now = time.time()
    claims, reason = scans.code_check(text, now)
    if reason is Reason.UNKNOWN_KEY and selectors.venue_code_is_revoked_with_its_key_gone(text):
        raise QrError(CODE_REVOKED)
    if reason is not None or claims is None or claims.knd is not Kind.VENUE:
        raise QrError(CODE_INVALID)
    venue = selectors.venue_code_by_jti(claims.jti)
    if venue is None:
        raise QrError(CODE_INVALID)
    revoked = not venue.is_active
    record = scans.scan_record_for(claims, Reason.REVOKED if revoked else None, now=now)
    record.source = ScanEvent.Source.APP
    record.department = venue.department_id
    record.place = venue.location or venue.label
    try:
        get_recorder().record(record, store=scans.scan_events_store)
    except ScanStateUnavailable:
        scans.scan_events_store([record])
    if revoked:
        raise QrError(CODE_REVOKED)
    return venue

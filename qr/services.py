"""Every state change of the star-code app: keys, codes, verifications, scans."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from accounts.audit import audit_record
from accounts.errors import ACCOUNT_SUSPENDED
from accounts.models import ApiKey, Department, User
from config import masking
from config.api import NOT_FOUND, THROTTLED
from config.ids import uuid7
from qr import caches, codes, selectors
from qr.codes import CLOCK_SKEW_SECONDS, Claims, CodeRejected, Kind, Reason
from qr.errors import CODE_INVALID, CODE_REVOKED, SCAN_STATE_UNAVAILABLE, QrError
from qr.models import Disclosure, ScanClaim, ScanEvent, SigningKey, VenueCode
from qr.recorders import (
    Admission,
    Claim,
    RateLimit,
    ScanRecord,
    ScanStateUnavailable,
    get_recorder,
    parse_rate,
)
from services.models import Service

logger = logging.getLogger(__name__)

# --- Signing keys -----------------------------------------------------------------


def _new_kid(now: dt.datetime) -> str:
    return f"{timezone.localtime(now):%Y%m%d}-{secrets.token_hex(3)}"


def signing_key_create(
    *, activates_at: dt.datetime | None = None, actor: User | None = None
) -> SigningKey:
    """A new key, published at once, signing from ``activates_at`` (default now)."""
    now = timezone.now()
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    with transaction.atomic():
        key = SigningKey.objects.create(
            kid=_new_kid(now),
            public_key=codes.b64url(raw_public),
            private_key=codes.b64url(raw_private),
            created_at=now,
            activates_at=activates_at or now,
        )
        audit_record(
            actor=actor,
            action="qr.signing_key.created",
            target=key,
            data={"kid": key.kid, "activates_at": key.activates_at.isoformat()},
        )
    caches.keyring.clear()
    return key


def signing_key_ensure() -> SigningKey:
    """The active key; the very first one is created on demand, so a fresh
    installation issues codes out of the box."""
    now = timezone.now()
    with transaction.atomic():
        active = selectors.signing_key_active(now=now)
        if active is not None:
            return active
        # Serialise first-key creation between processes.
        list(SigningKey.objects.select_for_update().all()[:1])
        active = selectors.signing_key_active(now=now)
        if active is not None:
            return active
        return signing_key_create(activates_at=now)


def signing_key_rotate(
    *, immediately: bool = False, withdraw_previous: bool = False, actor: User | None = None
) -> SigningKey:
    """Publish a new key that takes over signing.

    Normally the new key signs only after ``QR_KEY_PUBLISH_AHEAD_SECONDS``,
    so every scanner that refreshes its JWKS in that time knows it before
    the first code it signs is shown. ``immediately`` skips the wait (a
    suspected compromise); ``withdraw_previous`` also pulls every older key
    from the JWKS at once, which makes the codes they signed unverifiable:
    citizens simply get a new code; venue codes must be replaced.
    """
    now = timezone.now()
    activates_at = (
        now if immediately else now + dt.timedelta(seconds=settings.QR_KEY_PUBLISH_AHEAD_SECONDS)
    )
    key = signing_key_create(activates_at=activates_at, actor=actor)
    if withdraw_previous:
        for old in SigningKey.objects.filter(withdrawn_at__isnull=True).exclude(pk=key.pk):
            _withdraw(old, actor=actor, reason="compromise")
    return key


def _withdraw(key: SigningKey, *, actor: User | None, reason: str) -> None:
    with transaction.atomic():
        updated = SigningKey.objects.filter(pk=key.pk, withdrawn_at__isnull=True).update(
            withdrawn_at=timezone.now(), private_key=""
        )
        if updated:
            audit_record(
                actor=actor,
                action="qr.signing_key.withdrawn",
                target=key,
                data={"kid": key.kid, "reason": reason},
            )
    caches.keyring.clear()


def signing_keys_prune(*, now: dt.datetime | None = None) -> list[str]:
    """Withdraw superseded keys that no valid code can need any more.

    A superseded key stays published until every citizen code it signed has
    expired (its successor's start + the time a process may still sign with
    a cached key + ``STAR_CODE_TTL`` + clock skew) and while any active
    venue code was signed with it (venue codes do not expire: replace them
    with fresh codes and deactivate the old ones to let the key go).
    Returns the withdrawn kids.
    """
    now = now or timezone.now()
    keys = list(SigningKey.objects.filter(withdrawn_at__isnull=True).order_by("activates_at"))
    started = [k for k in keys if k.activates_at <= now]
    grace = dt.timedelta(
        seconds=settings.QR_KEY_CACHE_SECONDS + settings.STAR_CODE_TTL + CLOCK_SKEW_SECONDS
    )
    in_use = selectors.kids_of_active_venue_codes()
    withdrawn = []
    for key, successor in zip(started, started[1:], strict=False):
        if now < successor.activates_at + grace or key.kid in in_use:
            continue
        _withdraw(key, actor=None, reason="superseded")
        withdrawn.append(key.kid)
    return withdrawn


# --- Citizen codes -------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: dt.datetime
    refresh_after: dt.datetime


def star_code_issue(*, user: User) -> IssuedCode:
    """A fresh personal star-code: valid ``STAR_CODE_TTL`` seconds, to be
    replaced from ``refresh_after`` on (before it runs out, with room for
    the round trip and a scanner's clock)."""
    if not user.is_active or user.closed_at is not None:
        raise QrError(ACCOUNT_SUSPENDED)
    ttl = settings.STAR_CODE_TTL
    iat = int(time.time())
    kid, private = caches.keyring.signing_key()
    text = codes.sign(
        {
            "iss": settings.QR_ISSUER,
            "sub": user.subject,
            "iat": iat,
            "exp": iat + ttl,
            "jti": secrets.token_urlsafe(12),
            "lvl": int(user.identity_level),
            "knd": Kind.CITIZEN.value,
        },
        kid=kid,
        private_key=private,
    )
    margin = max(1, min(15, ttl // 4))
    return IssuedCode(
        code=text,
        expires_at=dt.datetime.fromtimestamp(iat + ttl, tz=dt.UTC),
        refresh_after=dt.datetime.fromtimestamp(iat + ttl - margin, tz=dt.UTC),
    )


# --- Verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reason: Reason | None
    claims: Claims | None
    name_masked: str | None = None
    discloses_name: bool = False


def _revoked_with_its_key_gone(text: str) -> bool:
    """A deactivated venue code outlives the key that signed it (keys are
    withdrawn once no active code needs them); it still answers "revoked"."""
    jti = codes.unverified_jti(text)
    if jti is None:
        return False
    venue = selectors.venue_code_by_jti(jti)
    return venue is not None and not venue.is_active


def _claims_or_rejection(text: str, now: float) -> tuple[Claims | None, Reason | None]:
    try:
        return codes.verify(text, keys=caches.keyring, now=now, issuer=settings.QR_ISSUER), None
    except CodeRejected as exc:
        return exc.claims, exc.reason


def scan_verify(*, scanner: ApiKey, text: str) -> Verdict:
    """Verify a code shown to a scanner, online, and record the scan.

    Order: format, key, signature, validity period (``codes.verify``); then
    revocation (venue codes) or account state (citizen codes); then replay:
    the first valid verification of a code by a scanner key claims its
    ``jti`` for the code's remaining life, later ones are ``replayed``.
    The scan event goes to the recorder in the same call, never waiting on
    the database. Over the key's rate limit: 429, nothing recorded.
    """
    now = time.time()
    profile = caches.scanner_profiles.get(scanner.pk, fallback_place=scanner.name)
    discloses_name = profile.disclosure == Disclosure.MASKED_NAME
    claims, reason = _claims_or_rejection(text, now)
    if reason is Reason.UNKNOWN_KEY and _revoked_with_its_key_gone(text):
        reason = Reason.REVOKED
    name_masked = None
    if reason is None and claims is not None:
        if claims.knd is Kind.VENUE:
            if selectors.venue_code_is_revoked(claims.jti):
                reason = Reason.REVOKED
        elif discloses_name:
            state = selectors.citizen_state(claims.sub)
            if state is None or not state.is_active:
                reason = Reason.ACCOUNT_INACTIVE
            else:
                name_masked = masking.mask_name(state.real_name) or None
        elif claims.sub in caches.inactive_subjects:
            reason = Reason.ACCOUNT_INACTIVE

    record = _record_for(claims, reason, now=now)
    record.source = ScanEvent.Source.ONLINE
    record.scanner = str(scanner.pk)
    record.department = scanner.department_id
    record.place = profile.place
    claim = None
    if reason is None and claims is not None and claims.exp is not None:
        claim = Claim(
            holder=str(scanner.pk),
            jti=claims.jti,
            ttl=int(claims.exp + CLOCK_SKEW_SECONDS - now) + 1,
        )
    count, window = parse_rate(settings.QR_VERIFY_RATE)
    try:
        outcome = get_recorder().record(
            record, claim=claim, limit=RateLimit(f"verify:{scanner.pk}", count, window)
        )
    except ScanStateUnavailable as exc:
        logger.error("verify: scan state unavailable: %s", exc)
        raise QrError(SCAN_STATE_UNAVAILABLE) from exc
    if outcome.admission is Admission.THROTTLED:
        raise QrError(
            THROTTLED,
            headers={"Retry-After": str(outcome.retry_after)},
            extra={"retry_after": outcome.retry_after},
        )
    if outcome.admission is Admission.REPLAYED:
        reason, name_masked = Reason.REPLAYED, None
    return Verdict(
        valid=reason is None,
        reason=reason,
        claims=claims,
        name_masked=name_masked if reason is None else None,
        discloses_name=discloses_name,
    )


def _record_for(claims: Claims | None, reason: Reason | None, *, now: float) -> ScanRecord:
    record = ScanRecord(
        id=str(uuid7()), source="", scanned_at=now, valid=reason is None, reason=reason or ""
    )
    if claims is not None:
        record.kind = claims.knd.value
        record.jti = claims.jti
        record.kid = claims.kid
        if claims.knd is Kind.CITIZEN:
            record.subject = claims.sub
    return record


def scan_events_store(records: Sequence[ScanRecord]) -> int:
    """Write scan events; an event already stored (same id, or same
    terminal event id from the same scanner) is skipped, so storing twice is
    harmless."""
    rows = [
        ScanEvent(
            id=record.id,
            source=record.source,
            scanned_at=dt.datetime.fromtimestamp(record.scanned_at, tz=dt.UTC),
            scanner_id=record.scanner,
            department_id=record.department,
            place=record.place[:100],
            kind=record.kind,
            valid=record.valid,
            reason=record.reason,
            subject=record.subject,
            jti=record.jti,
            kid=record.kid,
            terminal_event_id=record.terminal_event_id,
        )
        for record in records
    ]
    ScanEvent.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    return len(rows)


def scan_events_flush(*, budget: float = 20) -> int:
    """Move buffered scan events into the database (the beat task calls this)."""
    return get_recorder().flush(scan_events_store, budget=budget)


def scans_unlink(user: User) -> None:
    """Where the citizen's code was scanned stops being theirs when the
    account closes (the erase hook of the ``star_code_scans`` section): the
    events stay, for the scanners' and venues' own counts, without the
    subject that tied them to the account."""
    ScanEvent.objects.filter(subject=user.subject).update(subject="")


def _unlink_closed_accounts(*, since: dt.datetime) -> int:
    """Scans stored after their account closed (buffered at the time,
    uploaded later by an offline terminal, or a closed account's code
    presented again) lose the subject too, at the next purge."""
    closed = User.objects.filter(closed_at__gte=since).values("subject")
    return ScanEvent.objects.filter(subject__in=closed).update(subject="")


def scan_events_purge(*, older_than: dt.timedelta | None = None) -> int:
    """Delete scan events past their retention (``QR_SCAN_RETENTION_DAYS``);
    unlink those of accounts closed within it."""
    older_than = older_than or dt.timedelta(days=settings.QR_SCAN_RETENTION_DAYS)
    cutoff = timezone.now() - older_than
    ScanClaim.objects.filter(expires_at__lt=timezone.now()).delete()
    _unlink_closed_accounts(since=cutoff)
    deleted = 0
    while True:
        ids = list(
            ScanEvent.objects.filter(scanned_at__lt=cutoff).values_list("pk", flat=True)[:5000]
        )
        if not ids:
            return deleted
        deleted += ScanEvent.objects.filter(pk__in=ids).delete()[0]


@dataclass(frozen=True)
class OfflineScan:
    event_id: str
    code: str
    scanned_at: dt.datetime
    valid: bool
    reason: Reason | None


def scans_upload(*, scanner: ApiKey, scans: Sequence[OfflineScan]) -> list[dict[str, str]]:
    """Store scans an offline terminal made; idempotent on its event ids.

    The terminal's verdict is recorded as it was given (that is what
    happened at the gate). The scan is attributed to a citizen only if our
    own check of the code passes at the time of the scan (signature, key,
    validity period), and only once per scanner key and code, so a terminal,
    or a stolen scanner key with a screenshot, cannot fill anyone's history.
    Returns ``{event_id, status}`` per scan, ``recorded`` or ``duplicate``,
    in the order given.
    """
    profile = caches.scanner_profiles.get(scanner.pk, fallback_place=scanner.name)
    ids = [scan.event_id for scan in scans]
    already = set(
        ScanEvent.objects.filter(scanner=scanner, terminal_event_id__in=ids).values_list(
            "terminal_event_id", flat=True
        )
    )
    checked = {
        scan.event_id: _claims_or_rejection(scan.code, scan.scanned_at.timestamp())
        for scan in scans
    }
    attributed = set(
        ScanEvent.objects.filter(
            scanner=scanner,
            jti__in=[c.jti for c, reason in checked.values() if c is not None and reason is None],
        )
        .exclude(subject="")
        .values_list("jti", flat=True)
    )
    results, records, seen = [], [], set()
    for scan in scans:
        if scan.event_id in already or scan.event_id in seen:
            results.append({"event_id": scan.event_id, "status": "duplicate"})
            continue
        seen.add(scan.event_id)
        claims, server_reason = checked[scan.event_id]
        record = _record_for(claims, scan.reason, now=scan.scanned_at.timestamp())
        if server_reason is not None or (claims is not None and claims.jti in attributed):
            record.subject = ""
        elif claims is not None:
            attributed.add(claims.jti)
        record.valid = scan.valid
        record.source = ScanEvent.Source.OFFLINE
        record.scanner = str(scanner.pk)
        record.department = scanner.department_id
        record.place = profile.place
        record.terminal_event_id = scan.event_id
        records.append(record)
        results.append({"event_id": scan.event_id, "status": "recorded"})
    scan_events_store(records)
    return results


# --- Venue codes -----------------------------------------------------------------------


@transaction.atomic
def venue_code_create(
    *,
    department: Department,
    service: Service,
    label: str,
    location: str = "",
    actor: ApiKey | User | None = None,
) -> VenueCode:
    """A venue code for one of the department's own services."""
    if service.department_id != department.pk:
        raise QrError(NOT_FOUND)
    venue = VenueCode(department=department, service=service, label=label, location=location)
    venue.jti = str(venue.id)
    kid, private = caches.keyring.signing_key()
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
    venue.save()
    audit_record(
        actor=actor,
        action="qr.venue_code.created",
        target=venue,
        data={"service": service.code, "label": label, "kid": kid},
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
    claims, reason = _claims_or_rejection(text, now)
    if reason is Reason.UNKNOWN_KEY and _revoked_with_its_key_gone(text):
        raise QrError(CODE_REVOKED)
    if reason is not None or claims is None or claims.knd is not Kind.VENUE:
        raise QrError(CODE_INVALID)
    venue = selectors.venue_code_by_jti(claims.jti)
    if venue is None:
        raise QrError(CODE_INVALID)
    revoked = not venue.is_active
    record = _record_for(claims, Reason.REVOKED if revoked else None, now=now)
    record.source = ScanEvent.Source.APP
    record.department = venue.department_id
    record.place = venue.location or venue.label
    try:
        get_recorder().record(record)
    except ScanStateUnavailable:
        scan_events_store([record])
    if revoked:
        raise QrError(CODE_REVOKED)
    return venue

"""Scans: online verification, offline uploads, and the scan events they
leave (stored, flushed from the recorder's buffer, unlinked, purged)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import ApiKey, User
from config import masking
from config.errors import THROTTLED
from config.ids import uuid7
from config.purge import delete_in_batches
from qr import caches, codes, selectors
from qr.codes import CLOCK_SKEW_SECONDS, Claims, CodeRejected, Kind, Reason
from qr.errors import SCAN_STATE_UNAVAILABLE, QrError
from qr.models import Disclosure, ScanClaim, ScanEvent
from qr.recorders import (
    Admission,
    Claim,
    RateLimit,
    ScanRecord,
    ScanStateUnavailable,
    get_recorder,
    parse_rate,
)

logger = logging.getLogger(__name__)

# The first half of the advisory lock that serialises a scanner key's
# offline uploads (the second is a hash of the key's id).
_OFFLINE_UPLOAD_LOCK_SPACE = 0x51_5343  # "QSC"

# --- What a scan is made of ----------------------------------------------------------


def code_check(text: str, now: float) -> tuple[Claims | None, Reason | None]:
    """Our own check of a code as of ``now``: ``(claims, None)``, or the
    claims that could be read (if any) and why the code fails."""
    try:
        return codes.verify(text, keys=caches.keyring, now=now, issuer=settings.QR_ISSUER), None
    except CodeRejected as exc:
        return exc.claims, exc.reason


def scan_record_for(claims: Claims | None, reason: Reason | None, *, now: float) -> ScanRecord:
    """The scan event of a code with these claims and this verdict (the
    caller fills in who scanned it, where, and how)."""
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


# --- Online verification ------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reason: Reason | None
    claims: Claims | None
    name_masked: str | None = None
    discloses_name: bool = False


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
    claims, reason = code_check(text, now)
    if reason is Reason.UNKNOWN_KEY and selectors.venue_code_is_revoked_with_its_key_gone(text):
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

    record = scan_record_for(claims, reason, now=now)
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
            record,
            store=scan_events_store,
            claim=claim,
            limit=RateLimit(f"verify:{scanner.pk}", count, window),
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


# --- Scan events ----------------------------------------------------------------------------


def scan_events_store(records: Sequence[ScanRecord]) -> int:
    """Write scan events; an event already stored (same id, or same
    terminal event id from the same scanner) is skipped, so storing twice is
    harmless. The recorders' ``store``."""
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


def scan_events_unlink(user: User) -> None:
    """Where the citizen's code was scanned stops being theirs when the
    account closes (the erase hook of the ``star_code_scans`` section): the
    events stay, for the scanners' and venues' own counts, without the
    subject that tied them to the account."""
    ScanEvent.objects.filter(subject=user.subject).update(subject="")


def _scan_events_of_closed_accounts_unlink(*, since: dt.datetime) -> int:
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
    _scan_events_of_closed_accounts_unlink(since=cutoff)
    return delete_in_batches(ScanEvent.objects.filter(scanned_at__lt=cutoff))


# --- Offline uploads --------------------------------------------------------------------------


@dataclass(frozen=True)
class OfflineScan:
    event_id: str
    code: str
    scanned_at: dt.datetime
    valid: bool
    reason: Reason | None


def offline_scans_upload(*, scanner: ApiKey, scans: Sequence[OfflineScan]) -> list[dict[str, str]]:
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
    # Per scan, not per event id: of two scans sharing an id, the first is
    # stored, and judged by its own code. Checked before the lock: the
    # signatures are the slow part and read nothing that changes here.
    checked = [code_check(scan.code, scan.scanned_at.timestamp()) for scan in scans]
    valid_jtis = [c.jti for c, reason in checked if c is not None and reason is None]
    with transaction.atomic():
        # What is stored already and which codes are attributed is read and
        # written by one upload of this key at a time: two batches sent side
        # by side (a terminal's retry, two terminals sharing a key) would
        # otherwise both find a code unattributed and both attribute it.
        _offline_uploads_of_key_serialise(scanner)
        already = set(
            ScanEvent.objects.filter(scanner=scanner, terminal_event_id__in=ids).values_list(
                "terminal_event_id", flat=True
            )
        )
        attributed = set(
            ScanEvent.objects.filter(scanner=scanner, jti__in=valid_jtis)
            .exclude(subject="")
            .values_list("jti", flat=True)
        )
        records: list[ScanRecord] = []
        first_of: dict[str, ScanRecord] = {}  # event id -> the record that may store it
        for scan, (claims, server_reason) in zip(scans, checked, strict=True):
            if scan.event_id in already or scan.event_id in first_of:
                continue
            record = scan_record_for(claims, scan.reason, now=scan.scanned_at.timestamp())
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
            first_of[scan.event_id] = record
        scan_events_store(records)
        # The statuses say what was written: a row the store skipped (an
        # event id stored meanwhile) is a duplicate, not "recorded".
        written = {
            str(pk)
            for pk in ScanEvent.objects.filter(pk__in=[r.id for r in records]).values_list(
                "pk", flat=True
            )
        }
    results, answered = [], set()
    for scan in scans:
        stored = first_of.get(scan.event_id)
        fresh = stored is not None and stored.id in written and scan.event_id not in answered
        answered.add(scan.event_id)
        results.append({"event_id": scan.event_id, "status": "recorded" if fresh else "duplicate"})
    return results


def _offline_uploads_of_key_serialise(scanner: ApiKey) -> None:
    """Hold the upload lock of ``scanner`` until the transaction ends.

    A PostgreSQL advisory lock rather than the key's row: the row is
    updated when the key is used (``last_used_at``) and revoked, and neither
    should wait for an upload. Elsewhere (SQLite: one writer at a time, in
    development) there is nothing to take."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
            [_OFFLINE_UPLOAD_LOCK_SPACE, str(scanner.pk)],
        )

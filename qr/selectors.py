"""Reads of the star-code app."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.db import connection
from django.db.models import (
    Case,
    CharField,
    Count,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from accounts.models import Department, User
from qr import caches, codes
from qr.models import ScanEvent, SigningKey, VenueCode

# --- Keys -----------------------------------------------------------------------------


def signing_key_active(*, now: dt.datetime | None = None) -> SigningKey | None:
    """The one key that signs: the newest that has activated and is still published."""
    now = now or timezone.now()
    return (
        SigningKey.objects.filter(withdrawn_at__isnull=True, activates_at__lte=now)
        .order_by("-activates_at", "-pk")
        .first()
    )


def signing_key_status(key: SigningKey, *, now: dt.datetime | None = None) -> str:
    """``upcoming``, ``active``, ``retiring`` (superseded, still published) or ``withdrawn``."""
    now = now or timezone.now()
    if key.withdrawn_at is not None:
        return "withdrawn"
    if key.activates_at > now:
        return "upcoming"
    active = signing_key_active(now=now)
    return "active" if active is not None and active.pk == key.pk else "retiring"


def signing_keys_with_status(
    queryset: QuerySet[SigningKey], *, now: dt.datetime | None = None
) -> QuerySet[SigningKey]:
    """``queryset`` with each key's ``key_status``, as :func:`signing_key_status`
    says, in the same query: the key that signs is worked out once for all
    of them (a list of keys), not once per key."""
    now = now or timezone.now()
    signing = (
        SigningKey.objects.filter(withdrawn_at__isnull=True, activates_at__lte=now)
        .order_by("-activates_at", "-pk")
        .values("pk")[:1]
    )
    return queryset.annotate(
        key_status=Case(
            When(withdrawn_at__isnull=False, then=Value("withdrawn")),
            When(activates_at__gt=now, then=Value("upcoming")),
            When(pk=Subquery(signing), then=Value("active")),
            default=Value("retiring"),
            output_field=CharField(),
        )
    )


def kids_of_active_venue_codes() -> set[str]:
    return set(
        VenueCode.objects.filter(deactivated_at__isnull=True)
        .values_list("kid", flat=True)
        .distinct()
    )


def jwks() -> dict[str, Any]:
    """The published keys as a JSON Web Key Set (RFC 7517, OKP keys of RFC 8037)."""
    return {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": codes.b64url(key.public_key.public_bytes_raw()),
                "kid": key.kid,
                "alg": codes.ALGORITHM,
                "use": "sig",
            }
            for key in caches.keyring.published()
        ]
    }


# --- Citizens and their scans ------------------------------------------------------------


@dataclass(frozen=True)
class CitizenState:
    is_active: bool
    real_name: str


def citizen_state(subject: str) -> CitizenState | None:
    row = User.objects.filter(subject=subject).values_list("is_active", "real_name").first()
    return CitizenState(is_active=row[0], real_name=row[1]) if row else None


def scans_of(user: User) -> QuerySet[ScanEvent]:
    """Where and when the citizen's codes were scanned (signature-checked scans only)."""
    return ScanEvent.objects.filter(subject=user.subject, kind=codes.Kind.CITIZEN).select_related(
        "department"
    )


def scans_export(user: User) -> list[dict[str, Any]]:
    return [
        {
            "scanned_at": timezone.localtime(event.scanned_at).isoformat(),
            "department": event.department.name if event.department else "",
            "place": event.place,
            "source": event.source,
            "valid": event.valid,
            "reason": event.reason,
        }
        for event in scans_of(user).order_by("scanned_at")
    ]


# --- Venue codes ------------------------------------------------------------------------------


def venue_codes_of(department: Department) -> QuerySet[VenueCode]:
    """The department's codes, newest first; those made at one time by id
    (along ``venue_code_department``), so that each is on one page of the
    list only, however the rows were written."""
    return (
        VenueCode.objects.filter(department=department)
        .select_related("service")
        .order_by("-created_at", "-id")
    )


def venue_code_of(department: Department, venue_id: Any) -> VenueCode | None:
    """The department's own code, or None (others' codes do not exist for it)."""
    return venue_codes_of(department).filter(pk=venue_id).first()


def venue_code_by_jti(jti: str) -> VenueCode | None:
    return VenueCode.objects.select_related("service").filter(jti=jti).first()


def venue_code_is_revoked(jti: str) -> bool:
    return not VenueCode.objects.filter(jti=jti, deactivated_at__isnull=True).exists()


def venue_code_is_revoked_with_its_key_gone(text: str) -> bool:
    """A deactivated venue code outlives the key that signed it (keys are
    withdrawn once no active code needs them); it still answers "revoked"."""
    jti = codes.unverified_jti(text)
    if jti is None:
        return False
    venue = venue_code_by_jti(jti)
    return venue is not None and not venue.is_active


def venue_codes_with_scan_counts(queryset: QuerySet[VenueCode]) -> QuerySet[VenueCode]:
    """Each code with how often it was scanned or opened (signature-checked scans)."""
    per_code = (
        ScanEvent.objects.filter(kind=codes.Kind.VENUE, jti=OuterRef("jti"))
        .order_by()
        .values("jti")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return queryset.annotate(scan_count=Coalesce(Subquery(per_code[:1]), 0))


# --- Revocations for offline terminals ---------------------------------------------------------


@dataclass(frozen=True)
class Revocations:
    revoked: list[dict[str, Any]]
    inactive_subjects: list[dict[str, Any]]
    until: dt.datetime


def _database_now() -> dt.datetime:
    """The database's clock, which stamped every deactivation (web nodes'
    clocks may drift apart; the database is one)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT STATEMENT_TIMESTAMP()")
            return cursor.fetchone()[0]
    return timezone.now()  # SQLite: one machine, one clock


def revocations_since(since: dt.datetime | None, *, limit: int | None = None) -> Revocations:
    """Codes revoked and subjects deactivated at or after ``since`` (all, if
    None), oldest first, at most ``limit`` of each; ``until`` is the
    ``since`` of the next call.

    Entries at exactly ``until`` may come again next time (terminals treat
    the lists as sets). ``until`` trails the clock by
    ``QR_REVOCATIONS_LAG_SECONDS`` so that a change committed late, with an
    earlier timestamp, is not skipped.
    """
    limit = limit or settings.QR_REVOCATIONS_PAGE_SIZE
    until = _database_now() - dt.timedelta(seconds=settings.QR_REVOCATIONS_LAG_SECONDS)
    if since is not None and since > until:
        # A terminal's own clock, ahead of ours: nothing after our ``until``
        # can be vouched for yet (later commits may still land before
        # ``since``). The answer names our ``until``; the next call starts there.
        return Revocations(revoked=[], inactive_subjects=[], until=until)
    revoked_qs = VenueCode.objects.filter(deactivated_at__isnull=False).order_by(
        "deactivated_at", "pk"
    )
    inactive_qs = User.objects.filter(is_active=False, deactivated_at__isnull=False).order_by(
        "deactivated_at", "pk"
    )
    if since is not None:
        lower = since
        if connection.vendor == "sqlite":
            # SQLite keeps times as text, and its own clock (Now()) writes
            # them to the millisecond: "…05.123" sorts before the same
            # instant written by Python, "…05.123000". A bound a millisecond
            # lower finds every stamp at or after ``since``; the few before
            # it are dropped below, once the page's edge is set.
            lower = since - dt.timedelta(milliseconds=1)
        revoked_qs = revoked_qs.filter(deactivated_at__gte=lower)
        inactive_qs = inactive_qs.filter(deactivated_at__gte=lower)
    # (jti or subject, deactivated_at): never a NULL time, as filtered above.
    revoked_rows = cast(
        "QuerySet[VenueCode, tuple[str, dt.datetime]]",
        revoked_qs.values_list("jti", "deactivated_at"),
    )
    inactive_rows = cast(
        "QuerySet[User, tuple[str, dt.datetime]]",
        inactive_qs.values_list("subject", "deactivated_at"),
    )
    start = since or SINCE_EVER
    revoked = _first_rows(revoked_rows, start=start, limit=limit)
    inactive = _first_rows(inactive_rows, start=start, limit=limit)
    # A list with more than a page ends the window at its first entry left
    # out; the rest comes with the next call.
    for rows in (revoked, inactive):
        if len(rows) > limit:
            until = min(until, rows[limit][1])
    if since is not None and until <= since:
        # A whole page shares the instant ``since``: send that instant whole,
        # so the window always moves on.
        until = since + dt.timedelta(microseconds=1)
        revoked = list(revoked_rows.filter(deactivated_at__lt=until))
        inactive = list(inactive_rows.filter(deactivated_at__lt=until))
    return Revocations(
        revoked=[{"jti": jti, "at": at} for jti, at in revoked if start <= at < until],
        inactive_subjects=[{"sub": sub, "at": at} for sub, at in inactive if start <= at < until],
        until=until,
    )


SINCE_EVER = dt.datetime.min.replace(tzinfo=dt.UTC)


def _first_rows(
    rows: QuerySet[Any, tuple[str, dt.datetime]], *, start: dt.datetime, limit: int
) -> list[tuple[str, dt.datetime]]:
    """The first ``limit + 1`` rows stamped at or after ``start`` (fewer if
    there are no more). On SQLite the query's bound is a millisecond early:
    rows before ``start`` (sent already) come first, and must not take the
    page's places, or a page of them would hold the window a microsecond
    from where it was, call after call. Elsewhere: one query, as sliced."""
    size = limit + 1
    while True:
        fetched = list(rows[:size])
        kept = [row for row in fetched if row[1] >= start]
        if len(kept) > limit or len(fetched) < size:
            return kept[: limit + 1]
        size = limit + 1 + len(fetched) - len(kept)


def venue_codes_signed_by_withdrawn_keys() -> list[tuple[str, int]]:
    """Active venue codes no published key can verify, per department code."""
    live = set(SigningKey.objects.filter(withdrawn_at__isnull=True).values_list("kid", flat=True))
    return list(
        VenueCode.objects.filter(deactivated_at__isnull=True)
        .exclude(kid__in=live)
        .order_by()
        .values_list("department__code")
        .annotate(n=Count("pk"))
        .order_by("department__code")
    )


# --- The operators' dashboard -------------------------------------------------------------


def scans_per_hour(*, since: dt.datetime, tzinfo: dt.tzinfo) -> dict[dt.datetime, dict[str, int]]:
    """Scans since ``since`` by the hour (in ``tzinfo``) they happened:
    ``{hour: {"total", "valid"}}``, one grouped query over the time index."""
    rows = (
        ScanEvent.objects.filter(scanned_at__gte=since)
        .annotate(hour=TruncHour("scanned_at", tzinfo=tzinfo))
        .values("hour")
        .annotate(total=Count("pk"), valid=Count("pk", filter=Q(valid=True)))
        .order_by("hour")
    )
    return {row["hour"]: {"total": row["total"], "valid": row["valid"]} for row in rows}

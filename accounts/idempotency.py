"""``Idempotency-Key`` on POSTs that create things (design §4).

Same key and same body from the same caller → the first response again
(``Idempotent-Replayed: true``); same key with another body → 422
``idempotency_key_reused``. Keys live 24 h. Two identical requests racing
each other produce one effect: the record is inserted in the same database
transaction as the effect, so the second request waits on the unique index
until the first commits, then replays its answer.

An answer holds personal data: a citizen's own, or, kept under a
department's key, the citizen the view names as ``concerns`` (a status
report answers with the applicant's identity). Closing the account erases
both (:func:`idempotency_records_erase`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.errors import IDEMPOTENCY_KEY_INVALID, IDEMPOTENCY_KEY_REUSED, AccountsError
from accounts.models import ApiKey, IdempotencyRecord, User

KEY_LIFETIME = dt.timedelta(hours=24)
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _owner(request: Request) -> str:
    if isinstance(request.auth, ApiKey):
        return f"key:{request.auth.pk}"
    return _user_owner(request.user.pk)


def _user_owner(user_id: object) -> str:
    return f"user:{user_id}"


def _fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _replay(record: IdempotencyRecord, fingerprint: str) -> Response:
    if record.fingerprint != fingerprint:
        raise AccountsError(IDEMPOTENCY_KEY_REUSED)
    return Response(record.body, status=record.status_code, headers={"Idempotent-Replayed": "true"})


class _NotStored(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def idempotent(
    request: Request, create: Callable[[], Response], *, concerns: User | None = None
) -> Response:
    """Run ``create`` at most once per caller and ``Idempotency-Key``.

    ``concerns``: the citizen whose personal data the answer holds, when
    the caller is not that citizen; the kept answer goes when their account
    closes."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return create()
    if not _KEY.fullmatch(key):
        raise AccountsError(IDEMPOTENCY_KEY_INVALID, _("幂等键须为 1 至 255 个可见 ASCII 字符"))
    owner, fingerprint = _owner(request), _fingerprint(request)
    cutoff = timezone.now() - KEY_LIFETIME
    records = IdempotencyRecord.objects.filter(owner=owner, key=key)
    existing = records.first()
    if existing is not None:
        if existing.created_at >= cutoff:
            return _replay(existing, fingerprint)
        # Past its lifetime: the key is free again. Deleted only when found
        # so, not looked for on every request (the purge takes the rest).
        records.filter(pk=existing.pk).delete()
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(
                owner=owner, key=key, fingerprint=fingerprint, concerns=concerns
            )
            response = create()
            if response.status_code >= 500:
                raise _NotStored(response)
            record.status_code, record.body = response.status_code, response.data
            record.save(update_fields=["status_code", "body"])
            return response
    except _NotStored as failed:
        return failed.response
    except IntegrityError:
        # Another request with this key committed first.
        existing = records.first()
        if existing is None:
            raise
        return _replay(existing, fingerprint)


def idempotency_records_purge() -> int:
    deleted, _counts = IdempotencyRecord.objects.filter(
        created_at__lt=timezone.now() - KEY_LIFETIME
    ).delete()
    return deleted


def idempotency_records_erase(user: User) -> None:
    """Forget the stored answers that hold the citizen's data: those to
    their own requests (they repeat forms and applications; a closed
    account sends no retries) and those kept under a department's key about
    them (a status report's answer names the applicant). A department's
    retry is then looked at again, and answered as the application stands:
    with the pseudonymous subject alone.

    Run in the closing transaction after the applications' erase hook,
    which waits for a report in progress on the citizen's applications: the
    report's answer, committed by then, is seen here and deleted. A record
    has no key to the citizen's row in the database: writing or deleting it
    locks no account."""
    IdempotencyRecord.objects.filter(Q(owner=_user_owner(user.pk)) | Q(concerns=user)).delete()

"""API keys for department systems and scanner terminals."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from accounts.audit import audit_record
from accounts.models import (
    ApiKey,
    ApiKeyScope,
    Department,
    User,
)

API_KEY_PREFIX = "mcs"
# A key's own prefix, as api_key_create makes it (secrets.token_hex(4)).
_KEY_PREFIX = re.compile(r"[0-9a-f]{8}")


def _key_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_create(
    *,
    department: Department,
    scope: ApiKeyScope | str,
    name: str = "",
    created_by: User | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns it with the raw secret, which is never stored."""
    scope = ApiKeyScope(scope)
    for _attempt in range(5):
        prefix = secrets.token_hex(4)
        raw = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    department=department,
                    scope=scope,
                    name=name,
                    prefix=prefix,
                    key_hash=_key_hash(raw),
                    created_by=created_by,
                )
                audit_record(
                    actor=created_by,
                    action="api_key.created",
                    target=key,
                    data={"department": department.code, "scope": scope.value, "prefix": prefix},
                )
        except IntegrityError:
            continue
        return key, raw
    raise RuntimeError("could not find a free API key prefix")


def api_key_revoke(*, key: ApiKey, actor: User | ApiKey | None, ip: str | None = None) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        ApiKey.objects.filter(pk=key.pk).update(revoked_at=key.revoked_at)
        audit_record(
            actor=actor,
            action="api_key.revoked",
            target=key,
            data={"department": key.department.code, "prefix": key.prefix},
            ip=ip,
        )
    return key


API_KEY_TOUCH_INTERVAL = dt.timedelta(minutes=1)


def api_key_authenticate(raw: str) -> ApiKey | None:
    """The live key matching ``raw``, or None. Records when it was last used
    (at most once a minute, so busy scanners do not write on every scan)."""
    parts = raw.split("_", 2)
    # Of the keys' form before anything is looked up: a prefix with a NUL
    # in it was a PostgreSQL error (500), not a refusal.
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not _KEY_PREFIX.fullmatch(parts[1]):
        return None
    key = ApiKey.objects.select_related("department").filter(prefix=parts[1]).first()
    if key is None or not constant_time_compare(key.key_hash, _key_hash(raw)):
        return None
    if key.revoked_at is not None or not key.department.is_active:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > API_KEY_TOUCH_INTERVAL:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key

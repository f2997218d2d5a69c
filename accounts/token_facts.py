"""What a citizen's access token may vouch for, so that hot requests ask no database.

An access token made by :func:`accounts.tokens.tokens_issue` (login,
refresh) carries, besides the user id, the facts star-code issuance is
authorised by: the subject and the identity level, read from the row
when the token was made (an active, open account: no token is made for
another). A view that needs no other column (``citizen_fields``, see
``accounts.authentication``) takes the citizen from the token, after one
Redis ``GET``: whether the account changed since the token was made.

Every change of those columns (suspension, closing, real-name check,
admin edits and deletes) calls :func:`citizen_changed`, which records the
time of the change in Redis, at once and again after the commit, for as
long as an access token lives. A token made before the latest change (or
less than ``MARGIN`` seconds after it) is not trusted: the row is read, as
for any other view. What changes a row outside the write functions (a
shell, SQL) is seen by such views when the citizen's tokens expire
(``JWT_ACCESS_MINUTES``). Without Redis (REDIS_URL unset) or with Redis
unreachable, tokens vouch for nothing and the row is read.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import transaction
from rest_framework_simplejwt.settings import api_settings

from accounts.models import User
from config.redis_client import REDIS_ERRORS, redis_client, redis_enabled, redis_key

logger = logging.getLogger(__name__)

# The columns a token vouches for (is_active and closed_at: as every token
# is made for an active, open account).
FIELDS = ("is_active", "closed_at", "subject", "identity_level")
SUBJECT_CLAIM, LEVEL_CLAIM = "sbj", "lvl"
# A token made this soon after a change may hold what was read before it.
MARGIN = 5


def _marker(user_id: Any) -> str:
    return redis_key(f"citizen:{user_id}:changed")


def facts_stamp(access: Any, user: User) -> None:
    """Write what ``access`` (an access token of ``user``) vouches for."""
    access[SUBJECT_CLAIM] = user.subject
    access[LEVEL_CLAIM] = int(user.identity_level)


def marker_key(token: Any) -> str | None:
    """The Redis key of the change marker of ``token``'s citizen (None: the
    token vouches for nothing, whatever the marker, or Redis is not used)."""
    subject, level = token.get(SUBJECT_CLAIM), token.get(LEVEL_CLAIM)
    user_id, issued = token.get(api_settings.USER_ID_CLAIM), token.get("iat")
    if not (isinstance(subject, str) and isinstance(level, int) and isinstance(issued, int)):
        return None
    if user_id is None or not redis_enabled():
        return None
    return _marker(user_id)


def citizen_from_token(token: Any) -> User | None:
    """The citizen as ``token`` vouches for them (:data:`FIELDS` loaded,
    other columns deferred), or None when it cannot: no facts in it, the
    account changed since, or Redis cannot say."""
    key = marker_key(token)
    if key is None:
        return None
    try:
        changed = redis_client().get(key)
    except REDIS_ERRORS as exc:
        logger.warning("citizen change markers unavailable: %s", exc)
        return None
    return citizen_vouched(token, changed)


def citizen_vouched(token: Any, changed: bytes | str | None) -> User | None:
    """The citizen as ``token`` (whose :func:`marker_key` is not None)
    vouches for them, given the marker's value read from Redis (None: no
    change recorded); None if the token was made before the latest change."""
    user_id, issued = token[api_settings.USER_ID_CLAIM], token["iat"]
    subject, level = token[SUBJECT_CLAIM], token[LEVEL_CLAIM]
    if changed is not None and issued < float(changed) + MARGIN:
        return None
    values = {
        "id": User._meta.pk.to_python(user_id),
        "is_active": True,
        "closed_at": None,
        "subject": subject,
        "identity_level": level,
    }
    # Model.from_db takes the loaded values in the model's column order.
    names = [f.attname for f in User._meta.concrete_fields if f.attname in values]
    return User.from_db("default", names, [values[name] for name in names])


def citizen_changed(user_id: Any) -> None:
    """Tokens of ``user_id`` made so far no longer vouch for the account:
    recorded now (for tokens made while the change commits) and again when
    the transaction commits."""
    _mark(user_id)
    transaction.on_commit(lambda: _mark(user_id))


def _mark(user_id: Any) -> None:
    if not redis_enabled():
        return
    lifetime = int(api_settings.ACCESS_TOKEN_LIFETIME.total_seconds()) + MARGIN + 60
    try:
        redis_client().set(_marker(user_id), repr(time.time()), ex=lifetime)
    except REDIS_ERRORS as exc:
        # Tokens made before this change keep vouching until they expire.
        logger.error("citizen change of %s not recorded (%s)", user_id, exc)

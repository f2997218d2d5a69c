"""What a citizen's access token may vouch for, so that hot requests ask no database.

An access token made by :func:`accounts.tokens.tokens_issue` (login,
refresh) carries, besides the user id, the facts star-code issuance is
authorised by: the subject and the identity level (an active, open account:
no such token is made for another), and the account's *generation*: a
random value kept in Redis for the citizen. A view that needs no other
column (``citizen_from_token``, see ``accounts.authentication``) takes the
citizen from the token when its generation is still the citizen's current
one, after one Redis ``GET``.

Every change of those columns (suspension, closing, real-name check, admin
edits and deletes) calls :func:`citizen_changed`, which gives the citizen a
new generation before the change (and the change is refused, 503, if Redis
cannot take it) and again after its commit. Tokens carry the generation
read *before* the account row they describe, so a token made while a change
commits carries one the second renewal retires. No clocks are compared.

Anything that loses the value (Redis restarted without its data, evicted
keys, expiry after ``JWT_ACCESS_MINUTES``) leaves no current generation, and
then no token vouches: the row is read, as for every other view. What
changes a row outside the write functions (SQL, a shell) is seen by such
views when the citizen's tokens expire or :func:`citizen_changed` is called
(``manage.py shell``). Without Redis (REDIS_URL unset) or with Redis
unreachable at request time, tokens vouch for nothing.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from django.db import transaction
from rest_framework_simplejwt.settings import api_settings

from accounts.errors import AccountsError
from accounts.models import User
from config.errors import SERVICE_UNAVAILABLE
from config.redis_client import REDIS_ERRORS, redis_client, redis_enabled, redis_key

logger = logging.getLogger(__name__)

# The columns a token vouches for (is_active and closed_at: as every such
# token is made for an active, open account).
FIELDS = ("is_active", "closed_at", "subject", "identity_level")
SUBJECT_CLAIM, LEVEL_CLAIM, GENERATION_CLAIM = "sbj", "lvl", "gen"

# KEYS: the citizen's generation. ARGV: a new value, the key's lifetime.
# The current value (made now if there is none), kept as long as a token
# made with it lives.
_CURRENT_SCRIPT = """
local generation = redis.call('GET', KEYS[1])
if not generation then
  generation = ARGV[1]
  redis.call('SET', KEYS[1], generation, 'EX', tonumber(ARGV[2]))
else
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return generation
"""


def _lifetime() -> int:
    return int(api_settings.ACCESS_TOKEN_LIFETIME.total_seconds()) + 60


def _key(user_id: Any) -> str:
    return redis_key(f"citizen:{user_id}:generation")


def facts_stamp(access: Any, user: User) -> None:
    """Write what ``access`` (an access token of ``user``) vouches for: the
    citizen's current generation, then the row as it stands after it.
    Nothing when Redis is not used or cannot answer (the token then vouches
    for nothing)."""
    if not redis_enabled():
        return
    try:
        generation = redis_client().eval(
            _CURRENT_SCRIPT, 1, _key(user.pk), secrets.token_hex(8), _lifetime()
        )
    except REDIS_ERRORS as exc:
        logger.warning("citizen generations unavailable: %s", exc)
        return
    row = User.objects.filter(pk=user.pk).values(*FIELDS).first()
    if row is None or not row["is_active"] or row["closed_at"] is not None:
        return
    access[SUBJECT_CLAIM] = row["subject"]
    access[LEVEL_CLAIM] = int(row["identity_level"])
    access[GENERATION_CLAIM] = generation.decode() if isinstance(generation, bytes) else generation


def generation_key(token: Any) -> str | None:
    """The Redis key of the generation ``token``'s citizen must still have
    for the token to vouch (None: it vouches for nothing anyway)."""
    if not redis_enabled():
        return None
    subject, level = token.get(SUBJECT_CLAIM), token.get(LEVEL_CLAIM)
    generation, user_id = token.get(GENERATION_CLAIM), token.get(api_settings.USER_ID_CLAIM)
    if not (isinstance(subject, str) and isinstance(level, int) and isinstance(generation, str)):
        return None
    if user_id is None:
        return None
    return _key(user_id)


def citizen_from_token(token: Any) -> User | None:
    """The citizen as ``token`` vouches for them (:data:`FIELDS` loaded,
    other columns deferred), or None when it cannot: no facts in it, the
    account changed since, or Redis cannot say."""
    key = generation_key(token)
    if key is None:
        return None
    try:
        current = redis_client().get(key)
    except REDIS_ERRORS as exc:
        logger.warning("citizen generations unavailable: %s", exc)
        return None
    return citizen_vouched(token, current)


def citizen_vouched(token: Any, current: bytes | str | None) -> User | None:
    """The citizen as ``token`` (whose :func:`generation_key` is not None)
    vouches for them, given the citizen's current generation read from
    Redis (None: there is none); None unless the two are the same."""
    if isinstance(current, bytes):
        current = current.decode()
    if current is None or current != token[GENERATION_CLAIM]:
        return None
    values = {
        "id": User._meta.pk.to_python(token[api_settings.USER_ID_CLAIM]),
        "is_active": True,
        "closed_at": None,
        "subject": token[SUBJECT_CLAIM],
        "identity_level": token[LEVEL_CLAIM],
    }
    # Model.from_db takes the loaded values in the model's column order.
    names = [f.attname for f in User._meta.concrete_fields if f.attname in values]
    return User.from_db("default", names, [values[name] for name in names])


def citizen_changed(user_id: Any) -> None:
    """Tokens of ``user_id`` made so far no longer vouch for the account:
    a new generation now (raising a 503 ``AccountsError`` if Redis cannot
    take it, so that the change is not made) and another once the
    surrounding transaction commits (for tokens made meanwhile)."""
    if not redis_enabled():
        return
    try:
        _renew(user_id)
    except REDIS_ERRORS as exc:
        logger.error("citizen %s: generation not renewed, change refused (%s)", user_id, exc)
        raise AccountsError(SERVICE_UNAVAILABLE) from exc

    def after_commit() -> None:
        try:
            _renew(user_id)
        except REDIS_ERRORS as exc:
            # Only tokens made while the change committed keep vouching.
            logger.error("citizen %s: generation not renewed after commit (%s)", user_id, exc)

    transaction.on_commit(after_commit)


def _renew(user_id: Any) -> None:
    redis_client().set(_key(user_id), secrets.token_hex(8), ex=_lifetime())

"""Where verifications meet shared state: replay claims, the per-key rate
limit, and scan events on their way to the database.

Chosen by ``QR_SCAN_RECORDER`` (a dotted path). Two implementations:

- :class:`RedisScanRecorder` (default with ``REDIS_URL``): one Redis call
  per verification, a Lua script that counts the request against the key's
  rate limit, claims the code's ``jti`` for the scanner (``SET NX`` with the
  code's remaining life) and appends the scan event to a list. A Celery beat
  task moves the list into PostgreSQL in bulk (:meth:`flush`). An event is
  in Redis before the answer leaves, and leaves Redis only after the rows
  are committed: a web process, a worker or the flusher may die at any
  point and no event is lost; one flushed twice is stored once (the event's
  id is its primary key).
- :class:`DatabaseScanRecorder` (the embedded default, no Redis): claims and
  limits through Django's cache, each event written to the database at once.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from enum import Enum

from django.conf import settings
from django.core.cache import cache
from django.core.signals import setting_changed
from django.db import DatabaseError, connection
from django.dispatch import receiver
from django.utils import timezone
from django.utils.module_loading import import_string

from config.redis_client import LuaScript, redis_client

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ScanRecord:
    """A scan event before it is a row (JSON-ready, no personal data)."""

    id: str
    source: str
    scanned_at: float
    valid: bool
    reason: str = ""
    kind: str = ""
    subject: str = ""
    jti: str = ""
    kid: str = ""
    scanner: str | None = None
    department: int | None = None
    place: str = ""
    terminal_event_id: str = ""

    def as_dict(self) -> dict[str, object]:
        # Not dataclasses.asdict: that deep-copies, and this runs per scan.
        return {name: getattr(self, name) for name in _RECORD_FIELDS}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"), ensure_ascii=False)

    def to_json_pair(self) -> tuple[str, str]:
        """This record and the same one marked ``replayed``, as JSON."""
        data = self.as_dict()
        plain = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        data["valid"], data["reason"] = False, "replayed"
        return plain, json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ScanRecord:
        return cls(**json.loads(raw))

    def replayed(self) -> ScanRecord:
        return replace(self, valid=False, reason="replayed")


_RECORD_FIELDS = tuple(f.name for f in fields(ScanRecord))


@dataclass(frozen=True, slots=True)
class Claim:
    """First valid use of ``jti`` by ``holder`` within ``ttl`` seconds."""

    holder: str
    jti: str
    ttl: int


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` records per ``window`` seconds under ``key``."""

    key: str
    limit: int
    window: int


class Admission(Enum):
    """What :meth:`ScanRecorder.record` did with a record."""

    RECORDED = "recorded"  # kept as given (its claim, if any, is now taken)
    REPLAYED = "replayed"  # kept, marked replayed: the claim was taken already
    THROTTLED = "throttled"  # over the rate limit: not kept


@dataclass(frozen=True, slots=True)
class Outcome:
    """The admission, and when ``THROTTLED`` the seconds until the limit's
    window ends (``Retry-After``)."""

    admission: Admission
    retry_after: int = 0


class ScanStateUnavailable(Exception):
    """The shared state cannot be reached: answer 503, scanners go offline."""


def parse_rate(rate: str) -> tuple[int, int]:
    """``"600/min"`` → ``(600, 60)`` (DRF's notation)."""
    count, period = rate.split("/")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period.strip()[0]]
    return int(count), seconds


Store = Callable[[Sequence[ScanRecord]], object]
"""Writes records to the database, idempotent on :attr:`ScanRecord.id`
(a record stored twice is one row): ``qr.scans.scan_events_store``."""


class ScanRecorder:
    """Base class: what verification needs from shared state.

    A recorder does three things in one call per scan (:meth:`record`):
    counts the scan against a rate limit, claims the code for the scanner
    (replay detection), and takes the scan event on its way to the
    database, either writing it at once through ``store`` or buffering it
    until :meth:`flush` moves it there. Chosen by ``QR_SCAN_RECORDER`` (a
    dotted path); constructed without arguments, once per process
    (:func:`get_recorder`), and used from many threads at once.

    The contract every implementation keeps (checked on each by
    ``tests/qr/test_recorders_contract.py``):

    - **Atomic claims.** Of the records (each its own ``id``) that carry
      the same claim (same ``holder`` and ``jti``) within its ``ttl``,
      exactly one is ``RECORDED``, however many race; the others are
      ``REPLAYED``. Claims of another holder or another ``jti`` are
      independent. A claim stays taken at least for its ``ttl`` (the code's
      remaining life: after it, the code no longer verifies and is never
      claimed again).
    - **Nothing lost.** A record that :meth:`record` accepted (``RECORDED``
      or ``REPLAYED``) reaches ``store``: at once, or counted by
      :meth:`pending` until a :meth:`flush` stores it. A record leaves the
      buffer only after ``store`` returned; if ``store`` raises, the records
      stay pending for the next flush.
    - **Nothing duplicated.** Each accepted record is stored under its own
      ``id``; a flush run again (or after one that died between storing and
      trimming) may hand ``store`` the same record twice, which ``store``
      absorbs. Two flushes never trim each other's records.
    - **Throttling records nothing.** Over the limit: ``THROTTLED`` with
      ``retry_after`` (whole seconds, at least 1, until the window ends);
      the record is not stored and its claim is not taken.
    - **Failure is loud.** A recorder whose state lives outside the
      database raises :class:`ScanStateUnavailable` from :meth:`record` and
      :meth:`pending` when it cannot reach it (the verify endpoint answers
      503 and gates fall back to their offline checks), never an answer as
      if the scan had been recorded, and never another exception.
    """

    def record(
        self,
        record: ScanRecord,
        *,
        store: Store,
        claim: Claim | None = None,
        limit: RateLimit | None = None,
    ) -> Outcome:
        """Count against ``limit`` (over it: nothing recorded, ``THROTTLED``);
        then claim (taken already: the record is kept as
        :meth:`ScanRecord.replayed`, ``REPLAYED``); then keep the record:
        written through ``store`` now, or buffered for :meth:`flush`.
        ``RECORDED`` otherwise. No ``claim``: never a replay; no ``limit``:
        never throttled."""
        raise NotImplementedError

    def flush(self, store: Store, *, budget: float = 20) -> int:
        """Move buffered records into the database through ``store``, in
        batches, for about ``budget`` seconds at most; returns how many were
        moved (0 when nothing is buffered, or another flush is under way).
        A recorder that buffers nothing keeps this default."""
        return 0

    def pending(self) -> int:
        """Records accepted but not yet in the database (0 for a recorder
        that writes at once)."""
        return 0


def _window(limit: RateLimit, now: float) -> tuple[str, int]:
    index = int(now // limit.window)
    retry_after = max(1, int((index + 1) * limit.window - now + 0.999))
    return f"{limit.key}:{index}", retry_after


class DatabaseScanRecorder(ScanRecorder):
    """Claims as database rows (shared by every process), limits in Django's
    cache, records written straight away."""

    def record(
        self,
        record: ScanRecord,
        *,
        store: Store,
        claim: Claim | None = None,
        limit: RateLimit | None = None,
    ) -> Outcome:
        if limit is not None:
            key, retry_after = _window(limit, time.time())
            key = f"qr:rate:{key}"
            cache.add(key, 0, timeout=limit.window + 1)
            try:
                count = cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=limit.window + 1)
                count = 1
            if count > limit.limit:
                return Outcome(Admission.THROTTLED, retry_after)
        admission = Admission.RECORDED
        claimed = False
        if claim is not None:
            claimed = _claim_row(claim)
            if not claimed:
                record, admission = record.replayed(), Admission.REPLAYED
        try:
            store([record])
        except BaseException:
            # A claim kept without its record would answer the terminal's
            # retry as a replay: it goes with the failed record (no
            # transaction around both: two statements on the common path).
            if claimed:
                _claim_release(claim)  # type: ignore[arg-type]  # claimed implies a claim
            raise
        return Outcome(admission)


def _claim_row(claim: Claim) -> bool:
    """Take the claim in one statement; False if it is taken (a replay).

    Only unexpired codes are claimed and every code has its own ``jti``, so
    a claim is never in the way of a later, legitimate one; expired rows are
    swept with the scan events."""
    from qr.models import ScanClaim

    expires_at = timezone.now() + dt.timedelta(seconds=max(1, claim.ttl))
    table = connection.ops.quote_name(ScanClaim._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (holder, jti, expires_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (holder, jti) DO NOTHING",
            [
                claim.holder,
                claim.jti,
                ScanClaim._meta.get_field("expires_at").get_db_prep_value(expires_at, connection),
            ],
        )
        return cursor.rowcount == 1


def _claim_release(claim: Claim) -> None:
    from qr.models import ScanClaim

    try:
        ScanClaim.objects.filter(holder=claim.holder, jti=claim.jti).delete()
    except DatabaseError as exc:  # the database is what failed: it stays
        logger.warning("scan claim %s of %s not released: %s", claim.jti, claim.holder, exc)


_RECORD_SCRIPT = """
-- KEYS: rate counter, claim, events list
-- ARGV: limit (0 = none), window, claim ttl (0 = no claim), record, replayed record, record id
-- The claim holds the id of the record that made it: the same call run
-- twice (a lost reply) finds its own claim and records nothing more.
local limit = tonumber(ARGV[1])
if limit > 0 then
  local count = redis.call('INCR', KEYS[1])
  if count == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) + 1) end
  if count > limit then return 2 end
end
if tonumber(ARGV[3]) > 0 then
  if not redis.call('SET', KEYS[2], ARGV[6], 'NX', 'EX', tonumber(ARGV[3])) then
    if redis.call('GET', KEYS[2]) == ARGV[6] then return 0 end
    redis.call('RPUSH', KEYS[3], ARGV[5])
    return 1
  end
end
redis.call('RPUSH', KEYS[3], ARGV[4])
return 0
"""

# Trim what was stored, but only while still holding the flush lock: a
# flusher that stalled past its lock leaves the items for the next one
# (storing them twice is harmless, trimming them twice would lose others).
_TRIM_SCRIPT = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
  return 1
end
return 0
"""

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisScanRecorder(ScanRecorder):
    """One Lua call per verification; events buffered in a Redis list.

    The same :meth:`record` call run twice (a reply lost on the way back)
    finds its own claim: ``RECORDED`` again, and recorded once."""

    batch = 1000
    lock_seconds = 60

    def __init__(self) -> None:
        import redis

        self._errors = (redis.RedisError, OSError)
        client = redis_client()
        self._record = LuaScript(_RECORD_SCRIPT)  # the verification's one round trip
        self._trim = client.register_script(_TRIM_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)
        # Inside the cache's key space, so each deployment (and test run)
        # keeps its own; QR_SCAN_BUFFER_KEY names the list explicitly.
        prefix = cache.make_key("qr")
        self.events_key = settings.QR_SCAN_BUFFER_KEY or f"{prefix}:events"
        self.lock_key = f"{self.events_key}:flush-lock"
        self._prefix = prefix

    def record(
        self,
        record: ScanRecord,
        *,
        store: Store,
        claim: Claim | None = None,
        limit: RateLimit | None = None,
    ) -> Outcome:
        # ``store`` is the flusher's business: the request path never waits
        # on the database.
        now = time.time()
        rate_key, retry_after, limit_count, window = "", 0, 0, 0
        if limit is not None:
            rate_key, retry_after = _window(limit, now)
            limit_count, window = limit.limit, limit.window
        claim_key = f"{self._prefix}:claim:{claim.holder}:{claim.jti}" if claim else ""
        if claim:
            payload, replayed = record.to_json_pair()
        else:
            payload, replayed = record.to_json(), ""
        try:
            result = self._record(
                keys=[f"{self._prefix}:rate:{rate_key}", claim_key, self.events_key],
                args=[
                    limit_count,
                    window,
                    max(1, claim.ttl) if claim else 0,
                    payload,
                    replayed,
                    record.id,
                ],
            )
        except self._errors as exc:
            raise ScanStateUnavailable(str(exc)) from exc
        if result == 2:
            return Outcome(Admission.THROTTLED, retry_after)
        return Outcome(Admission.REPLAYED if result == 1 else Admission.RECORDED)

    def flush(self, store: Store, *, budget: float = 20) -> int:
        client = redis_client()
        token = uuid.uuid4().hex
        if not client.set(self.lock_key, token, nx=True, ex=self.lock_seconds):
            return 0
        moved = 0
        deadline = time.monotonic() + min(budget, self.lock_seconds / 2)
        try:
            while time.monotonic() < deadline:
                raw = client.lrange(self.events_key, 0, self.batch - 1)
                if not raw:
                    break
                records = []
                for item in raw:
                    try:
                        records.append(ScanRecord.from_json(item))
                    except (ValueError, TypeError) as exc:
                        logger.error("dropping an unreadable scan event %r: %s", item[:200], exc)
                store(records)
                if not self._trim(
                    keys=[self.events_key, self.lock_key],
                    args=[token, len(raw), self.lock_seconds],
                ):
                    logger.warning("scan event flush lost its lock; the next flush takes over")
                    break
                moved += len(records)
        finally:
            self._release(keys=[self.lock_key], args=[token])
        return moved

    def pending(self) -> int:
        try:
            return int(redis_client().llen(self.events_key))
        except self._errors as exc:
            raise ScanStateUnavailable(str(exc)) from exc


@functools.cache
def get_recorder() -> ScanRecorder:
    return import_string(settings.QR_SCAN_RECORDER)()


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: object) -> None:
    if setting in ("QR_SCAN_RECORDER", "QR_SCAN_BUFFER_KEY", "REDIS_URL", "CACHES"):
        get_recorder.cache_clear()

"""The callbacks' inbox in Redis (``PAYMENTS_NOTIFY_INBOX=redis``).

Before a callback is acknowledged it is checked against its order (exists,
channel, amount, already paid with this transaction) and written down. In
PostgreSQL that is a ``SELECT`` and an ``INSERT`` per callback, which costs
the database about as much CPU as a whole bare request costs the web. Here
both are Redis instead:

- **Order facts** (:class:`OrderFacts`): what a callback is checked against,
  written when the order is opened and whenever its status changes (after
  commit), for a day past the order's expiry. A missing entry (an older
  order, Redis flushed) is read from the database and written back, never
  over a newer one: the facts are a copy, never the truth. A stale one
  cannot let a wrong callback through: channel and amount never change,
  and the worker applies under the order's lock, where a repeat is found
  whatever the facts said.
- **The inbox**: a Redis stream. An authentic callback that fits a pending
  order (or repeats the order's charge) is appended by one script that also
  counts the caller and sets the worker's nudge mark (``OFFER_SCRIPT``: one
  round trip), and acknowledged. A worker moves the entries into
  :class:`NotifyLog` rows, many per ``INSERT``, each once (the entry id is
  a unique column, so a move repeated after a crash adds nothing; an entry
  the database refuses is set aside), deletes them from the stream and
  applies the received ones as before.

What this trades: an acknowledged callback lives only in Redis until a
worker moves it, normally milliseconds. Run Redis with ``appendonly yes``
for the inbox to survive a restart; if it is lost anyway, the payment is
not: its order was pending, and a pending order with no applied callback
is queried at its channel by the payments sweep (主动查单) and paid from
the channel's answer. Only the log row of that callback is missing. A
success for an order closed or failed meanwhile, whose callback is the only
word of it, is never left to Redis (see
:func:`payments.notifications._may_wait_in_redis`). Redis unavailable when
a callback arrives: the callback takes the database path, nothing is
refused.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from config.api import ThrottleWindow
from config.redis_client import REDIS_ERRORS, LuaScript, redis_client, redis_key
from payments.models import NotifyLog, OrderStatus, PaymentOrder

logger = logging.getLogger(__name__)

# Facts are kept this long after an order's expiry, for late callbacks;
# later ones read the database.
FACTS_GRACE_SECONDS = 24 * 3600
# Bound on the stream should no worker move it for a long while (the
# sweep's query brings the money in regardless); far above any backlog a
# working deployment builds.
STREAM_MAX = 1_000_000


def enabled() -> bool:
    return bool(settings.PAYMENTS_NOTIFY_INBOX == "redis")


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What a callback is checked against before it is acknowledged."""

    channel: str
    amount_fen: int
    # The channel transaction id of the order's charge, once charged.
    transaction_id: str
    # The order is pending: a callback lost after it was acknowledged is
    # still found by the sweep's query (主动查单). For any other order the
    # callback is the only word of a payment: it goes to the database.
    pending: bool

    @classmethod
    def of(cls, order: PaymentOrder) -> OrderFacts:
        return cls(
            order.channel,
            order.amount_fen,
            order.provider_transaction_id or "",
            order.status == OrderStatus.PENDING,
        )

    def dumps(self) -> str:
        return f"{self.channel}|{self.amount_fen}|{self.transaction_id}|{int(self.pending)}"

    @classmethod
    def loads(cls, raw: bytes) -> OrderFacts:
        channel, amount, transaction_id, pending = raw.decode().rsplit("|", 3)
        return cls(channel, int(amount), transaction_id, pending == "1")


def facts_remember(order: PaymentOrder, *, unless_there: bool = False) -> None:
    """Write ``order``'s facts, after the transaction that changed them
    commits (``unless_there``: only where none are, for a copy read at the
    door, which must not overwrite a newer one). Best effort: missing facts
    are read from the database."""
    if not enabled():
        return
    facts = OrderFacts.of(order).dumps()
    key = facts_key(order.order_no)
    expires = order.expires_at + dt.timedelta(seconds=FACTS_GRACE_SECONDS)

    def write() -> None:
        ttl = int((expires - timezone.now()).total_seconds())
        if ttl <= 0:
            return
        try:
            redis_client().set(key, facts, ex=ttl, nx=unless_there)
        except REDIS_ERRORS as exc:
            logger.warning("order facts of %s not written: %s", order.order_no, exc)

    transaction.on_commit(write)


def facts_key(order_no: str) -> str:
    return f"{settings.PAYMENTS_INBOX_KEY_PREFIX}:order:{order_no}"


def stream_key() -> str:
    return f"{settings.PAYMENTS_INBOX_KEY_PREFIX}:notifies"


def refused_key() -> str:
    """Inbox entries that could not be read or that the database refused,
    set aside for an operator (their orders were pending when they came,
    so the sweep's query brings their payments in regardless)."""
    return f"{settings.PAYMENTS_INBOX_KEY_PREFIX}:notifies:refused"


# One round trip for a callback at the door: count the caller in its
# throttle window; read the order's facts; if they are one of the facts the
# caller says the callback is accepted under (each with its outcome), append
# the entry with that outcome and set the worker's nudge mark. Returns
# {count or nil, facts or nil, outcome appended or nil, 1 if the mark was set}.
OFFER_SCRIPT = """
local count = false
local limit = tonumber(ARGV[1])
if limit >= 0 then
  count = redis.call('INCR', KEYS[1])
  if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
  if count > limit then return {count, false, false, 0} end
end
local facts = redis.call('GET', KEYS[2])
if not facts then return {count, false, false, 0} end
local n = tonumber(ARGV[5])
for i = 0, n - 1 do
  if ARGV[6 + 2 * i] == facts then
    local outcome = ARGV[7 + 2 * i]
    local fields = {'outcome', outcome}
    for j = 6 + 2 * n, #ARGV do fields[#fields + 1] = ARGV[j] end
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
    local marked = redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[3])
    return {count, facts, outcome, marked and 1 or 0}
  end
end
return {count, facts, false, 0}
"""


@dataclass(frozen=True, slots=True)
class Offer:
    """What :func:`inbox_offer` found and did."""

    count: int | None  # the caller's count in its window (None: not counted)
    facts: OrderFacts | None  # None: not in Redis (or not read: over the rate)
    appended: str | None  # the outcome the entry was appended with, if it was
    marked: bool  # the nudge mark was set: a drain is due


_offer_script = LuaScript(OFFER_SCRIPT)


def inbox_offer(
    order_no: str,
    *,
    window: ThrottleWindow | None,
    accepted_under: dict[OrderFacts, str],
    entry: dict[str, str],
    nudge_key: str,
    nudge_seconds: int,
) -> Offer:
    """The door's one round trip (``OFFER_SCRIPT``): count the caller,
    read the order's facts and, when they are one of ``accepted_under``,
    append ``entry`` with that outcome and set the nudge mark. Otherwise
    the caller judges the facts and appends with :func:`inbox_add`. Raises
    one of REDIS_ERRORS when Redis cannot be asked."""
    expected = [
        value for facts, outcome in accepted_under.items() for value in (facts.dumps(), outcome)
    ]
    fields = [value for pair in entry.items() for value in pair]
    count, raw, appended, marked = _offer_script(
        keys=[
            redis_key(window.name) if window else redis_key(nudge_key),
            facts_key(order_no),
            stream_key(),
            redis_key(nudge_key),
        ],
        args=[
            window.allowed if window else -1,
            window.period + 1 if window else 0,
            nudge_seconds,
            STREAM_MAX,
            len(accepted_under),
            *expected,
            *fields,
        ],
    )
    return Offer(
        count=int(count) if count is not None else None,
        facts=OrderFacts.loads(raw) if raw else None,
        appended=appended.decode() if appended else None,
        marked=bool(marked),
    )


def inbox_add(entry: dict[str, str], *, nudge_key: str, nudge_seconds: int) -> bool:
    """Append one callback to the inbox and set the worker's nudge mark, in
    one round trip. Returns whether the mark was not set already (a drain
    is due). Raises one of REDIS_ERRORS when Redis cannot take it."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.xadd(stream_key(), entry, maxlen=STREAM_MAX, approximate=True)  # type: ignore[arg-type]  # str values are valid stream fields
    pipe.set(redis_key(nudge_key), 1, nx=True, ex=nudge_seconds)
    _entry_id, marked = pipe.execute()
    return bool(marked)


def inbox_move(*, limit: int) -> int:
    """Move up to ``limit`` inbox entries, oldest first, into NotifyLog
    rows (one ``INSERT`` for them all, entries moved before skipped), then
    delete them from the stream. An entry that cannot be read or that the
    database refuses is set aside (:func:`refused_key`) rather than holding
    the others. Returns how many entries were read."""
    client = redis_client()
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(stream_key(), count=limit))
    if not entries:
        return 0
    rows = [(entry_id, fields, _row(entry_id.decode(), fields)) for entry_id, fields in entries]
    refused = [(entry_id, fields) for entry_id, fields, row in rows if row is None]
    try:
        with transaction.atomic():
            NotifyLog.objects.bulk_create(
                [row for _id, _fields, row in rows if row], ignore_conflicts=True
            )
    except DatabaseError:
        # One entry the database refuses must not hold the others (nor the
        # sweep behind them): one by one.
        refused += [
            (entry_id, fields) for entry_id, fields, row in rows if row and not _insert(row)
        ]
    for entry_id, fields in refused:
        client.xadd(refused_key(), {b"id": entry_id, **fields})  # type: ignore[dict-item]
    client.xdel(stream_key(), *(entry_id for entry_id, _fields in entries))
    return len(entries)


def _insert(row: NotifyLog) -> bool:
    try:
        with transaction.atomic():
            NotifyLog.objects.bulk_create([row], ignore_conflicts=True)
    except DatabaseError as exc:
        logger.error(
            "inbox entry %s (order %s) refused by the database, set aside in %s: %s",
            row.inbox_id,
            row.order_no,
            refused_key(),
            exc,
        )
        return False
    return True


def inbox_size() -> int:
    return int(redis_client().xlen(stream_key()))


def _row(entry_id: str, fields: dict[bytes, bytes]) -> NotifyLog | None:
    try:
        data = {key.decode(): value.decode() for key, value in fields.items()}
        return NotifyLog(
            inbox_id=entry_id,
            channel=data["channel"],
            outcome=data["outcome"],
            order_no=data["order_no"],
            transaction_id=data["transaction_id"],
            client_ip=data["client_ip"] or None,
            body_excerpt=data["body_excerpt"],
            result=json.loads(data["result"]),
            received_at=dt.datetime.fromtimestamp(float(data["received_at"]), tz=dt.UTC),
        )
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        # Only our own code writes the stream; an entry it cannot read is
        # a bug to see, not a reason to stop the others.
        logger.error("unreadable inbox entry %s set aside: %s", entry_id, exc)
        return None


def entry(
    *,
    channel: str,
    order_no: str,
    transaction_id: str,
    client_ip: str | None,
    body_excerpt: str,
    result: dict[str, Any],
) -> dict[str, str]:
    """An inbox entry's fields but its outcome (what :func:`_row` reads
    back), in one order whatever the Python: the door's script appends
    them as they come."""
    return {
        "channel": channel,
        "order_no": order_no,
        "transaction_id": transaction_id,
        "client_ip": client_ip or "",
        "body_excerpt": body_excerpt,
        "result": json.dumps(result, ensure_ascii=False),
        "received_at": repr(timezone.now().timestamp()),
    }

"""Phone numbers and one-time login codes by SMS."""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import cache
from django.db import models, transaction
from django.utils import timezone, translation
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext_lazy as _

from accounts import pii
from accounts.errors import (
    ACCOUNT_SUSPENDED,
    OTP_ATTEMPTS_EXCEEDED,
    OTP_EXPIRED,
    OTP_INVALID,
    PHONE_INVALID,
    SMS_UNAVAILABLE,
    AccountsError,
)
from accounts.models import (
    OtpChallenge,
    User,
)
from accounts.sms import SmsDeliveryError, send_sms
from config.api import client_block
from config.errors import THROTTLED
from config.redis_client import REDIS_ERRORS, redis_client, redis_enabled, redis_key

logger = logging.getLogger(__name__)

# --- Phone numbers and one-time codes ----------------------------------------------

# ASCII digits only: Python's \d takes any script's digits (١٣٨…), and each
# spelling of one number would be another phone to the per-phone limits
# and another account.
_PHONE = re.compile(r"^1[3-9][0-9]{9}$")


def phone_normalize(raw: str) -> str:
    """``+86 138-0013-8000`` → ``13800138000`` (full-width ``１３８…`` too);
    anything else is refused."""
    phone = re.sub(r"[\s\-()]", "", unicodedata.normalize("NFKC", raw or ""))
    for prefix in ("+86", "0086", "86"):
        if phone.startswith(prefix) and len(phone) == len(prefix) + 11:
            phone = phone[len(prefix) :]
            break
    if not _PHONE.match(phone):
        raise AccountsError(PHONE_INVALID, errors={"phone": [str(PHONE_INVALID.title)]})
    return phone


def _otp_hash(phone: str, code: str) -> str:
    return salted_hmac("accounts.otp", f"{phone}:{code}", algorithm="sha256").hexdigest()


def _throttled(seconds: float) -> AccountsError:
    wait = max(1, int(seconds + 0.999))
    return AccountsError(
        THROTTLED,
        _("请求过于频繁，请 %(seconds)s 秒后再试") % {"seconds": wait},
        headers={"Retry-After": str(wait)},
        extra={"retry_after": wait},
    )


def _start_of_local_day(now: dt.datetime) -> dt.datetime:
    local = timezone.localtime(now)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _check_send_limits(phone: str, block: str | None, now: dt.datetime, others: int) -> None:
    """Raise 429 when a cap is reached; ``others``: the sends from ``block``
    under way (checked, not yet committed), counted with its rows."""
    interval = settings.OTP_SEND_INTERVAL_SECONDS
    day_start = _start_of_local_day(now)
    seconds_to_midnight = (day_start + dt.timedelta(days=1) - now).total_seconds()

    recent = OtpChallenge.objects.filter(phone=phone)
    last = recent.order_by("-created_at").values_list("created_at", flat=True).first()
    if last is not None and (now - last).total_seconds() < interval:
        raise _throttled(interval - (now - last).total_seconds())
    if recent.filter(created_at__gte=day_start).count() >= settings.OTP_SEND_DAILY_LIMIT_PER_PHONE:
        raise _throttled(seconds_to_midnight)

    if block:
        # A phone's day shared out: one network asks for at most a few of
        # its codes (the rule per phone above lets one send through at a
        # time, so the rows alone count them).
        from_block = recent.filter(ip_block=block, created_at__gte=day_start).count()
        if from_block >= settings.OTP_SEND_DAILY_LIMIT_PER_PHONE_PER_IP:
            raise _throttled(seconds_to_midnight)

        # By the client's block, as the throttles count it: an IPv6 host may
        # take any address of its /64, and each would get its own caps.
        by_ip = OtpChallenge.objects.filter(ip_block=block)
        hour_ago = now - dt.timedelta(hours=1)
        last_hour = by_ip.filter(created_at__gte=hour_ago)
        if last_hour.count() + others >= settings.OTP_SEND_HOURLY_LIMIT_PER_IP:
            oldest = last_hour.aggregate(oldest=models.Min("created_at"))["oldest"] or now
            raise _throttled(3600 - (now - oldest).total_seconds())
        today = by_ip.filter(created_at__gte=day_start).count()
        if today + others >= settings.OTP_SEND_DAILY_LIMIT_PER_IP:
            raise _throttled(seconds_to_midnight)


# Longer than a send takes (the gateway answers within seconds); a send
# left behind by a killed process stops counting after it.
_UNDER_WAY_SECONDS = 60


@contextmanager
def _sends_under_way(block: str | None) -> Iterator[int]:
    """Count one more send from ``block`` under way while the block runs;
    it gives how many others were already under way.

    A send's row commits only after the gateway has answered: counted from
    the rows alone, every request of a burst from one address would pass
    the caps while the first ones wait for the gateway. The count is taken
    before the rows are read, so of two simultaneous sends the later one
    sees the earlier (once as a row and as under way, at worst: never less).

    Each send is its own entry with its start time, not a share of one
    counter: a send that outlives its time leaves, and takes nothing off
    the sends that began after it.
    """
    if not block:
        yield 0
        return
    key = f"otp-send-under-way:{block}"
    entry = secrets.token_hex(8)
    others = _under_way_start(key, entry)
    try:
        yield others
    finally:
        _under_way_end(key, entry)


# The block's sends under way as one sorted set (entry → start time): those
# older than the time left are dropped, this one added, the others counted.
_UNDER_WAY_START = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1] - ARGV[3])
redis.call('zadd', KEYS[1], ARGV[1], ARGV[2])
redis.call('expire', KEYS[1], ARGV[3])
return redis.call('zcard', KEYS[1]) - 1
"""

# Without Redis the cache is each process's own memory (LocMemCache): the
# sends under way are kept the same way, in the process, under a lock.
_local_under_way: dict[str, dict[str, float]] = {}
_local_under_way_lock = threading.Lock()


def _under_way_start(key: str, entry: str) -> int:
    """Add ``entry`` to the sends under way of ``key``; how many others
    are under way (0 if Redis cannot say: then only the rows count)."""
    now = time.time()
    if redis_enabled():
        try:
            return int(
                redis_client().eval(
                    _UNDER_WAY_START, 1, redis_key(key), now, entry, _UNDER_WAY_SECONDS
                )
            )
        except REDIS_ERRORS as exc:
            logger.warning("OTP sends under way not counted: %s", exc)
            return 0
    with _local_under_way_lock:
        sends = _local_under_way.setdefault(key, {})
        for stale in [e for e, started in sends.items() if started <= now - _UNDER_WAY_SECONDS]:
            del sends[stale]
        others = len(sends)
        sends[entry] = now
        return others


def _under_way_end(key: str, entry: str) -> None:
    if redis_enabled():
        try:
            redis_client().zrem(redis_key(key), entry)
        except REDIS_ERRORS as exc:
            logger.warning("OTP send under way not taken off: %s", exc)
        return
    with _local_under_way_lock:
        sends = _local_under_way.get(key, {})
        sends.pop(entry, None)
        if not sends:
            _local_under_way.pop(key, None)


def otp_send(*, phone: str, ip: str | None = None) -> OtpChallenge:
    """Send a login code by SMS.

    The same whether or not the phone has an account. Limits: one code per
    phone per ``OTP_SEND_INTERVAL_SECONDS``, daily caps per phone and per
    client address, an hourly cap per address, and of a phone's daily
    codes at most ``OTP_SEND_DAILY_LIMIT_PER_PHONE_PER_IP`` asked for from
    one address (429 with ``Retry-After``); an address counts by its
    :func:`config.api.client_block`, an IPv6 client's by its /64.

    The limits per phone protect the SMS budget and the phone's owner from
    a flood of messages, and anyone who knows the number can spend them:
    each code a stranger asks for makes the owner wait up to
    ``OTP_SEND_INTERVAL_SECONDS`` (60 s) before asking for one, and a
    stranger asking from ``ceil(OTP_SEND_DAILY_LIMIT_PER_PHONE /
    OTP_SEND_DAILY_LIMIT_PER_PHONE_PER_IP)`` (4) networks uses up the
    phone's day (10 codes): the owner then gets none until midnight, China
    time. The codes the stranger asked for reach the owner's phone, but
    the stranger burns each with wrong codes from the network that asked
    for it. A stranger behind the owner's own address (a carrier's shared
    IPv4) spends that network's share, and its caps per address, as the
    owner would. Nothing here tells the owner asking from a stranger asking:
    that takes a challenge only a person passes (a CAPTCHA, a slider) in
    front of this call, or the app's own attestation of the device, which
    the API does not have.

    A new code replaces the earlier ones asked for from the same network
    (client block); those asked for from other networks stay open until
    they are used or burned, expire, or a login ends them. A stranger who
    asks for a code for someone else's number (it reaches that number's
    phone, not the stranger) so leaves the code its owner asked for valid;
    the one-a-minute rule per phone keeps at most
    ``OTP_TTL_SECONDS / OTP_SEND_INTERVAL_SECONDS`` (5) codes of a phone
    open at once, and :func:`otp_login` counts a wrong code against each.
    """
    phone = phone_normalize(phone)
    block = client_block(ip)
    with _sends_under_way(block) as others:
        return _send(phone=phone, ip=ip, block=block, others=others)


def send_gate_key(phone: str) -> str:
    """The cache key that lets one send for ``phone`` through at a time,
    named by a keyed digest of the phone: the cache's key names (Redis's,
    listed by anyone with access to it) are no place for phone numbers."""
    return f"otp-send-gate:{pii.blind_index(phone, purpose='otp_send_gate')}"


def _send(*, phone: str, ip: str | None, block: str | None, others: int) -> OtpChallenge:
    now = timezone.now()
    _check_send_limits(phone, block, now, others)
    # The database check above is the rule; this atomic gate stops two
    # simultaneous requests for one phone from both passing it.
    gate = send_gate_key(phone)
    if not cache.add(gate, 1, timeout=settings.OTP_SEND_INTERVAL_SECONDS):
        raise _throttled(settings.OTP_SEND_INTERVAL_SECONDS)

    code = f"{secrets.randbelow(10**6):06d}"
    try:
        with transaction.atomic():
            OtpChallenge.objects.filter(
                phone=phone, ip_block=block or "", closed_at__isnull=True
            ).update(closed_at=now, close_reason=OtpChallenge.CloseReason.SUPERSEDED)
            challenge = OtpChallenge.objects.create(
                phone=phone,
                code_hash=_otp_hash(phone, code),
                ip=ip,
                ip_block=block or "",
                created_at=now,
                expires_at=now + dt.timedelta(seconds=settings.OTP_TTL_SECONDS),
            )
            minutes = settings.OTP_TTL_SECONDS // 60
            with translation.override(settings.LANGUAGE_CODE):
                text = str(
                    _("您的登录验证码是 %(code)s，%(minutes)s 分钟内有效。请勿告诉他人。")
                    % {"code": code, "minutes": minutes}
                )
            send_sms(to=phone, text=text)
    except SmsDeliveryError as exc:
        cache.delete(gate)
        raise AccountsError(SMS_UNAVAILABLE) from exc
    return challenge


def _tries_elsewhere() -> int:
    """Wrong codes that networks other than the one that asked for a code
    may type for it, all of them together: at most half of its tries, so
    that the network that asked always keeps the most of them."""
    return settings.OTP_MAX_ATTEMPTS // 2


def _tries_left(challenge: OtpChallenge, block: str) -> int:
    """The wrong codes ``challenge`` still takes from the network ``block``."""
    left = settings.OTP_MAX_ATTEMPTS - challenge.attempts
    if block != challenge.ip_block:
        left = min(left, _tries_elsewhere() - challenge.attempts_elsewhere)
    return max(left, 0)


def otp_login(*, phone: str, code: str, ip: str | None = None) -> User:
    """Check a login code and return the citizen, created on first login.

    The code is checked against every open code of the phone (one per
    network that asked, see :func:`otp_send`), and each wrong code counts
    against each of them. A code takes ``OTP_MAX_ATTEMPTS`` wrong codes in
    all (5: the fifth burns it, and a new SMS is needed), but networks
    other than the one that asked for it (``ip``'s
    :func:`config.api.client_block`, as the throttles count it) only
    ``OTP_MAX_ATTEMPTS // 2`` of them together (2): after that it answers
    ``otp_attempts_exceeded`` to them and stays open, with at least 3
    tries, to the network that asked.

    So a stranger who knows the number cannot lock its owner out by typing
    wrong codes: from anywhere else they use at most 2 of the 5 tries of
    the code the owner asked for, however many networks they use. Guessing
    stays as hard as before: at most 5 wrong codes against any one code.
    The network is the client's as far as ``NUM_PROXIES`` lets
    :func:`config.api.client_ip` see it: a stranger behind the same
    address as the owner (a carrier's shared IPv4, or every client when
    the proxies in front are not declared) counts as the owner.
    A phone that changed networks between asking and typing has the 2
    tries of elsewhere; after them it asks for a code where it is now.
    """
    phone = phone_normalize(phone)
    # Full-width digits (１２３…) as ASCII, as for the phone; other scripts'
    # digits are not a code ([0-9], not \d): refused before a try is used.
    code = unicodedata.normalize("NFKC", code or "").strip()
    if not re.fullmatch(r"[0-9]{6}", code):
        raise AccountsError(OTP_INVALID, errors={"code": [str(_("验证码为 6 位数字"))]})
    block = client_block(ip) or ""
    now = timezone.now()
    with transaction.atomic():
        challenges = list(
            OtpChallenge.objects.select_for_update()
            .filter(phone=phone, closed_at__isnull=True, expires_at__gt=now)
            .order_by("created_at", "pk")
        )
        if not challenges:
            raise AccountsError(OTP_EXPIRED)
        tried = [c for c in challenges if _tries_left(c, block) > 0]
        if not tried:
            raise AccountsError(OTP_ATTEMPTS_EXCEEDED)
        digest = _otp_hash(phone, code)
        matches = [constant_time_compare(c.code_hash, digest) for c in tried]
        if any(matches):
            used = tried[matches.index(True)]
            # The login ends every open code of the phone.
            for challenge in challenges:
                challenge.closed_at = now
                challenge.close_reason = (
                    OtpChallenge.CloseReason.USED
                    if challenge is used
                    else OtpChallenge.CloseReason.SUPERSEDED
                )
            OtpChallenge.objects.bulk_update(challenges, ["closed_at", "close_reason"])
            return _citizen_for_phone(phone)
        for challenge in tried:
            challenge.attempts += 1
            if block != challenge.ip_block:
                challenge.attempts_elsewhere += 1
            if challenge.attempts >= settings.OTP_MAX_ATTEMPTS:
                challenge.closed_at = now
                challenge.close_reason = OtpChallenge.CloseReason.BURNED
        OtpChallenge.objects.bulk_update(
            tried, ["attempts", "attempts_elsewhere", "closed_at", "close_reason"]
        )
        left = max(_tries_left(c, block) for c in tried)
    # Raised after the block so the counted attempts are committed.
    if left <= 0:
        raise AccountsError(OTP_ATTEMPTS_EXCEEDED)
    raise AccountsError(
        OTP_INVALID,
        _("验证码错误，还可尝试 %(left)s 次") % {"left": left},
        errors={"code": [str(OTP_INVALID.title)]},
        extra={"attempts_left": left},
    )


def _citizen_for_phone(phone: str) -> User:
    user = User.objects.filter(phone=phone).first()
    if user is None:
        user = User(phone=phone)
        user.set_unusable_password()
        user.save()
        return user
    if not user.is_active:
        raise AccountsError(ACCOUNT_SUSPENDED)
    return user


def otp_challenges_purge(*, older_than: dt.timedelta = dt.timedelta(days=2)) -> int:
    """Delete challenges no limit looks at any more."""
    deleted, _ = OtpChallenge.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted


def otp_challenges_erase(user: User) -> None:
    """A closing account's login codes go with its phone number."""
    if user.phone:
        OtpChallenge.objects.filter(phone=user.phone).delete()

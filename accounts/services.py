"""Every state change of the accounts app."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, models, transaction
from django.db.models.functions import Now
from django.utils import timezone, translation
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import BlacklistMixin, RefreshToken, UntypedToken
from rest_framework_simplejwt.utils import datetime_from_epoch

from accounts import citizen_data, idnumber, pii
from accounts.errors import (
    ACCOUNT_SUSPENDED,
    ALREADY_VERIFIED,
    ID_NUMBER_INVALID,
    ID_NUMBER_TAKEN,
    IDENTITY_MISMATCH,
    IDENTITY_PROVIDER_UNAVAILABLE,
    NAME_INVALID,
    OTP_ATTEMPTS_EXCEEDED,
    OTP_EXPIRED,
    OTP_INVALID,
    PHONE_INVALID,
    SMS_UNAVAILABLE,
    AccountsError,
)
from accounts.identity import IdentityProviderUnavailable, get_provider
from accounts.models import (
    ApiKey,
    ApiKeyScope,
    AuditEntry,
    Department,
    IdentityLevel,
    Message,
    OtpChallenge,
    User,
)
from accounts.sms import SmsDeliveryError, send_sms
from config.api import ACCOUNT_INACTIVE, NOT_FOUND, THROTTLED, TOKEN_INVALID

# --- Audit trail ------------------------------------------------------------------


def _actor_fields(actor: User | ApiKey | None) -> dict[str, str]:
    if actor is None:
        return {"actor_kind": AuditEntry.ActorKind.SYSTEM, "actor_id": "", "actor_label": ""}
    if isinstance(actor, ApiKey):
        return {
            "actor_kind": AuditEntry.ActorKind.API_KEY,
            "actor_id": str(actor.pk),
            "actor_label": f"{actor.department.code}:mcs_{actor.prefix}",
        }
    kind = AuditEntry.ActorKind.OPERATOR if actor.is_staff else AuditEntry.ActorKind.CITIZEN
    return {"actor_kind": kind, "actor_id": str(actor.pk), "actor_label": str(actor)}


def audit_record(
    *,
    actor: User | ApiKey | None,
    action: str,
    target: models.Model | None = None,
    data: Mapping[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEntry:
    """Append one entry to the audit trail. ``data`` must not hold raw PII."""
    target_fields = {}
    if target is not None:
        target_fields = {"target_type": target._meta.label_lower, "target_id": str(target.pk)}
    return AuditEntry.objects.create(
        action=action, data=dict(data or {}), ip=ip, **_actor_fields(actor), **target_fields
    )


# --- Phone numbers and one-time codes ----------------------------------------------

_PHONE = re.compile(r"^1[3-9]\d{9}$")


def normalize_phone(raw: str) -> str:
    """``+86 138-0013-8000`` → ``13800138000``; anything else is refused."""
    phone = re.sub(r"[\s\-()]", "", raw or "")
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


def _check_send_limits(phone: str, ip: str | None, now: dt.datetime) -> None:
    interval = settings.OTP_SEND_INTERVAL_SECONDS
    day_start = _start_of_local_day(now)
    seconds_to_midnight = (day_start + dt.timedelta(days=1) - now).total_seconds()

    recent = OtpChallenge.objects.filter(phone=phone)
    last = recent.order_by("-created_at").values_list("created_at", flat=True).first()
    if last is not None and (now - last).total_seconds() < interval:
        raise _throttled(interval - (now - last).total_seconds())
    if recent.filter(created_at__gte=day_start).count() >= settings.OTP_SEND_DAILY_LIMIT_PER_PHONE:
        raise _throttled(seconds_to_midnight)

    if ip:
        by_ip = OtpChallenge.objects.filter(ip=ip)
        hour_ago = now - dt.timedelta(hours=1)
        last_hour = by_ip.filter(created_at__gte=hour_ago)
        if last_hour.count() >= settings.OTP_SEND_HOURLY_LIMIT_PER_IP:
            oldest = last_hour.aggregate(oldest=models.Min("created_at"))["oldest"]
            raise _throttled(3600 - (now - oldest).total_seconds())
        if by_ip.filter(created_at__gte=day_start).count() >= settings.OTP_SEND_DAILY_LIMIT_PER_IP:
            raise _throttled(seconds_to_midnight)


def otp_send(*, phone: str, ip: str | None = None) -> OtpChallenge:
    """Send a login code by SMS.

    The same whether or not the phone has an account. Limits: one code per
    phone per ``OTP_SEND_INTERVAL_SECONDS``, daily caps per phone and per
    client address, an hourly cap per address (429 with ``Retry-After``).
    A new code replaces any earlier one.
    """
    phone = normalize_phone(phone)
    now = timezone.now()
    _check_send_limits(phone, ip, now)
    # The database check above is the rule; this atomic gate stops two
    # simultaneous requests for one phone from both passing it.
    gate = f"otp-send-gate:{phone}"
    if not cache.add(gate, 1, timeout=settings.OTP_SEND_INTERVAL_SECONDS):
        raise _throttled(settings.OTP_SEND_INTERVAL_SECONDS)

    code = f"{secrets.randbelow(10**6):06d}"
    try:
        with transaction.atomic():
            OtpChallenge.objects.filter(phone=phone, closed_at__isnull=True).update(
                closed_at=now, close_reason=OtpChallenge.CloseReason.SUPERSEDED
            )
            challenge = OtpChallenge.objects.create(
                phone=phone,
                code_hash=_otp_hash(phone, code),
                ip=ip,
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


def otp_login(*, phone: str, code: str) -> User:
    """Check a login code and return the citizen, created on first login.

    Each wrong code counts; the fifth burns the challenge. Only the newest
    open challenge of the phone is considered.
    """
    phone = normalize_phone(phone)
    code = (code or "").strip()
    if not re.fullmatch(r"\d{6}", code):
        raise AccountsError(OTP_INVALID, errors={"code": [str(_("验证码为 6 位数字"))]})
    now = timezone.now()
    with transaction.atomic():
        challenge = (
            OtpChallenge.objects.select_for_update()
            .filter(phone=phone, closed_at__isnull=True)
            .order_by("-created_at")
            .first()
        )
        if challenge is None or challenge.expires_at <= now:
            raise AccountsError(OTP_EXPIRED)
        if constant_time_compare(challenge.code_hash, _otp_hash(phone, code)):
            challenge.closed_at = now
            challenge.close_reason = OtpChallenge.CloseReason.USED
            challenge.save(update_fields=["closed_at", "close_reason"])
            return _citizen_for_phone(phone)
        challenge.attempts += 1
        left = settings.OTP_MAX_ATTEMPTS - challenge.attempts
        if left <= 0:
            challenge.closed_at = now
            challenge.close_reason = OtpChallenge.CloseReason.BURNED
        challenge.save(update_fields=["attempts", "closed_at", "close_reason"])
    # Raised after the block so the counted attempt is committed.
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


def purge_otp_challenges(*, older_than: dt.timedelta = dt.timedelta(days=2)) -> int:
    """Delete challenges no limit looks at any more."""
    deleted, _ = OtpChallenge.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted


# --- Tokens --------------------------------------------------------------------------


def token_fingerprint(raw: str) -> str:
    """What the database keeps of a refresh token: enough to tell two apart,
    never enough to use one."""
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()[:32]


class CitizenRefreshToken(RefreshToken):
    """simplejwt's refresh token, listed as outstanding under its fingerprint
    (the stock token stores the whole token, which anyone reading the table
    or the admin could use)."""

    @classmethod
    def for_user(cls, user: User) -> CitizenRefreshToken:  # type: ignore[override]
        # Token.for_user builds the claims; BlacklistMixin.for_user, skipped
        # here, would store the token itself.
        token = super(BlacklistMixin, cls).for_user(user)
        OutstandingToken.objects.create(
            user=user,
            jti=token[api_settings.JTI_CLAIM],
            token=token_fingerprint(str(token)),
            created_at=token.current_time,
            expires_at=datetime_from_epoch(token["exp"]),
        )
        return token

    def outstand(self) -> OutstandingToken:
        outstanding, _ = OutstandingToken.objects.get_or_create(
            jti=self.payload[api_settings.JTI_CLAIM],
            defaults={
                "user": User.objects.filter(
                    pk=self.payload.get(api_settings.USER_ID_CLAIM)
                ).first(),
                "created_at": self.current_time,
                "token": token_fingerprint(str(self)),
                "expires_at": datetime_from_epoch(self.payload["exp"]),
            },
        )
        return outstanding

    def blacklist(self) -> tuple[BlacklistedToken, bool]:
        return BlacklistedToken.objects.get_or_create(token=self.outstand())


def tokens_issue(*, user: User) -> dict[str, str]:
    refresh = CitizenRefreshToken.for_user(user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def tokens_revoke_all(*, user: User) -> int:
    """Revoke every refresh token of the user (access tokens stop at expiry,
    or at once when the account is no longer active)."""
    live = OutstandingToken.objects.filter(
        user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    created = BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in live], ignore_conflicts=True
    )
    return len(created)


def _user_of_spent_token(raw: str) -> User | None:
    """The owner of a correctly signed, unexpired but already revoked token."""
    try:
        payload = UntypedToken(raw).payload
    except TokenError:
        return None
    jti = payload.get("jti")
    if jti and BlacklistedToken.objects.filter(token__jti=jti).exists():
        return User.objects.filter(pk=payload.get("user_id")).first()
    return None


def token_refresh(*, refresh: str) -> dict[str, str]:
    """Trade a refresh token for a new pair; the old one is revoked.

    Presenting a refresh token that was already used or revoked means it
    leaked or a client misbehaves: every session of that user is revoked.
    """
    try:
        token = CitizenRefreshToken(refresh)
    except TokenError as exc:
        reused_by = _user_of_spent_token(refresh)
        if reused_by is not None:
            tokens_revoke_all(user=reused_by)
        raise AccountsError(TOKEN_INVALID) from exc
    with transaction.atomic():
        outstanding = OutstandingToken.objects.select_for_update().filter(jti=token["jti"]).first()
        if outstanding is None or BlacklistedToken.objects.filter(token=outstanding).exists():
            reuse = True
        else:
            reuse = False
            user = User.objects.filter(pk=token.get("user_id")).first()
            if user is None or not user.is_active:
                raise AccountsError(ACCOUNT_INACTIVE)
            BlacklistedToken.objects.create(token=outstanding)
            pair = tokens_issue(user=user)
    if reuse:
        owner = User.objects.filter(pk=token.get("user_id")).first()
        if owner is not None:
            tokens_revoke_all(user=owner)
        raise AccountsError(TOKEN_INVALID)
    return pair


def token_revoke(*, refresh: str) -> None:
    """Log out: revoke one refresh token."""
    try:
        token = CitizenRefreshToken(refresh)
    except TokenError as exc:
        raise AccountsError(TOKEN_INVALID) from exc
    token.blacklist()


# --- Profile, real name, closing ----------------------------------------------------------

_NAME = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ebef]+([·•][\u3400-\u9fff]+)*$")


def profile_update(*, user: User, nickname: str | None = None, email: str | None = None) -> User:
    fields = []
    if nickname is not None:
        user.nickname = nickname.strip()
        fields.append("nickname")
    if email is not None:
        user.email = email.strip()
        fields.append("email")
    if fields:
        user.save(update_fields=fields)
    return user


def _normalize_name(raw: str) -> str:
    name = re.sub(r"\s+", "", raw or "").replace("•", "·")
    if not (2 <= len(name) <= 30) or not _NAME.match(name):
        message = str(_("请填写身份证上的中文姓名"))
        raise AccountsError(NAME_INVALID, message, errors={"name": [message]})
    return name


def real_name_verify(*, user: User, name: str, id_number: str, ip: str | None = None) -> User:
    """Raise the account to identity level 2 after the identity bureau
    confirms that ``name`` and ``id_number`` belong together.

    One ID number per live account; the number is checked (GB 11643) before
    the bureau is asked, and stored encrypted with a blind index.
    """
    if user.identity_level >= IdentityLevel.REAL_NAME:
        raise AccountsError(ALREADY_VERIFIED)
    name = _normalize_name(name)
    try:
        number = idnumber.validate(id_number, today=timezone.localdate())
    except idnumber.IdNumberError as exc:
        raise AccountsError(ID_NUMBER_INVALID, str(exc), errors={"id_number": [str(exc)]}) from exc
    index = pii.blind_index(number, purpose="id_number")
    if User.objects.filter(id_number_index=index).exclude(pk=user.pk).exists():
        raise AccountsError(ID_NUMBER_TAKEN)
    try:
        check = get_provider().verify(name=name, id_number=number)
    except IdentityProviderUnavailable as exc:
        raise AccountsError(IDENTITY_PROVIDER_UNAVAILABLE) from exc
    if not check.matched:
        audit_record(
            actor=user,
            action="identity.real_name_mismatch",
            target=user,
            data={"provider_reference": check.reference},
            ip=ip,
        )
        raise AccountsError(IDENTITY_MISMATCH)

    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        if locked.identity_level >= IdentityLevel.REAL_NAME:
            raise AccountsError(ALREADY_VERIFIED)
        locked.real_name = name
        locked.id_number = number
        locked.id_number_index = index
        locked.identity_level = IdentityLevel.REAL_NAME
        locked.real_name_verified_at = timezone.now()
        try:
            with transaction.atomic():
                locked.save(
                    update_fields=[
                        "real_name",
                        "id_number",
                        "id_number_index",
                        "identity_level",
                        "real_name_verified_at",
                    ]
                )
        except IntegrityError as exc:
            raise AccountsError(ID_NUMBER_TAKEN) from exc
        audit_record(
            actor=locked,
            action="identity.real_name_verified",
            target=locked,
            data={"provider_reference": check.reference},
            ip=ip,
        )
    return locked


@transaction.atomic
def account_close(*, user: User, ip: str | None = None) -> None:
    """Close the citizen's account at their request.

    Every section of the citizen's data (:mod:`accounts.citizen_data`) runs
    its erase hook in this transaction: personal data is erased (the phone
    and ID number become free for a new account), the inbox is emptied,
    stored events keep only the pseudonymous subject; rows that other
    records point at stay, pseudonymised under the account's opaque id.
    Every token is revoked.
    """
    locked = User.objects.select_for_update().get(pk=user.pk)
    if locked.closed_at is not None:
        return
    citizen_data.erase(locked)
    locked.is_active = False
    # The database's clock, as every deactivation stamp: offline scanners
    # page through them by time, whichever web node wrote them.
    locked.closed_at = locked.deactivated_at = Now()
    locked.set_unusable_password()
    locked.save(update_fields=["is_active", "closed_at", "deactivated_at", "password"])
    locked.refresh_from_db(fields=["closed_at", "deactivated_at"])
    tokens_revoke_all(user=locked)
    audit_record(actor=locked, action="account.closed", target=locked, ip=ip)


def profile_erase(user: User) -> None:
    """The account's personal data goes; its opaque id and pseudonymous
    subject stay (departments and scanners know the account by them)."""
    user.phone = None
    user.nickname = ""
    user.email = ""
    user.real_name = ""
    user.id_number = ""
    user.id_number_index = None
    user.save(
        update_fields=["phone", "nickname", "email", "real_name", "id_number", "id_number_index"]
    )


def messages_erase(user: User) -> None:
    Message.objects.filter(user=user).delete()


def user_set_active(*, user: User, active: bool, actor: User | None, ip: str | None = None) -> User:
    """Suspend or reinstate an account (operators). Suspension revokes tokens."""
    if user.closed_at is not None and active:
        raise AccountsError(ACCOUNT_INACTIVE, _("已注销的账户不能恢复"))
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(
            is_active=active, deactivated_at=None if active else Now()
        )
        user.refresh_from_db(fields=["is_active", "deactivated_at"])
        if not active:
            tokens_revoke_all(user=user)
        audit_record(
            actor=actor,
            action="account.reinstated" if active else "account.suspended",
            target=user,
            ip=ip,
        )
    return user


def pii_reveal(*, subject: User, operator: User, ip: str | None = None) -> dict[str, str]:
    """Full personal data of ``subject`` for an operator holding
    ``accounts.view_pii``. Every look is written to the audit trail."""
    if not operator.has_perm("accounts.view_pii"):
        raise PermissionDenied("accounts.view_pii is required")
    audit_record(actor=operator, action="user.pii_viewed", target=subject, ip=ip)
    return {
        "phone": subject.phone or "",
        "real_name": subject.real_name,
        "id_number": subject.id_number,
    }


# --- Inbox ------------------------------------------------------------------------------


def _in_every_language(text: Promise | str, params: Mapping[str, Any] | None) -> dict[str, str]:
    rendered = {}
    for code, _name in settings.LANGUAGES:
        with translation.override(code):
            values = {key: str(value) for key, value in (params or {}).items()}
            rendered[code] = str(text) % values if values else str(text)
    return rendered


def message_post(
    *,
    user: User,
    kind: str,
    title: Promise | str,
    body: Promise | str,
    params: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> Message:
    """Post a message to a citizen's inbox (what other apps call).

    ``title`` and ``body`` are translatable templates (``gettext_lazy``) with
    ``%(name)s`` placeholders filled from ``params``; they are rendered once
    per supported language, so each reader sees their own.
    """
    return Message.objects.create(
        user=user,
        kind=kind,
        title=_in_every_language(title, params),
        body=_in_every_language(body, params),
        data=dict(data or {}),
    )


def message_mark_read(*, user: User, message_id: Any) -> Message:
    message = Message.objects.filter(user=user, pk=message_id).first()
    if message is None:
        raise AccountsError(NOT_FOUND)
    if message.read_at is None:
        message.read_at = timezone.now()
        message.save(update_fields=["read_at"])
    return message


def messages_mark_all_read(*, user: User) -> int:
    return Message.objects.filter(user=user, read_at__isnull=True).update(read_at=timezone.now())


# --- Departments and API keys -------------------------------------------------------------


def department_ensure(
    *, code: str, name: str, actor: User | None = None, **fields: Any
) -> tuple[Department, bool]:
    """Create the department, or bring its name up to date (idempotent)."""
    with transaction.atomic():
        department, created = Department.objects.get_or_create(
            code=code, defaults={"name": name, **fields}
        )
        if created:
            audit_record(
                actor=actor, action="department.created", target=department, data={"name": name}
            )
        elif department.name != name:
            old = department.name
            department.name = name
            department.save(update_fields=["name"])
            audit_record(
                actor=actor,
                action="department.renamed",
                target=department,
                data={"from": old, "to": name},
            )
    return department, created


API_KEY_PREFIX = "mcs"


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
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or len(parts[1]) != 8:
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

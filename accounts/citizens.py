"""A citizen's account: profile, real name, suspension, closing, audited look-ups."""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts import citizen_data, idnumber, pii, token_facts
from accounts.audit import audit_record
from accounts.errors import (
    ACCOUNT_PRIVILEGED,
    ALREADY_VERIFIED,
    ID_NUMBER_INVALID,
    ID_NUMBER_TAKEN,
    IDENTITY_MISMATCH,
    IDENTITY_PROVIDER_UNAVAILABLE,
    NAME_INVALID,
    AccountsError,
)
from accounts.identity import IdentityProviderUnavailable, get_provider
from accounts.models import (
    IdentityLevel,
    User,
)
from accounts.privileges import account_check_manageable, account_is_privileged
from accounts.tokens import tokens_revoke_all
from config.errors import ACCOUNT_INACTIVE

# --- Profile, real name, closing ----------------------------------------------------------

# CJK Unified Ideographs, Extension A and Extensions B-F (not the Yijing
# hexagram symbols between A and the main block), before and after each dot.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ebef"
_NAME = re.compile(rf"[{_HAN}]+(?:[·•][{_HAN}]+)*")


def profile_update(*, user: User, nickname: str | None = None, email: str | None = None) -> User:
    fields = []
    if nickname is not None:
        user.nickname = nickname.strip()
        fields.append("nickname")
    if email is not None:
        user.email = email.strip()
        fields.append("email")
    if fields:
        # Only onto an account still open: a change racing the account's
        # closing must not write personal data back after it was erased.
        changed = User.objects.filter(pk=user.pk, is_active=True, closed_at__isnull=True).update(
            **{name: getattr(user, name) for name in fields}
        )
        if not changed:
            raise AccountsError(ACCOUNT_INACTIVE)
    return user


def _normalize_name(raw: str) -> str:
    name = re.sub(r"\s+", "", raw or "").replace("•", "·")
    if not (2 <= len(name) <= 30) or not _NAME.fullmatch(name):
        message = str(_("请填写身份证上的中文姓名"))
        raise AccountsError(NAME_INVALID, message, errors={"name": [message]})
    return name


def real_name_verify(*, user: User, name: str, id_number: str, ip: str | None = None) -> User:
    """Raise the account to identity level 2 after the identity bureau
    confirms that ``name`` and ``id_number`` belong together.

    One ID number per live account; the number is checked (GB 11643) before
    the bureau is asked, and stored encrypted with a blind index. Whether
    another account holds it is told only once the bureau has confirmed
    the pair: asked before, it told anyone with an account whether a
    stranger's number was registered here, without knowing their name.
    """
    if user.identity_level >= IdentityLevel.REAL_NAME:
        raise AccountsError(ALREADY_VERIFIED)
    name = _normalize_name(name)
    try:
        number = idnumber.validate(id_number, today=timezone.localdate())
    except idnumber.IdNumberError as exc:
        raise AccountsError(ID_NUMBER_INVALID, str(exc), errors={"id_number": [str(exc)]}) from exc
    index = pii.blind_index(number, purpose="id_number")
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
    if User.objects.filter(id_number_index=index).exclude(pk=user.pk).exists():
        raise AccountsError(ID_NUMBER_TAKEN)

    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        if not locked.is_active or locked.closed_at is not None:
            # Closed or suspended while the bureau answered: nothing of the
            # person may be written back (it would hold the ID number).
            raise AccountsError(ACCOUNT_INACTIVE)
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
        token_facts.citizen_changed(locked.pk)
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

    The account's row is locked ``FOR NO KEY UPDATE`` (the lock a citizen's
    own change takes, :func:`services.applications._hold_open_account`), so
    a change of the citizen's waits for the close or the close for it. Not
    ``FOR UPDATE``: that would also block the key check of a row that a
    department's report, a payment or a routed application writes for the
    citizen (a message) at its commit, while that transaction holds the
    application the close is about to lock, and PostgreSQL would abort one
    of the two. The row's phone, a key, changes last, once the close holds
    the applications.

    A privileged account (staff, superuser, holding powers) is refused
    (``account_privileged``): one with a phone logs in by SMS code like a
    citizen, but closed it could never be reinstated; it is the
    superusers' to suspend or delete in the admin.
    """
    locked = User.objects.select_for_update(no_key=True).get(pk=user.pk)
    if locked.closed_at is not None:
        return
    if account_is_privileged(locked):
        raise AccountsError(ACCOUNT_PRIVILEGED)
    citizen_data.erase(locked)
    locked.is_active = False
    # The database's clock, as every deactivation stamp: offline scanners
    # page through them by time, whichever web node wrote them.
    locked.closed_at = locked.deactivated_at = Now()
    locked.set_unusable_password()
    locked.save(update_fields=["is_active", "closed_at", "deactivated_at", "password"])
    locked.refresh_from_db(fields=["closed_at", "deactivated_at"])
    token_facts.citizen_changed(locked.pk)
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


def user_set_active(*, user: User, active: bool, actor: User | None, ip: str | None = None) -> User:
    """Suspend or reinstate an account (operators). Suspension revokes tokens.
    A privileged account is only a superuser's to suspend or reinstate.

    A closed account is never written to again: not reinstated, and not
    suspended either (its deactivation stamp, which offline scanners page
    by, stays the close's); ``account_inactive`` instead. Both are checked
    on the row as locked here, as :func:`account_close` locks it first
    (``FOR NO KEY UPDATE``): a close committed after the caller read
    ``user`` is seen, one starting now waits for this change."""
    with transaction.atomic():
        locked = User.objects.select_for_update(no_key=True).get(pk=user.pk)
        account_check_manageable(actor=actor, target=locked)
        if locked.closed_at is not None:
            raise AccountsError(ACCOUNT_INACTIVE, _("已注销的账户不能恢复") if active else None)
        User.objects.filter(pk=user.pk).update(
            is_active=active, deactivated_at=None if active else Now()
        )
        user.refresh_from_db(fields=["is_active", "deactivated_at"])
        token_facts.citizen_changed(user.pk)
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

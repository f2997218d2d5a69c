"""JWT pairs for citizens: issue, rotate, revoke."""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import BlacklistMixin, RefreshToken, UntypedToken
from rest_framework_simplejwt.utils import datetime_from_epoch

from accounts import token_facts
from accounts.errors import (
    ACCOUNT_SUSPENDED,
    AccountsError,
)
from accounts.models import (
    User,
)
from config.errors import ACCOUNT_INACTIVE, TOKEN_INVALID, ErrorCode
from config.purge import delete_in_batches

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
    def for_user(cls, user: User) -> CitizenRefreshToken:  # type: ignore[override]  # only citizens (our User) get refresh tokens
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
        user_id = self.payload.get(api_settings.USER_ID_CLAIM)
        outstanding, _ = OutstandingToken.objects.get_or_create(
            jti=self.payload[api_settings.JTI_CLAIM],
            defaults={
                "user": None if user_id is None else User.objects.filter(pk=user_id).first(),
                "created_at": self.current_time,
                "token": token_fingerprint(str(self)),
                "expires_at": datetime_from_epoch(self.payload["exp"]),
            },
        )
        return outstanding

    def blacklist(self) -> tuple[BlacklistedToken, bool]:  # type: ignore[override]  # as simplejwt's own, which returns the pair despite its annotation
        return BlacklistedToken.objects.get_or_create(token=self.outstand())


def _hold_open_account(user_id: Any) -> User | None:
    """The account, locked until the transaction ends, if it is active and
    open (None otherwise). ``FOR NO KEY UPDATE``, the lock a suspension
    (its ``UPDATE``) and :func:`accounts.citizens.account_close` take, so
    that a pair is made either before them, and their revocation sees its
    refresh token, or after them, and is refused; not ``FOR UPDATE``, which
    would also block the key check of rows written for the citizen (a
    message) meanwhile. Taken before any token row, in the order the
    suspension and the close take theirs (the account, then its tokens)."""
    held = User.objects.select_for_update(no_key=True).filter(pk=user_id).first()
    if held is None or not held.is_active or held.closed_at is not None:
        return None
    return held


def _pair_make(*, held: User) -> dict[str, str]:
    """A new access and refresh pair for ``held``, an account the caller's
    transaction holds active and open (:func:`_hold_open_account`): the
    login's or the refresh's own lock, not taken again here."""
    refresh = CitizenRefreshToken.for_user(held)
    access = refresh.access_token
    token_facts.facts_stamp(access, held)
    return {"access": str(access), "refresh": str(refresh)}


def tokens_issue(*, user: User, refusal: ErrorCode = ACCOUNT_INACTIVE) -> dict[str, str]:
    """A new access and refresh pair for ``user``, made while the account is
    held active and open (``refusal`` is raised otherwise): a suspension or
    a close racing it waits for the pair and then revokes its refresh
    token, or comes first and the pair is not made."""
    with transaction.atomic():
        held = _hold_open_account(user.pk)
        if held is None:
            raise AccountsError(refusal)
        return _pair_make(held=held)


def tokens_login(*, user: User) -> dict[str, str]:
    """The pair a login by SMS code gives; an account suspended since its
    code was checked is refused as at the check (``account_suspended``)."""
    return tokens_issue(user=user, refusal=ACCOUNT_SUSPENDED)


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


def tokens_purge_expired(*, batch: int = 5000) -> int:
    """Delete the records of refresh tokens past their expiry, with their
    revocation marks; how many. Such a token is refused by its own ``exp``
    before any record is read, so neither rotation nor reuse detection needs
    them; without this, every login and refresh would leave a row for ever.
    In batches, so that no statement holds millions of rows."""
    expired = OutstandingToken.objects.filter(expires_at__lt=timezone.now())
    return delete_in_batches(expired, batch=batch)


def _user_of_spent_token(raw: str) -> User | None:
    """The owner of a correctly signed, unexpired but already revoked token."""
    try:
        payload = UntypedToken(raw).payload  # type: ignore[arg-type]  # simplejwt annotates the token as Token; it takes the JWT string
    except TokenError:
        return None
    jti = payload.get("jti")
    user_id = payload.get("user_id")
    if jti and user_id is not None and BlacklistedToken.objects.filter(token__jti=jti).exists():
        return User.objects.filter(pk=user_id).first()
    return None


def token_refresh(*, refresh: str) -> dict[str, str]:
    """Trade a refresh token for a new pair; the old one is revoked.

    Presenting a refresh token that was already used or revoked means it
    leaked or a client misbehaves: every session of that user is revoked.
    """
    try:
        token = CitizenRefreshToken(refresh)  # type: ignore[arg-type]  # simplejwt annotates the token as Token; it takes the JWT string
    except TokenError as exc:
        reused_by = _user_of_spent_token(refresh)
        if reused_by is not None:
            tokens_revoke_all(user=reused_by)
        raise AccountsError(TOKEN_INVALID) from exc
    inactive = False
    with transaction.atomic():
        # The account first, as a suspension or a close holds it before it
        # revokes the tokens (the other order waits on each other).
        user = _hold_open_account(token.get("user_id"))
        outstanding = OutstandingToken.objects.select_for_update().filter(jti=token["jti"]).first()
        if outstanding is None or BlacklistedToken.objects.filter(token=outstanding).exists():
            reuse = True
        else:
            reuse = False
            # Spent even when the account is not active: a token that
            # outlived a suspension (made by a request racing it) must not
            # work again after reinstatement.
            BlacklistedToken.objects.create(token=outstanding)
            if user is None:
                inactive = True
            else:
                # Under the lock taken above: a nested issuance would take
                # it again (a savepoint, the lock's query, the release).
                pair = _pair_make(held=user)
    if reuse:
        owner = User.objects.filter(pk=token.get("user_id")).first()
        if owner is not None:
            tokens_revoke_all(user=owner)
        raise AccountsError(TOKEN_INVALID)
    if inactive:
        raise AccountsError(ACCOUNT_INACTIVE)
    return pair


def token_revoke(*, refresh: str) -> None:
    """Log out: revoke one refresh token."""
    try:
        token = CitizenRefreshToken(refresh)  # type: ignore[arg-type]  # simplejwt annotates the token as Token; it takes the JWT string
    except TokenError as exc:
        raise AccountsError(TOKEN_INVALID) from exc
    token.blacklist()

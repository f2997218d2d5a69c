"""JWT pairs for citizens: issue, rotate, revoke."""

from __future__ import annotations

import hashlib

from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import BlacklistMixin, RefreshToken, UntypedToken
from rest_framework_simplejwt.utils import datetime_from_epoch

from accounts import token_facts
from accounts.errors import (
    AccountsError,
)
from accounts.models import (
    User,
)
from config.errors import ACCOUNT_INACTIVE, TOKEN_INVALID
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


def tokens_issue(*, user: User) -> dict[str, str]:
    refresh = CitizenRefreshToken.for_user(user)
    access = refresh.access_token
    token_facts.facts_stamp(access, user)
    return {"access": str(access), "refresh": str(refresh)}


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
        token = CitizenRefreshToken(refresh)  # type: ignore[arg-type]  # simplejwt annotates the token as Token; it takes the JWT string
    except TokenError as exc:
        raise AccountsError(TOKEN_INVALID) from exc
    token.blacklist()

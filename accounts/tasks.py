"""Housekeeping for the accounts app."""

from __future__ import annotations

from importlib import import_module

from celery import shared_task
from django.conf import settings

from accounts import idempotency, inbox, otp, tokens


@shared_task(name="accounts.purge_otp_challenges", acks_late=True)
def otp_challenges_purge() -> int:
    return otp.otp_challenges_purge()


@shared_task(name="accounts.purge_idempotency_records", acks_late=True)
def idempotency_records_purge() -> int:
    return idempotency.idempotency_records_purge()


@shared_task(name="accounts.purge_refresh_tokens", acks_late=True)
def refresh_tokens_purge() -> int:
    return tokens.tokens_purge_expired()


@shared_task(name="accounts.purge_closed_inboxes", acks_late=True)
def closed_inboxes_purge() -> int:
    return inbox.messages_of_closed_accounts_purge()


@shared_task(name="accounts.purge_expired_sessions", acks_late=True)
def expired_sessions_purge() -> None:
    # Django's clearsessions: an admin session's row outlives its expiry,
    # with what it held (its messages), until something deletes it.
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()

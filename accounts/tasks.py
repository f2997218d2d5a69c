"""Housekeeping for the accounts app."""

from __future__ import annotations

from celery import shared_task

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

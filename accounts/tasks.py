"""Housekeeping for the accounts app."""

from __future__ import annotations

from celery import shared_task

from accounts import idempotency, services


@shared_task(name="accounts.purge_otp_challenges", acks_late=True)
def purge_otp_challenges() -> int:
    return services.purge_otp_challenges()


@shared_task(name="accounts.purge_idempotency_records", acks_late=True)
def purge_idempotency_records() -> int:
    return idempotency.purge_expired()

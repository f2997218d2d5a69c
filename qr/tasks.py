"""Scan events to the database, key retirement, retention."""

from __future__ import annotations

from celery import shared_task

from qr import services


@shared_task(name="qr.flush_scan_events", acks_late=True, ignore_result=True)
def flush_scan_events() -> int:
    return services.scan_events_flush()


@shared_task(name="qr.prune_signing_keys", acks_late=True, ignore_result=True)
def prune_signing_keys() -> list[str]:
    return services.signing_keys_prune()


@shared_task(name="qr.purge_scan_events", acks_late=True, ignore_result=True)
def purge_scan_events() -> int:
    return services.scan_events_purge()

"""Scan events to the database, key retirement, retention."""

from __future__ import annotations

from celery import shared_task

from qr import keys, scans


@shared_task(name="qr.flush_scan_events", acks_late=True, ignore_result=True)
def scan_events_flush() -> int:
    return scans.scan_events_flush()


@shared_task(name="qr.prune_signing_keys", acks_late=True, ignore_result=True)
def signing_keys_prune() -> list[str]:
    return keys.signing_keys_prune()


@shared_task(name="qr.purge_scan_events", acks_late=True, ignore_result=True)
def scan_events_purge() -> int:
    return scans.scan_events_purge()

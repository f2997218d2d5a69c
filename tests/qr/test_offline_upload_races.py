"""Offline uploads of one scanner key sent side by side: a citizen's code is
put on their history once per scanner key and code, and a retried batch is
recorded once and answered `duplicate` the other time (docs/scanners.md)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from qr import scans
from qr.models import ScanEvent
from tests.conftest import client_with_key
from tests.qr.conftest import citizen_code
from tests.qr.test_scanners_api import code_shown_at, scan

URL = "/api/v1/qr/scans/"


@pytest.mark.django_db
def test_a_scan_stored_meanwhile_under_its_event_id_is_answered_duplicate(
    citizen, scanner_key, scanner_api, monkeypatch
):
    """The status says what this upload wrote: a row the store skipped
    because the event id got there first is a duplicate, not recorded."""
    code = citizen_code(citizen)
    store = scans.scan_events_store

    def another_upload_got_there_first(records):
        ScanEvent.objects.create(
            source="offline",
            scanned_at=timezone.now(),
            scanner=scanner_key,
            valid=True,
            terminal_event_id="gate3-0001",
        )
        return store(records)

    monkeypatch.setattr(scans, "scan_events_store", another_upload_got_there_first)
    body = scanner_api.post(
        URL,
        {"scans": [scan(code, event_id="gate3-0001"), scan(code, event_id="gate3-0002")]},
        format="json",
    ).json()
    assert body["scans"] == [
        {"event_id": "gate3-0001", "status": "duplicate"},
        {"event_id": "gate3-0002", "status": "recorded"},
    ]
    assert (body["recorded"], body["duplicates"]) == (1, 1)


def _upload_meanwhile(monkeypatch, scanner_key, first: dict, second: dict) -> tuple[list, bool]:
    """Upload ``first`` until it is about to write, upload ``second`` on
    another connection meanwhile, then let the first go on. The two answers
    (first, second) and whether the second waited on a lock the first held."""
    from tests.concurrency import a_backend_waits_on_a_lock, in_thread, pause_in

    paused, release = pause_in(monkeypatch, scans, "scan_events_store")
    answers: dict[str, dict] = {}
    errors: list[BaseException] = []

    def upload(name: str, item: dict) -> None:
        response = client_with_key(scanner_key.raw).post(URL, {"scans": [item]}, format="json")
        assert response.status_code == 200, response.content
        answers[name] = response.json()

    uploading = in_thread(lambda: upload("first", first), errors)
    assert paused.wait(30)
    meanwhile = in_thread(lambda: upload("second", second), errors)
    # Without a lock the second reads what the first has not written yet
    # and goes on to write (it then stops where the first did).
    waited = a_backend_waits_on_a_lock(timeout=5)
    release.set()
    uploading.join(60)
    meanwhile.join(60)
    if errors:
        raise errors[0]
    return [answers["first"], answers["second"]], waited


@pytest.mark.integration  # two PostgreSQL sessions
@pytest.mark.django_db(transaction=True)
def test_one_code_uploaded_by_two_terminals_of_a_key_at_once_is_on_the_history_once(
    citizen, scanner_key, monkeypatch
):
    code = code_shown_at(citizen, 60)
    answers, waited = _upload_meanwhile(
        monkeypatch,
        scanner_key,
        scan(code, event_id="gate3-0001"),
        scan(code, event_id="gate4-0001"),
    )
    assert [a["scans"][0]["status"] for a in answers] == ["recorded", "recorded"]
    stored = ScanEvent.objects.filter(scanner=scanner_key).order_by("terminal_event_id")
    assert [(e.terminal_event_id, e.subject) for e in stored] == [
        ("gate3-0001", citizen.subject),
        ("gate4-0001", ""),
    ]
    assert ScanEvent.objects.filter(subject=citizen.subject).count() == 1
    assert waited  # the second upload waited for the first's


@pytest.mark.integration  # two PostgreSQL sessions
@pytest.mark.django_db(transaction=True)
def test_a_batch_retried_while_the_first_try_is_being_stored_is_answered_duplicate(
    citizen, scanner_key, monkeypatch
):
    item = scan(code_shown_at(citizen, 60), event_id="gate3-0001")
    answers, waited = _upload_meanwhile(monkeypatch, scanner_key, item, item)
    assert [a["scans"] for a in answers] == [
        [{"event_id": "gate3-0001", "status": "recorded"}],
        [{"event_id": "gate3-0001", "status": "duplicate"}],
    ]
    assert [(a["recorded"], a["duplicates"]) for a in answers] == [(1, 0), (0, 1)]
    (stored,) = ScanEvent.objects.filter(scanner=scanner_key)
    assert stored.subject == citizen.subject
    assert waited

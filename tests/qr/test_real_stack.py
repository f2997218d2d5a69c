"""Scan events through Redis and a real worker into PostgreSQL; replay races; Redis down."""

from __future__ import annotations

from collections import Counter

import pytest
from django.conf import settings

from config.celery import app
from qr import scans
from qr.models import ScanEvent
from qr.recorders import RedisScanRecorder, ScanRecord, get_recorder
from tests.concurrency import at_once
from tests.conftest import client_with_key
from tests.processes import celery_worker, wait_for
from tests.qr.conftest import issue, verify

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored"),
]


def test_redis_buffers_the_scan_events() -> None:
    assert settings.QR_SCAN_RECORDER == "qr.recorders.RedisScanRecorder"
    assert isinstance(get_recorder(), RedisScanRecorder)


def test_scan_events_reach_postgres_through_a_real_worker(citizen_api, scanner_api):
    codes_ = [issue(citizen_api)["code"] for _ in range(5)]
    for code in codes_:
        assert verify(scanner_api, code)["valid"] is True
    verify(scanner_api, codes_[0])  # a replay is a scan too
    # Answered, and not yet in the database: the request path did not write.
    assert ScanEvent.objects.count() == 0
    assert get_recorder().pending() == 6
    # The worker is a production process: tell it this test run's buffer.
    with celery_worker("--concurrency", "1", QR_SCAN_BUFFER_KEY=get_recorder().events_key):
        app.send_task("qr.flush_scan_events")  # what beat sends every few seconds
        wait_for(lambda: ScanEvent.objects.count() == 6, message="events were not flushed")
    assert get_recorder().pending() == 0
    reasons = Counter(ScanEvent.objects.values_list("reason", flat=True))
    assert reasons == {"": 5, "replayed": 1}


def test_a_flush_that_dies_after_writing_loses_nothing_and_duplicates_nothing(
    citizen_api, scanner_api
):
    for _ in range(3):
        verify(scanner_api, issue(citizen_api)["code"])

    def store_then_die(records):
        scans.scan_events_store(records)
        raise SystemExit("worker killed after the commit, before trimming")

    with pytest.raises(SystemExit):
        get_recorder().flush(store_then_die)
    assert ScanEvent.objects.count() == 3
    assert get_recorder().pending() == 3  # still buffered: the trim never happened
    assert scans.scan_events_flush() == 3
    assert ScanEvent.objects.count() == 3
    assert get_recorder().pending() == 0


def test_a_flush_that_lost_its_lock_does_not_trim(citizen_api, scanner_api):
    import redis as redis_lib

    verify(scanner_api, issue(citizen_api)["code"])
    recorder = get_recorder()
    client = redis_lib.Redis.from_url(settings.REDIS_URL)

    def slow_store(records):
        client.set(recorder.lock_key, "someone-else")  # our lock expired meanwhile
        scans.scan_events_store(records)

    assert recorder.flush(slow_store) == 0
    assert recorder.pending() == 1
    client.delete(recorder.lock_key)
    assert scans.scan_events_flush() == 1
    assert ScanEvent.objects.count() == 1


def test_one_code_verifies_once_however_many_scans_race(citizen_api, scanner_key):
    code = issue(citizen_api)["code"]

    def scan(_: int) -> bool:
        response = client_with_key(scanner_key.raw).post(
            "/api/v1/qr/verify/", {"code": code}, format="json"
        )
        return response.json()["valid"]

    assert sorted(at_once(8, scan)) == [False] * 7 + [True]
    scans.scan_events_flush()
    assert Counter(ScanEvent.objects.values_list("reason", flat=True)) == {"": 1, "replayed": 7}


def test_with_redis_down_verify_says_so_and_resolve_still_counts(
    citizen_api, scanner_api, integrator_api, service, api, settings
):
    from tests.qr.conftest import create_venue

    venue = create_venue(integrator_api, service.code)
    code = issue(citizen_api)["code"]
    redis_url = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    try:
        response = scanner_api.post("/api/v1/qr/verify/", {"code": code}, format="json")
        assert response.status_code == 503
        assert response.json()["code"] == "scan_state_unavailable"
        resolved = api.post("/api/v1/qr/resolve/", {"code": venue["code"]}, format="json")
        assert resolved.status_code == 200
    finally:
        settings.REDIS_URL = redis_url
    assert ScanEvent.objects.filter(source="app").count() == 1


def test_unreadable_items_do_not_block_the_buffer(citizen_api, scanner_api):
    import redis as redis_lib

    recorder = get_recorder()
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    client.rpush(recorder.events_key, b"{not json")
    verify(scanner_api, issue(citizen_api)["code"])
    scans.scan_events_flush()
    assert ScanEvent.objects.count() == 1
    assert recorder.pending() == 0
    assert ScanRecord  # the format the buffer holds


@pytest.mark.django_db(transaction=True)
def test_gates_verify_through_gunicorn_and_every_scan_reaches_postgres(
    tmp_path, citizen, scanner_key
) -> None:
    """The production server, its verify fast path, a worker flushing the
    Redis buffer: every scan answered and stored once."""
    import httpx

    from qr.models import ScanEvent
    from tests.processes import web_server
    from tests.qr.conftest import citizen_code

    codes = [citizen_code(citizen) for _ in range(30)]
    with (
        web_server() as base,
        celery_worker("--concurrency", "1", "-B", "-s", str(tmp_path / "beat")),
    ):
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Api-Key {scanner_key.raw}"}
        ) as http:
            answers = [
                http.post("/api/v1/qr/verify/", json={"code": code}).json() for code in codes
            ]
            again = http.post("/api/v1/qr/verify/", json={"code": codes[0]}).json()
        wait_for(
            lambda: ScanEvent.objects.count() == 31,
            timeout=60,
            message=f"{ScanEvent.objects.count()} stored",
        )
    assert all(answer["valid"] for answer in answers)
    assert again == {"valid": False, "reason": "replayed"}
    assert ScanEvent.objects.filter(valid=True).count() == 30


def test_the_recording_call_run_twice_records_once() -> None:
    """A reply lost on the way back must not turn a first scan into a replay."""
    import time

    from qr.recorders import Admission, Claim

    recorder = get_recorder()
    record = ScanRecord(
        id="01a2-same-record", source="online", scanned_at=time.time(), valid=True, reason=""
    )
    claim = Claim(holder="scanner-1", jti="jti-once", ttl=60)
    before = recorder.pending()
    assert (
        recorder.record(record, store=scans.scan_events_store, claim=claim).admission
        is Admission.RECORDED
    )
    assert (
        recorder.record(record, store=scans.scan_events_store, claim=claim).admission
        is Admission.RECORDED
    )
    assert recorder.pending() == before + 1
    other = ScanRecord(
        id="01a2-other-record", source="online", scanned_at=time.time(), valid=True, reason=""
    )
    assert (
        recorder.record(other, store=scans.scan_events_store, claim=claim).admission
        is Admission.REPLAYED
    )


def test_the_redis_client_never_retries_behind_our_back() -> None:
    from config.redis_client import redis_client

    retry = redis_client().get_retry()
    assert retry is None or retry.get_retries() == 0


def test_without_redis_a_code_still_verifies_once_across_processes(
    citizen_api, scanner_key, settings
):
    """The database recorder's claims are rows: every worker process sees them."""
    settings.QR_SCAN_RECORDER = "qr.recorders.DatabaseScanRecorder"
    code = issue(citizen_api)["code"]

    def scan(_: int) -> bool:
        return verify(client_with_key(scanner_key.raw), code)["valid"]

    assert Counter(at_once(8, scan)) == {True: 1, False: 7}

"""Every scan recorder keeps the contract of ``qr.recorders.ScanRecorder``.

Each test runs against each implementation: the database recorder here and
on the real stack, the Redis one where Redis is (CI's second pass; reported
as skipped elsewhere). A new recorder joins ``RECORDERS`` and passes these
before ``QR_SCAN_RECORDER`` may name it.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from types import SimpleNamespace

import pytest

from config.ids import uuid7
from qr import recorders
from qr.recorders import (
    Admission,
    Claim,
    DatabaseScanRecorder,
    RateLimit,
    RedisScanRecorder,
    ScanRecord,
    ScanRecorder,
    ScanStateUnavailable,
)
from tests.concurrency import at_once

pytestmark = pytest.mark.django_db

RECORDERS = [
    pytest.param(DatabaseScanRecorder, id="database"),
    pytest.param(RedisScanRecorder, id="redis", marks=pytest.mark.integration),
]


def test_the_contract_runs_over_every_recorder_the_project_ships() -> None:
    from tests.contracts import implementations

    assert {param.values[0] for param in RECORDERS} == set(implementations(ScanRecorder))


class Database:
    """A ``store`` as the contract describes it: idempotent on the record id."""

    def __init__(self) -> None:
        self.rows: dict[str, ScanRecord] = {}
        self.calls = 0

    def __call__(self, records: Sequence[ScanRecord]) -> int:
        self.calls += 1
        for record in records:
            self.rows.setdefault(record.id, record)
        return len(records)


class StoreDown(Exception):
    pass


def database_down(records: Sequence[ScanRecord]) -> int:
    raise StoreDown("the database went away mid-flush")


@pytest.fixture(params=RECORDERS)
def recorder(request) -> ScanRecorder:
    return request.param()


@pytest.fixture
def store() -> Database:
    return Database()


def a_scan(**fields: object) -> ScanRecord:
    return ScanRecord(
        **{
            "id": str(uuid7()),
            "source": "online",
            "scanned_at": time.time(),
            "valid": True,
            "kind": "citizen",
            "subject": "s_" + "0" * 24,
            "jti": uuid.uuid4().hex,
            "kid": "20261125-abcdef",
            "scanner": "scanner-1",
            "department": None,
            "place": "地铁2号线 五一广场站",
            **fields,
        }
    )


def a_claim(holder: str = "scanner-1", jti: str | None = None) -> Claim:
    return Claim(holder=holder, jti=jti or uuid.uuid4().hex, ttl=60)


def test_a_recorded_scan_reaches_the_store_as_it_was_given(recorder, store) -> None:
    scan = a_scan(terminal_event_id="")
    assert recorder.record(scan, store=store).admission is Admission.RECORDED
    # Accepted means: in the database, or pending until a flush puts it there.
    assert len(store.rows) + recorder.pending() == 1
    recorder.flush(store)
    assert store.rows[scan.id].as_dict() == scan.as_dict()
    assert recorder.pending() == 0


def test_the_first_claim_of_a_code_records_and_the_next_one_is_a_replay(recorder, store) -> None:
    claim = a_claim()
    first, again = a_scan(jti=claim.jti), a_scan(jti=claim.jti)
    assert recorder.record(first, store=store, claim=claim).admission is Admission.RECORDED
    assert recorder.record(again, store=store, claim=claim).admission is Admission.REPLAYED
    recorder.flush(store)
    assert (store.rows[first.id].valid, store.rows[first.id].reason) == (True, "")
    assert (store.rows[again.id].valid, store.rows[again.id].reason) == (False, "replayed")


def test_claims_of_another_scanner_or_another_code_are_independent(recorder, store) -> None:
    claim = a_claim()
    recorder.record(a_scan(), store=store, claim=claim)
    other_scanner = Claim(holder="scanner-2", jti=claim.jti, ttl=60)
    other_code = Claim(holder=claim.holder, jti=uuid.uuid4().hex, ttl=60)
    assert recorder.record(a_scan(), store=store, claim=other_scanner).admission is (
        Admission.RECORDED
    )
    assert recorder.record(a_scan(), store=store, claim=other_code).admission is (
        Admission.RECORDED
    )


@pytest.mark.integration  # the database recorder's atomicity is PostgreSQL's unique index
@pytest.mark.django_db(transaction=True)
def test_one_code_is_recorded_once_however_many_scans_race(recorder, store) -> None:
    claim = a_claim()
    scans = [a_scan(jti=claim.jti) for _ in range(8)]
    outcomes = at_once(8, lambda i: recorder.record(scans[i], store=store, claim=claim))
    assert Counter(o.admission for o in outcomes) == {Admission.RECORDED: 1, Admission.REPLAYED: 7}
    recorder.flush(store)
    assert set(store.rows) == {scan.id for scan in scans}  # the replays are scans too


def test_over_the_limit_nothing_is_recorded_and_no_claim_is_taken(
    recorder, store, monkeypatch
) -> None:
    # 30 s into a one-minute window, however long the test takes.
    window_start = 1_800_000_000.0
    monkeypatch.setattr(
        recorders, "time", SimpleNamespace(time=lambda: window_start + 30, monotonic=time.monotonic)
    )
    limit = RateLimit(f"contract:{uuid.uuid4().hex}", 2, 60)
    allowed = [a_scan(), a_scan()]
    for scan in allowed:
        assert recorder.record(scan, store=store, limit=limit).admission is Admission.RECORDED
    claim = a_claim()
    refused = a_scan(jti=claim.jti)
    outcome = recorder.record(refused, store=store, claim=claim, limit=limit)
    assert (outcome.admission, outcome.retry_after) == (Admission.THROTTLED, 30)
    later = a_scan(jti=claim.jti)
    assert recorder.record(later, store=store, claim=claim).admission is Admission.RECORDED
    recorder.flush(store)
    assert set(store.rows) == {allowed[0].id, allowed[1].id, later.id}


def test_a_flush_moves_what_was_pending_and_a_second_one_moves_nothing(recorder, store) -> None:
    scans = [a_scan() for _ in range(3)]
    for scan in scans:
        recorder.record(scan, store=store)
    pending = recorder.pending()
    assert recorder.flush(store) == pending
    assert recorder.pending() == 0
    calls = store.calls
    assert recorder.flush(store) == 0
    assert store.calls == calls
    assert set(store.rows) == {scan.id for scan in scans}


def test_a_flush_whose_store_fails_keeps_every_record_for_the_next(recorder, store) -> None:
    scans = [a_scan() for _ in range(3)]
    for scan in scans:
        recorder.record(scan, store=store)
    pending = recorder.pending()
    with contextlib.suppress(StoreDown):
        recorder.flush(database_down)
    assert recorder.pending() == pending
    assert recorder.flush(store) == pending
    assert set(store.rows) == {scan.id for scan in scans}


OUTSIDE_THE_DATABASE = [
    pytest.param(RedisScanRecorder, id="redis", marks=pytest.mark.integration),
]


@pytest.mark.parametrize("implementation", OUTSIDE_THE_DATABASE)
def test_unreachable_state_is_said_never_answered_as_recorded(
    implementation, store, settings
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    unreachable = implementation()
    with pytest.raises(ScanStateUnavailable):
        unreachable.record(a_scan(), store=store, claim=a_claim())
    with pytest.raises(ScanStateUnavailable):
        unreachable.pending()
    assert store.rows == {}


def test_a_scan_the_database_could_not_store_leaves_no_claim_behind(store) -> None:
    """Without Redis the claim and the record are two rows: a record that
    fails to be written takes its claim with it, so the terminal's retry is
    recorded, not answered as a replay of itself."""
    recorder = DatabaseScanRecorder()
    claim = a_claim()
    with pytest.raises(StoreDown):
        recorder.record(a_scan(), store=database_down, claim=claim)
    assert recorder.record(a_scan(), store=store, claim=claim).admission is Admission.RECORDED

"""Offline terminals: revocation lists, batch uploads; citizens see their scans."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest
from django.conf import settings
from django.db.models.functions import Now
from django.utils import timezone

from accounts.citizens import account_close, user_set_active
from accounts.models import User
from qr.models import ScanEvent
from qr.scans import scan_events_purge
from tests.qr.conftest import citizen_code, create_venue, issue, recorded_scans, verify

pytestmark = pytest.mark.django_db


def revocations(api, since: str | None = None) -> dict:
    response = api.get("/api/v1/qr/revocations/", {"since": since} if since else {})
    assert response.status_code == 200, response.content
    return response.json()


def test_deactivations_reach_offline_terminals(
    settings, citizen, other_citizen, integrator_api, service, scanner_api
):
    settings.QR_REVOCATIONS_LAG_SECONDS = 0
    start = revocations(scanner_api)
    assert start["revoked"] == [] and start["inactive_subjects"] == []

    venue = create_venue(integrator_api, service.code)
    integrator_api.post(f"/api/v1/dept/codes/{venue['id']}/deactivate/")
    user_set_active(user=citizen, active=False, actor=None)
    account_close(user=other_citizen)

    answer = revocations(scanner_api, start["until"])
    assert [r["jti"] for r in answer["revoked"]] == [venue["id"]]
    assert [s["sub"] for s in answer["inactive_subjects"]] == [
        citizen.subject,
        other_citizen.subject,
    ]
    assert answer["inactive_subjects"][0]["at"].endswith("+08:00")
    later = revocations(scanner_api, answer["until"])
    assert later["revoked"] == [] and later["inactive_subjects"] == []


def test_a_reinstated_account_drops_out(settings, citizen, scanner_api):
    settings.QR_REVOCATIONS_LAG_SECONDS = 0
    user_set_active(user=citizen, active=False, actor=None)
    user_set_active(user=citizen, active=True, actor=None)
    assert revocations(scanner_api)["inactive_subjects"] == []


def test_long_lists_come_in_pages_without_gaps(settings, scanner_api):
    settings.QR_REVOCATIONS_LAG_SECONDS = 0
    settings.QR_REVOCATIONS_PAGE_SIZE = 3
    base = timezone.now() - dt.timedelta(minutes=5)
    users = []
    for i in range(8):
        user = User.objects.create(phone=f"1370000{i:04d}", is_active=False)
        # Two pairs share an instant, to test the page edges.
        user.deactivated_at = base + dt.timedelta(seconds=i - (i in (3, 6)))
        user.save()
        users.append(user)
    seen, since = set(), None
    for _ in range(10):
        answer = revocations(scanner_api, since)
        seen |= {s["sub"] for s in answer["inactive_subjects"]}
        if since == answer["until"]:
            break
        since = answer["until"]
    assert seen == {u.subject for u in users}


def test_pages_of_deactivations_stamped_by_the_database_have_no_gaps(
    settings, integrator_api, service, scanner_api
):
    """The stamps are the database's clock (SQLite's to the millisecond), the
    page edges Python's: every entry still comes, whatever the page size."""
    settings.QR_REVOCATIONS_LAG_SECONDS = 0
    settings.QR_REVOCATIONS_PAGE_SIZE = 1
    venues = [create_venue(integrator_api, service.code, label=f"{i}号窗口") for i in range(4)]
    users = [User.objects.create(phone=f"1370000{i:04d}") for i in range(3)]
    for venue, user in zip(venues, [*users, None], strict=True):
        integrator_api.post(f"/api/v1/dept/codes/{venue['id']}/deactivate/")
        if user is not None:
            user_set_active(user=user, active=False, actor=None)
    jtis, subjects, since = set(), set(), None
    for _ in range(20):
        answer = revocations(scanner_api, since)
        jtis |= {r["jti"] for r in answer["revoked"]}
        subjects |= {s["sub"] for s in answer["inactive_subjects"]}
        since = answer["until"]
    assert jtis == {v["id"] for v in venues}
    assert subjects == {u.subject for u in users}


def test_a_bulk_deactivation_at_one_instant_does_not_hold_up_the_feed(settings, scanner_api):
    """More entries than a page stamped at one instant by the database (one
    UPDATE): the instant comes whole, and what follows it comes next, not a
    microsecond per call later (on SQLite, the bound a millisecond early let
    the entries already sent fill every later page)."""
    settings.QR_REVOCATIONS_LAG_SECONDS = 0
    settings.QR_REVOCATIONS_PAGE_SIZE = 3
    bulk = [User.objects.create(phone=f"1370000{i:04d}") for i in range(5)]
    User.objects.filter(pk__in=[u.pk for u in bulk]).update(is_active=False, deactivated_at=Now())
    time.sleep(0.005)
    later = User.objects.create(phone="13700009999")
    user_set_active(user=later, active=False, actor=None)
    time.sleep(0.005)
    subjects, since = set(), None
    for _ in range(6):
        answer = revocations(scanner_api, since)
        subjects |= {s["sub"] for s in answer["inactive_subjects"]}
        since = answer["until"]
    assert subjects == {u.subject for u in [*bulk, later]}


def test_a_terminal_clock_running_ahead_misses_no_revocation(
    settings, integrator_api, service, scanner_api
):
    """A first sync with the terminal's own clock, ahead of ours: the answer's
    ``until`` is still ours, so what is deactivated next comes next time."""
    settings.QR_REVOCATIONS_LAG_SECONDS = 0
    ahead = timezone.localtime() + dt.timedelta(minutes=10)
    answer = revocations(scanner_api, ahead.isoformat())
    assert dt.datetime.fromisoformat(answer["until"]) <= timezone.now()
    venue = create_venue(integrator_api, service.code)
    integrator_api.post(f"/api/v1/dept/codes/{venue['id']}/deactivate/")
    later = revocations(scanner_api, answer["until"])
    assert [r["jti"] for r in later["revoked"]] == [venue["id"]]


def test_the_window_trails_the_clock(settings, citizen, scanner_api):
    settings.QR_REVOCATIONS_LAG_SECONDS = 5
    before = timezone.now()
    answer = revocations(scanner_api)
    until = dt.datetime.fromisoformat(answer["until"])
    assert before - dt.timedelta(seconds=6) < until <= before - dt.timedelta(seconds=4)


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01T00:00:00+08:00", "2026-11-25T10:00:00"])
def test_a_bad_since_is_a_400(scanner_api, since):
    response = scanner_api.get("/api/v1/qr/revocations/", {"since": since})
    assert response.status_code == 400
    assert response.json()["code"] == "since_invalid"


def test_an_unencoded_plus_in_since_is_understood(scanner_api):
    response = scanner_api.get("/api/v1/qr/revocations/?since=2026-11-25T10:00:00+08:00")
    assert response.status_code == 200


@pytest.mark.parametrize("offset", ["+23:59", "-23:59", "+16:00"])
def test_any_offset_python_reads_is_understood(scanner_api, offset):
    """An offset beyond the database's range (PostgreSQL's ends at ±15:59)
    still names an instant."""
    response = scanner_api.get("/api/v1/qr/revocations/", {"since": f"2026-11-25T10:00:00{offset}"})
    assert response.status_code == 200
    assert response.json().keys() == {"revoked", "inactive_subjects", "until"}


def test_only_scanners_read_revocations(integrator_api, citizen_api, api):
    assert integrator_api.get("/api/v1/qr/revocations/").status_code == 403
    assert citizen_api.get("/api/v1/qr/revocations/").status_code == 401
    assert api.get("/api/v1/qr/revocations/").status_code == 401


# --- Offline uploads ------------------------------------------------------------------------


def code_shown_at(citizen, ago: int) -> str:
    """The citizen's code as their phone showed it ``ago`` seconds ago."""
    iat = int(time.time()) - ago - 5
    return citizen_code(citizen, iat=iat, exp=iat + settings.STAR_CODE_TTL)


def scan(
    code: str,
    *,
    valid: bool = True,
    reason: str | None = None,
    event_id: str | None = None,
    ago: int = 60,
) -> dict:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "code": code,
        "scanned_at": (timezone.now() - dt.timedelta(seconds=ago)).isoformat(),
        "valid": valid,
        "reason": reason,
    }


def test_offline_scans_upload_once(citizen, scanner_key, scanner_api, gate_profile):
    batch = [
        scan(code_shown_at(citizen, 60), event_id="gate3-0001"),
        scan("junk", valid=False, reason="malformed", event_id="gate3-0002"),
    ]
    first = scanner_api.post("/api/v1/qr/scans/", {"scans": batch}, format="json")
    assert first.status_code == 200, first.content
    assert first.json() == {
        "recorded": 2,
        "duplicates": 0,
        "scans": [
            {"event_id": "gate3-0001", "status": "recorded"},
            {"event_id": "gate3-0002", "status": "recorded"},
        ],
    }
    again = scanner_api.post("/api/v1/qr/scans/", {"scans": batch}, format="json")
    assert again.json()["recorded"] == 0 and again.json()["duplicates"] == 2
    events = recorded_scans()
    assert len(events) == 2
    by_id = {e.terminal_event_id: e for e in events}
    assert by_id["gate3-0001"].subject == citizen.subject
    assert by_id["gate3-0001"].source == "offline"
    assert by_id["gate3-0001"].place == gate_profile.place
    assert by_id["gate3-0002"].subject == ""


def test_a_repeated_event_id_within_one_batch_counts_once(citizen, scanner_api):
    code = citizen_code(citizen)
    batch = [scan(code, event_id="e1"), scan(code, event_id="e1")]
    body = scanner_api.post("/api/v1/qr/scans/", {"scans": batch}, format="json").json()
    assert [s["status"] for s in body["scans"]] == ["recorded", "duplicate"]
    assert ScanEvent.objects.count() == 1


def test_a_repeated_event_id_is_judged_by_its_first_scan_not_its_last(citizen, scanner_api):
    """The first of two scans with one event id is the one stored, with its
    own code: a later one cannot lend it a code that was valid at another time."""
    batch = [
        scan("junk", valid=False, reason="malformed", event_id="e1", ago=86400),
        scan(code_shown_at(citizen, 60), event_id="e1"),
    ]
    body = scanner_api.post("/api/v1/qr/scans/", {"scans": batch}, format="json").json()
    assert [s["status"] for s in body["scans"]] == ["recorded", "duplicate"]
    (event,) = recorded_scans()
    assert (event.valid, event.reason, event.subject, event.jti, event.kind) == (
        False,
        "malformed",
        "",
        "",
        "",
    )


def test_event_ids_belong_to_their_own_key(citizen, scanner_api, hall_api):
    code = citizen_code(citizen)
    scanner_api.post("/api/v1/qr/scans/", {"scans": [scan(code, event_id="e1")]}, format="json")
    body = hall_api.post("/api/v1/qr/scans/", {"scans": [scan(code, event_id="e1")]}, format="json")
    assert body.json()["recorded"] == 1


def test_an_upload_cannot_write_into_a_citizens_history(citizen, scanner_api):
    forged = citizen_code(citizen)[:-6] + "AAAAAA"
    scanner_api.post("/api/v1/qr/scans/", {"scans": [scan(forged)]}, format="json")
    (event,) = recorded_scans()
    assert event.subject == ""


@pytest.mark.parametrize(
    "broken",
    [
        {"valid": True, "reason": "expired"},
        {"valid": False, "reason": None},
        {"reason": "nonsense", "valid": False},
        {"scanned_at": "2999-01-01T00:00:00+08:00"},
        {"scanned_at": "2001-01-01T00:00:00+08:00"},
        {"scanned_at": "0001-01-01"},  # naive, at the calendar's start: made aware, overflows
        {"scanned_at": "9999-12-31T23:59:59"},
        {"scanned_at": "0001-01-01T00:00:00+14:00"},
        {"event_id": "x" * 65},
    ],
)
def test_bad_scans_are_refused_with_field_errors(citizen, scanner_api, broken):
    response = scanner_api.post(
        "/api/v1/qr/scans/", {"scans": [scan(citizen_code(citizen)) | broken]}, format="json"
    )
    assert response.status_code == 400
    assert any(key.startswith("scans.0") for key in response.json()["errors"])


def test_batches_are_bounded(citizen, scanner_api, settings):
    settings.QR_OFFLINE_BATCH_MAX = 2
    code = citizen_code(citizen)
    response = scanner_api.post("/api/v1/qr/scans/", {"scans": [scan(code)] * 3}, format="json")
    assert response.status_code == 400
    assert scanner_api.post("/api/v1/qr/scans/", {"scans": []}, format="json").status_code == 400


def test_a_full_batch_of_real_codes_is_taken_whole(citizen, scanner_api, settings):
    """500 scans of real codes, with 64-character event ids and reasons,
    are over the API's general bound (256 KiB): the upload has its own."""
    settings.QR_SCAN_UPLOAD_RATE = "1000/min"
    code = citizen_code(citizen)
    batch = [
        scan(code, valid=False, reason="expired", event_id=f"{n:064d}")
        for n in range(settings.QR_OFFLINE_BATCH_MAX)
    ]
    body = json.dumps({"scans": batch})
    assert len(body) > settings.API_MAX_BODY_BYTES
    response = scanner_api.post("/api/v1/qr/scans/", body, content_type="application/json")
    assert response.status_code == 200, response.content[:300]
    assert response.json()["recorded"] == settings.QR_OFFLINE_BATCH_MAX


def test_an_upload_over_its_own_bound_is_refused_before_it_is_read(citizen, scanner_api, settings):
    settings.QR_SCAN_UPLOAD_MAX_BYTES = 4096
    body = json.dumps({"scans": [scan(citizen_code(citizen))] * 20})
    response = scanner_api.post("/api/v1/qr/scans/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert "4096" in response.json()["detail"]
    # Other endpoints keep the general bound.
    settings.API_MAX_BODY_BYTES = 1024
    response = scanner_api.post("/api/v1/qr/verify/", {"code": "x" * 2000}, format="json")
    assert response.status_code == 413


def test_batches_per_scanner_key_are_throttled(
    citizen, scanner_api, hall_api, settings, steady_throttle_clock
):
    settings.QR_SCAN_UPLOAD_RATE = "2/min"
    code = citizen_code(citizen)
    answers = [
        scanner_api.post("/api/v1/qr/scans/", {"scans": [scan(code)]}, format="json")
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert ScanEvent.objects.filter(source=ScanEvent.Source.OFFLINE).count() == 2
    # Another terminal's key counts on its own.
    other = hall_api.post("/api/v1/qr/scans/", {"scans": [scan(code)]}, format="json")
    assert other.status_code == 200


def test_integrators_cannot_upload_scans(integrator_api, citizen):
    response = integrator_api.post(
        "/api/v1/qr/scans/", {"scans": [scan(citizen_code(citizen))]}, format="json"
    )
    assert response.status_code == 403


# --- The citizen's own scan list ---------------------------------------------------------------


def test_a_citizen_sees_where_and_when_their_code_was_scanned(
    citizen, citizen_api, other_citizen_api, scanner_api, gate_profile, department
):
    verify(scanner_api, issue(citizen_api)["code"])
    verify(scanner_api, issue(other_citizen_api)["code"])
    recorded_scans()
    body = citizen_api.get("/api/v1/me/scans/").json()
    assert set(body) == {"results", "next", "previous"}
    (item,) = body["results"]
    assert item["department"] == {"code": department.code, "name": department.name}
    assert item["place"] == gate_profile.place
    assert item["source"] == "online" and item["valid"] is True and item["reason"] == ""
    assert item["scanned_at"].endswith("+08:00")


def test_the_scan_list_pages_newest_first(citizen, citizen_api, scanner_api):
    for i in range(5):
        scanner_api.post(
            "/api/v1/qr/scans/",
            {
                "scans": [
                    scan(code_shown_at(citizen, 600 - i * 60), ago=600 - i * 60, event_id=f"e{i}")
                ]
            },
            format="json",
        )
    first = citizen_api.get("/api/v1/me/scans/?page_size=3").json()
    second = citizen_api.get(first["next"]).json()
    times = [i["scanned_at"] for i in first["results"] + second["results"]]
    assert len(times) == 5 and times == sorted(times, reverse=True)


def test_the_export_includes_the_scans(citizen, citizen_api, scanner_api):
    verify(scanner_api, issue(citizen_api)["code"])
    recorded_scans()
    export = citizen_api.get("/api/v1/me/export/").json()
    assert len(export["star_code_scans"]) == 1


def test_uploads_cannot_fill_a_citizens_history(citizen, citizen_api, scanner_api):
    """The same code uploaded again and again, or a code that was not valid
    when the terminal says it scanned it, is stored but not put on the citizen."""
    code = code_shown_at(citizen, 60)
    batch = [scan(code, event_id=f"replay-{n}") for n in range(5)]
    batch.append(scan(code_shown_at(citizen, 3600), ago=60, event_id="stale"))  # expired by then
    body = scanner_api.post("/api/v1/qr/scans/", {"scans": batch}, format="json").json()
    assert body["recorded"] == 6
    recorded_scans()
    assert len(citizen_api.get("/api/v1/me/scans/").json()["results"]) == 1
    again = scanner_api.post(
        "/api/v1/qr/scans/", {"scans": [scan(code, event_id="later")]}, format="json"
    )
    assert again.json()["recorded"] == 1
    recorded_scans()
    assert len(citizen_api.get("/api/v1/me/scans/").json()["results"]) == 1


@pytest.mark.parametrize(
    "since", ["9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00+08:00", "1999-12-31T23:59:59Z"]
)
def test_a_since_outside_any_sane_range_is_refused(scanner_api, since):
    response = scanner_api.get("/api/v1/qr/revocations/", {"since": since})
    assert response.status_code == 400
    assert response.json()["code"] == "since_invalid"


# --- A closed account's scan history ------------------------------------------------------------


def test_closing_the_account_unlinks_where_its_code_was_scanned(
    citizen, citizen_api, other_citizen, other_citizen_api, scanner_api, gate_profile
):
    verify(scanner_api, issue(citizen_api)["code"])
    verify(scanner_api, issue(other_citizen_api)["code"])
    recorded_scans()
    assert citizen_api.delete("/api/v1/me/").status_code == 204
    events = recorded_scans()
    assert len(events) == 2  # the scanner's own record stays
    assert not ScanEvent.objects.filter(subject=citizen.subject).exists()
    assert ScanEvent.objects.filter(subject=other_citizen.subject).count() == 1


def test_a_scan_uploaded_after_the_account_closed_is_unlinked_at_the_next_purge(
    citizen, citizen_api, scanner_api
):
    code = code_shown_at(citizen, 60)  # shown while the account was open
    assert citizen_api.delete("/api/v1/me/").status_code == 204
    scanner_api.post("/api/v1/qr/scans/", {"scans": [scan(code)]}, format="json")
    recorded_scans()
    assert ScanEvent.objects.filter(subject=citizen.subject).count() == 1
    scan_events_purge()
    assert not ScanEvent.objects.filter(subject=citizen.subject).exists()
    assert ScanEvent.objects.count() == 1


def test_a_scan_time_without_its_offset_is_refused(citizen, scanner_api) -> None:
    """A terminal whose clock keeps UTC without saying so would file its
    scans eight hours off (a time without offset was read as Beijing's)."""
    now = timezone.localtime()
    response = scanner_api.post(
        "/api/v1/qr/scans/",
        {
            "scans": [
                scan(citizen_code(citizen)) | {"scanned_at": now.strftime("%Y-%m-%dT%H:%M:%S")}
            ]
        },
        format="json",
    )
    assert response.status_code == 400
    assert "scans.0.scanned_at" in response.json()["errors"]
    assert not recorded_scans()
    with_offset = scan(citizen_code(citizen)) | {"scanned_at": now.isoformat()}
    assert (
        scanner_api.post("/api/v1/qr/scans/", {"scans": [with_offset]}, format="json").json()[
            "recorded"
        ]
        == 1
    )

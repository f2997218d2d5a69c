"""Scanners verify codes online: always an answer, never more than their profile allows."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from accounts.citizens import account_close, user_set_active
from qr import caches, codes, keys
from tests.conftest import client_for, client_with_key
from tests.qr.conftest import citizen_code, forge, issue, recorded_scans, verify

pytestmark = pytest.mark.django_db


def test_a_metro_gate_learns_valid_and_level_only(citizen, citizen_api, scanner_api, gate_profile):
    body = issue(citizen_api)
    answer = verify(scanner_api, body["code"])
    assert answer == {
        "valid": True,
        "kind": "citizen",
        "subject": {"id": citizen.subject, "identity_level": 2},
        "expires_at": body["expires_at"],
    }


def test_a_key_without_a_profile_learns_the_least(citizen_api, scanner_api):
    answer = verify(scanner_api, issue(citizen_api)["code"])
    assert set(answer["subject"]) == {"id", "identity_level"}


def test_a_service_hall_also_learns_the_masked_name(citizen, citizen_api, hall_api):
    answer = verify(hall_api, issue(citizen_api)["code"])
    assert answer["valid"] is True
    assert answer["subject"]["name_masked"] == "张**"


def test_no_answer_ever_holds_the_full_name_phone_or_id_number(citizen, citizen_api, hall_api):
    response = hall_api.post(
        "/api/v1/qr/verify/", {"code": issue(citizen_api)["code"]}, format="json"
    )
    text = response.content.decode()
    for secret in (citizen.real_name, citizen.phone, citizen.id_number, str(citizen.pk)):
        assert secret not in text


def test_a_level_one_citizen_has_no_name_to_show(new_citizen, hall_api):
    answer = verify(hall_api, issue(client_for(new_citizen))["code"])
    assert answer["valid"] is True
    assert answer["subject"] == {
        "id": new_citizen.subject,
        "identity_level": 1,
        "name_masked": None,
    }


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "MCS1:",
        "MCS1:a.b",
        "MCS1:a.b.c.d",
        "MCS2:eyJhbGciOiJFZERTQSJ9.e30.AAAA",
        "MCS1:!!!.e30.AAAA",
        "MCS1:eyJhbGciOiJub25lIiwia2lkIjoiayJ9.e30.",  # alg none
        "MCS1:eyJhbGciOiJIUzI1NiIsImtpZCI6ImsifQ.e30.AAAA",  # alg HS256
        "MCS1:bnVsbA.e30.AAAA",  # header "null"
        "MCS1:" + "A" * 3000,
    ],
)
def test_garbage_is_malformed_not_an_error(scanner_api, text):
    response = scanner_api.post("/api/v1/qr/verify/", {"code": text or " "}, format="json")
    if text == "":
        assert response.status_code == 400  # nothing was scanned: a bad request
        return
    assert response.status_code == 200, response.content
    assert response.json() == {"valid": False, "reason": "malformed"}


def tamper(code: str, part: int) -> str:
    segments = code[5:].split(".")
    segment = segments[part]
    middle = len(segment) // 2
    flipped = "A" if segment[middle] != "A" else "B"
    segments[part] = segment[:middle] + flipped + segment[middle + 1 :]
    return "MCS1:" + ".".join(segments)


def test_a_tampered_payload_is_a_bad_signature(citizen_api, scanner_api):
    code = issue(citizen_api)["code"]
    assert verify(scanner_api, tamper(code, 1))["reason"] in ("bad_signature", "malformed")
    # Swap in another citizen's claims under the first signature.
    header, _, signature = code[5:].split(".")
    other_payload = forge(sub="s_someoneelse000000000000")[5:].split(".")[1]
    forged = f"MCS1:{header}.{other_payload}.{signature}"
    assert verify(scanner_api, forged) == {"valid": False, "reason": "bad_signature"}


def test_a_tampered_signature_is_a_bad_signature(citizen_api, scanner_api):
    code = issue(citizen_api)["code"]
    assert verify(scanner_api, tamper(code, 2)) == {"valid": False, "reason": "bad_signature"}


def test_a_code_signed_by_a_key_we_never_published_is_unknown_key(citizen, scanner_api):
    stranger = Ed25519PrivateKey.generate()
    code = forge(sub=citizen.subject, kid="20260101-abcdef", private_key=stranger)
    assert verify(scanner_api, code) == {"valid": False, "reason": "unknown_key"}


def test_a_code_signed_by_an_impostor_using_our_kid_is_a_bad_signature(citizen, scanner_api):
    kid, _ = keys.keyring_ensure()
    now = int(time.time())
    claims = {"iss": "x", "sub": citizen.subject, "iat": now, "exp": now + 60}
    code = codes.sign(claims, kid=kid, private_key=Ed25519PrivateKey.generate())
    assert verify(scanner_api, code) == {"valid": False, "reason": "bad_signature"}


def test_expiry_allows_fifteen_seconds_of_clock_skew(citizen, scanner_api):
    now = int(time.time())
    just_inside = citizen_code(citizen, iat=now - 70, exp=now - 10)
    just_outside = citizen_code(citizen, iat=now - 80, exp=now - 16)
    assert verify(scanner_api, just_inside)["valid"] is True
    assert verify(scanner_api, just_outside) == {"valid": False, "reason": "expired"}


def test_a_code_from_the_future_is_not_yet_valid(citizen, scanner_api):
    now = int(time.time())
    assert verify(scanner_api, citizen_code(citizen, iat=now + 10, exp=now + 70))["valid"]
    assert verify(scanner_api, citizen_code(citizen, iat=now + 20, exp=now + 80)) == {
        "valid": False,
        "reason": "not_yet_valid",
    }


@pytest.mark.parametrize(
    "broken",
    [
        {"knd": "bus"},
        {"iss": "https://elsewhere.example"},
        {"lvl": "2"},
        {"lvl": True},
        {"iat": 1.5},
        {"sub": ""},
        {"sub": 42},
        {"jti": None},
        {"exp": 10, "iat": 20},
    ],
)
def test_well_signed_but_wrong_claims_are_malformed(scanner_api, broken):
    assert verify(scanner_api, forge(broken)) == {"valid": False, "reason": "malformed"}


def test_an_issuer_longer_than_other_claims_still_verifies(settings, citizen_api, scanner_api):
    """``iss`` is the platform's own setting, compared whole: an issuer URL
    over 64 characters (the bound on scanned subjects and ids) made every
    code the platform issued ``malformed``."""
    settings.QR_ISSUER = "https://zwfw.changsha.gov.cn/my-changsha/star-code/issuer/production"
    assert len(settings.QR_ISSUER) > 64
    assert verify(scanner_api, issue(citizen_api)["code"])["valid"] is True


def test_a_citizen_code_without_expiry_is_malformed(scanner_api):
    assert verify(scanner_api, forge(drop=("exp",)))["reason"] == "malformed"


def test_the_same_code_at_the_same_scanner_is_a_replay(citizen_api, scanner_api):
    code = issue(citizen_api)["code"]
    assert verify(scanner_api, code)["valid"] is True
    assert verify(scanner_api, code) == {"valid": False, "reason": "replayed"}
    assert verify(scanner_api, code) == {"valid": False, "reason": "replayed"}


def test_the_same_code_at_another_scanner_is_not_a_replay(citizen_api, scanner_api, hall_api):
    code = issue(citizen_api)["code"]
    assert verify(scanner_api, code)["valid"] is True
    assert verify(hall_api, code)["valid"] is True


def test_an_invalid_first_answer_does_not_spend_the_code(citizen, scanner_api, settings):
    code = citizen_code(citizen)
    user_set_active(user=citizen, active=False, actor=None)
    assert verify(scanner_api, code)["reason"] == "account_inactive"
    user_set_active(user=citizen, active=True, actor=None)
    caches.inactive_subjects.clear()
    assert verify(scanner_api, code)["valid"] is True


def test_a_suspended_account_is_refused(citizen, citizen_api, scanner_api, hall_api):
    code = issue(citizen_api)["code"]
    user_set_active(user=citizen, active=False, actor=None)
    assert verify(scanner_api, code) == {"valid": False, "reason": "account_inactive"}
    assert verify(hall_api, code) == {"valid": False, "reason": "account_inactive"}


def test_a_closed_account_is_refused(citizen, citizen_api, scanner_api, hall_api):
    code = issue(citizen_api)["code"]
    account_close(user=citizen)
    assert verify(scanner_api, code) == {"valid": False, "reason": "account_inactive"}
    assert verify(hall_api, code) == {"valid": False, "reason": "account_inactive"}


def test_a_gate_notices_a_suspension_within_the_refresh_interval(
    citizen, citizen_api, scanner_api, settings
):
    """Gates read account state from a per-process snapshot, refreshed every
    QR_ACCOUNT_STATE_REFRESH_SECONDS; halls (which show the name) read the row."""
    settings.QR_ACCOUNT_STATE_REFRESH_SECONDS = 0.3
    assert verify(scanner_api, issue(citizen_api)["code"])["valid"] is True
    code = issue(citizen_api)["code"]
    user_set_active(user=citizen, active=False, actor=None)
    time.sleep(0.35)
    assert verify(scanner_api, code) == {"valid": False, "reason": "account_inactive"}


def test_an_integrator_key_cannot_verify(citizen_api, integrator_api):
    response = integrator_api.post(
        "/api/v1/qr/verify/", {"code": issue(citizen_api)["code"]}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "api_key_scope"


def test_citizens_and_strangers_cannot_verify(citizen_api, api):
    code = issue(citizen_api)["code"]
    assert citizen_api.post("/api/v1/qr/verify/", {"code": code}, format="json").status_code == 401
    assert api.post("/api/v1/qr/verify/", {"code": code}, format="json").status_code == 401
    wrong = client_with_key("mcs_deadbeef_not-a-real-key")
    assert wrong.post("/api/v1/qr/verify/", {"code": code}, format="json").status_code == 401


def test_a_revoked_scanner_key_stops_within_the_auth_cache_time(
    citizen_api, scanner_key, scanner_api, settings
):
    from accounts.api_keys import api_key_revoke

    settings.QR_SCANNER_AUTH_CACHE_SECONDS = 0
    assert verify(scanner_api, issue(citizen_api)["code"])["valid"] is True
    api_key_revoke(key=scanner_key, actor=None)
    response = scanner_api.post(
        "/api/v1/qr/verify/", {"code": issue(citizen_api)["code"]}, format="json"
    )
    assert response.status_code == 401


def test_bad_requests_are_problems(scanner_api):
    for body in ({}, {"code": ["x"]}, {"code": None}, {"code": {"a": 1}}, {"code": "x" * 5000}):
        response = scanner_api.post("/api/v1/qr/verify/", body, format="json")
        assert response.status_code == 400
        assert response["Content-Type"] == "application/problem+json"


def test_verify_is_throttled_per_scanner_key(citizen_api, scanner_api, hall_api, settings):
    settings.QR_VERIFY_RATE = "3/day"
    codes_ = [issue(citizen_api)["code"] for _ in range(5)]
    statuses = [
        scanner_api.post("/api/v1/qr/verify/", {"code": c}, format="json").status_code
        for c in codes_[:4]
    ]
    assert statuses == [200, 200, 200, 429]
    response = scanner_api.post("/api/v1/qr/verify/", {"code": codes_[4]}, format="json")
    assert response.json()["code"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= 86400
    # Another key has its own allowance; throttled calls record nothing.
    assert verify(hall_api, codes_[4])["valid"] is True
    assert len(recorded_scans()) == 4


# --- Scan events ---------------------------------------------------------------------------------


def test_every_verification_is_a_scan_event(
    citizen, citizen_api, scanner_key, scanner_api, gate_profile
):
    code = issue(citizen_api)["code"]
    verify(scanner_api, code)
    verify(scanner_api, code)
    verify(scanner_api, "garbage")
    events = recorded_scans()
    assert [(e.valid, e.reason) for e in events] == [
        (True, ""),
        (False, "replayed"),
        (False, "malformed"),
    ]
    first = events[0]
    assert first.source == "online"
    assert first.scanner_id == scanner_key.pk
    assert first.department_id == scanner_key.department_id
    assert first.place == "地铁2号线 五一广场站 3号闸机"
    assert first.subject == citizen.subject
    assert first.kind == "citizen"
    assert events[2].subject == ""


def test_a_forged_code_is_never_attributed_to_its_claimed_subject(citizen, scanner_api):
    forged = forge(sub=citizen.subject, private_key=Ed25519PrivateKey.generate())  # our kid
    verify(scanner_api, forged)
    (event,) = recorded_scans()
    assert event.reason == "bad_signature" and event.subject == ""


def test_an_expired_code_of_ours_is_still_attributed(citizen, scanner_api):
    now = int(time.time())
    verify(scanner_api, citizen_code(citizen, iat=now - 200, exp=now - 100))
    (event,) = recorded_scans()
    assert event.reason == "expired" and event.subject == citizen.subject


def test_verifying_costs_the_same_few_queries_every_time(
    citizen, citizen_api, scanner_api, gate_profile, django_assert_max_num_queries
):
    codes_ = [issue(citizen_api)["code"] for _ in range(12)]
    verify(scanner_api, codes_[0])  # warms the key, profile and auth caches
    for code in codes_[1:]:
        # At most: the code's claim and the scan event (embedded recorder;
        # none with Redis) and a refresh of the deactivated-subjects
        # snapshot (every QR_ACCOUNT_STATE_REFRESH_SECONDS).
        with django_assert_max_num_queries(3):
            assert verify(scanner_api, code)["valid"] is True


def test_a_hall_reads_one_row_more(citizen_api, hall_api, django_assert_max_num_queries):
    codes_ = [issue(citizen_api)["code"] for _ in range(6)]
    verify(hall_api, codes_[0])
    for code in codes_[1:]:
        with django_assert_max_num_queries(4):  # the profile's row, on top
            assert verify(hall_api, code)["valid"] is True


def test_one_code_has_one_spelling(citizen, scanner_api):
    """base64url as RFC 7515 writes it: no "+" or "/", no stray trailing bits."""
    code = citizen_code(citizen)
    head, payload, signature = code.removeprefix("MCS1:").split(".")
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = last.index(signature[-1])
    sibling = last[index ^ 1]  # flips a low bit the decoder drops
    for spelling in (
        f"MCS1:{head}.{payload}.{signature[:-1]}{sibling}",
        f"MCS1:{head}.{payload}.{signature.replace('-', '+').replace('_', '/')}",
    ):
        if spelling.removeprefix("MCS1:") == code.removeprefix("MCS1:"):
            continue
        assert verify(scanner_api, spelling)["valid"] is False
    assert verify(scanner_api, code)["valid"] is True

"""A citizen logs in with their phone and an SMS code."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.utils import timezone

from accounts import otp, sms
from accounts.models import OtpChallenge, User
from config.api import ClientScopedRateThrottle
from tests.accounts.factories import CitizenFactory
from tests.accounts.helpers import last_code_sent_to, log_in

pytestmark = pytest.mark.django_db

OTP = "/api/v1/auth/otp/"
TOKEN = "/api/v1/auth/token/"


def age_challenges(phone: str, seconds: int) -> None:
    """Pretend the codes of ``phone`` were sent ``seconds`` earlier (and the
    short-lived cache gate has expired meanwhile)."""
    cache.delete(otp.send_gate_key(phone))
    for challenge in OtpChallenge.objects.filter(phone=phone):
        challenge.created_at -= dt.timedelta(seconds=seconds)
        challenge.expires_at -= dt.timedelta(seconds=seconds)
        challenge.save()


@pytest.mark.parametrize(
    "typed",
    [
        "13800138000",
        "+8613800138000",
        "+86 138 0013 8000",
        "0086-138-0013-8000",
        "8613800138000",
        "１３８００１３８０００",  # full width, as some keyboards type it
    ],
)
def test_citizen_gets_a_six_digit_code_by_sms(api, typed) -> None:
    response = api.post(OTP, {"phone": typed}, format="json")
    assert response.status_code == 202
    assert response.json()["resend_after"] == 60
    assert len(sms.outbox) == 1
    assert sms.outbox[0].to == "13800138000"
    assert sms.outbox[0].text.startswith("【我的长沙】")
    assert len(last_code_sent_to("13800138000")) == 6


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "1380013800",
        "138001380001",
        "12800138000",
        "+1 415 555 0100",
        "abcdefghijk",
        "1" * 32,
        "١٣٨٠٠١٣٨٠٠٠",  # Arabic-Indic digits: Python's \d takes them
        "13८00138000",  # one Devanagari digit
    ],
)
def test_only_mainland_mobile_numbers_get_codes(api, typed) -> None:
    response = api.post(OTP, {"phone": typed}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] in {"phone_invalid", "invalid"}
    assert "phone" in response.json()["errors"]
    assert sms.outbox == []


def test_no_cache_key_names_the_phone(api, monkeypatch) -> None:
    """Throttle and gate keys live in Redis, whose key names anyone with
    access to it can list: a phone number appears in none of them."""
    written: list[str] = []
    for method in ("add", "set", "incr", "get"):
        real = getattr(cache, method)

        def recording(key, *args, _real=real, **kwargs):
            written.append(str(key))
            return _real(key, *args, **kwargs)

        monkeypatch.setattr(cache, method, recording)
    assert api.post(OTP, {"phone": "13800138000"}, format="json").status_code == 202
    assert written
    assert not [key for key in written if "13800138000" in key]


def test_the_answer_does_not_reveal_whether_the_phone_has_an_account(api) -> None:
    CitizenFactory(phone="13800138000")
    known = api.post(OTP, {"phone": "13800138000"}, format="json")
    unknown = api.post(OTP, {"phone": "13900139000"}, format="json")
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()


def test_first_login_creates_the_account_at_identity_level_1(api) -> None:
    body = log_in(api, "13800138000")
    assert set(body) == {"access", "refresh", "user"}
    assert body["user"]["phone"] == "138****8000"
    assert body["user"]["identity_level"] == 1
    user = User.objects.get(phone="13800138000")
    assert not user.has_usable_password()
    assert str(user.id) == body["user"]["id"]


def test_second_login_finds_the_same_account(api) -> None:
    first = log_in(api, "13800138000")
    age_challenges("13800138000", 61)
    second = log_in(api, "13800138000")
    assert first["user"]["id"] == second["user"]["id"]
    assert User.objects.filter(phone="13800138000").count() == 1


def test_the_code_is_stored_only_as_a_hash(api) -> None:
    api.post(OTP, {"phone": "13800138000"}, format="json")
    code = last_code_sent_to("13800138000")
    challenge = OtpChallenge.objects.get()
    assert code not in challenge.code_hash
    assert len(challenge.code_hash) == 64


def test_a_wrong_code_says_how_many_tries_are_left(api) -> None:
    api.post(OTP, {"phone": "13800138000"}, format="json")
    code = last_code_sent_to("13800138000")
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    response = api.post(TOKEN, {"phone": "13800138000", "code": wrong}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "otp_invalid"
    assert response.json()["attempts_left"] == 4


def test_five_wrong_codes_burn_the_challenge(api) -> None:
    api.post(OTP, {"phone": "13800138000"}, format="json")
    code = last_code_sent_to("13800138000")
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    codes = [
        api.post(TOKEN, {"phone": "13800138000", "code": wrong}, format="json").json()["code"]
        for _ in range(5)
    ]
    assert codes == ["otp_invalid"] * 4 + ["otp_attempts_exceeded"]
    # Even the right code is useless now.
    response = api.post(TOKEN, {"phone": "13800138000", "code": code}, format="json")
    assert response.json()["code"] == "otp_expired"
    assert not User.objects.filter(phone="13800138000").exists()


def test_a_code_expires_after_five_minutes(api) -> None:
    api.post(OTP, {"phone": "13800138000"}, format="json")
    code = last_code_sent_to("13800138000")
    age_challenges("13800138000", 301)
    response = api.post(TOKEN, {"phone": "13800138000", "code": code}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "otp_expired"


def test_a_code_works_once(api) -> None:
    api.post(OTP, {"phone": "13800138000"}, format="json")
    code = last_code_sent_to("13800138000")
    assert api.post(TOKEN, {"phone": "13800138000", "code": code}, format="json").status_code == 200
    again = api.post(TOKEN, {"phone": "13800138000", "code": code}, format="json")
    assert again.json()["code"] == "otp_expired"


def test_a_new_code_replaces_the_old_one(api) -> None:
    api.post(OTP, {"phone": "13800138000"}, format="json")
    old = last_code_sent_to("13800138000")
    age_challenges("13800138000", 61)
    api.post(OTP, {"phone": "13800138000"}, format="json")
    new = last_code_sent_to("13800138000")
    if old != new:
        assert (
            api.post(TOKEN, {"phone": "13800138000", "code": old}, format="json").status_code == 400
        )
    assert api.post(TOKEN, {"phone": "13800138000", "code": new}, format="json").status_code == 200


def test_a_code_for_one_phone_does_not_log_in_another(api) -> None:
    api.post(OTP, {"phone": "13800138000"}, format="json")
    code = last_code_sent_to("13800138000")
    response = api.post(TOKEN, {"phone": "13900139000", "code": code}, format="json")
    assert response.json()["code"] == "otp_expired"


def test_a_code_that_is_not_six_digits_is_refused_without_using_a_try(api) -> None:
    api.post(OTP, {"phone": "13800138000"}, format="json")
    response = api.post(TOKEN, {"phone": "13800138000", "code": "12ab"}, format="json")
    assert response.json()["code"] == "otp_invalid"
    assert OtpChallenge.objects.get().attempts == 0


def test_a_code_typed_in_full_width_logs_in(api) -> None:
    api.post(OTP, {"phone": "13800138000"}, format="json")
    code = last_code_sent_to("13800138000")
    wide = "".join(chr(ord(digit) - ord("0") + ord("０")) for digit in code)
    response = api.post(TOKEN, {"phone": "13800138000", "code": wide}, format="json")
    assert response.status_code == 200


def test_a_code_in_another_scripts_digits_is_refused_without_using_a_try(api) -> None:
    api.post(OTP, {"phone": "13800138000"}, format="json")
    code = last_code_sent_to("13800138000")
    arabic_indic = "".join(chr(ord(digit) - ord("0") + 0x0660) for digit in code)
    response = api.post(TOKEN, {"phone": "13800138000", "code": arabic_indic}, format="json")
    assert response.json()["code"] == "otp_invalid"
    assert OtpChallenge.objects.get().attempts == 0


def test_one_code_per_minute_per_phone(api) -> None:
    assert api.post(OTP, {"phone": "13800138000"}, format="json").status_code == 202
    again = api.post(OTP, {"phone": "13800138000"}, format="json")
    assert again.status_code == 429
    assert again.json()["code"] == "throttled"
    assert 1 <= int(again["Retry-After"]) <= 60
    assert len(sms.outbox) == 1
    # Another phone is not affected.
    assert api.post(OTP, {"phone": "13900139000"}, format="json").status_code == 202


def test_the_per_phone_limits_hold_however_the_number_is_written(api) -> None:
    """Another spelling of one number (other digits) is not another phone:
    each would otherwise get its own minute and daily allowance."""
    assert api.post(OTP, {"phone": "13800138000"}, format="json").status_code == 202
    for typed in ("１３８００１３８０００", "1380013800٠", "١٣٨٠٠١٣٨٠٠٠"):
        response = api.post(OTP, {"phone": typed}, format="json")
        assert response.status_code in (400, 429), typed
    assert len(sms.outbox) == 1
    assert set(OtpChallenge.objects.values_list("phone", flat=True)) == {"13800138000"}


def test_the_minute_rule_holds_when_the_cache_forgets(api) -> None:
    api.post(OTP, {"phone": "13800138000"}, format="json")
    cache.clear()
    assert api.post(OTP, {"phone": "13800138000"}, format="json").status_code == 429


def test_ten_codes_per_day_per_phone(api) -> None:
    # From several networks: one may ask for three of them (test_login_strangers).
    for n in range(10):
        address = f"192.0.2.{n // 3 + 1}"
        response = api.post(OTP, {"phone": "13800138000"}, format="json", REMOTE_ADDR=address)
        assert response.status_code == 202
        age_challenges("13800138000", 61)
    response = api.post(OTP, {"phone": "13800138000"}, format="json", REMOTE_ADDR="192.0.2.99")
    assert response.status_code == 429
    local_now = timezone.localtime()
    midnight = (local_now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(response["Retry-After"]) - (midnight - local_now).total_seconds()) < 5 + 61 * 10


def test_codes_per_client_address_are_capped(api, settings) -> None:
    settings.OTP_SEND_HOURLY_LIMIT_PER_IP = 3
    for n in range(3):
        assert api.post(OTP, {"phone": f"1380013800{n}"}, format="json").status_code == 202
    response = api.post(OTP, {"phone": "13800138009"}, format="json", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 3500
    # Another address still can.
    assert (
        api.post(OTP, {"phone": "13800138009"}, format="json", REMOTE_ADDR="10.1.2.3").status_code
        == 202
    )


def test_daily_cap_per_client_address(api, settings) -> None:
    settings.OTP_SEND_DAILY_LIMIT_PER_IP = 2
    for n in range(2):
        assert api.post(OTP, {"phone": f"1380013800{n}"}, format="json").status_code == 202
    assert api.post(OTP, {"phone": "13800138009"}, format="json").status_code == 429


def test_login_attempts_are_throttled_per_client(api, monkeypatch, steady_throttle_clock) -> None:
    monkeypatch.setattr(ClientScopedRateThrottle, "THROTTLE_RATES", {"login": "3/min"})
    responses = [
        api.post(TOKEN, {"phone": "13800138000", "code": "000000"}, format="json") for _ in range(4)
    ]
    assert [r.status_code for r in responses] == [400, 400, 400, 429]
    assert responses[3].json()["code"] == "throttled"
    assert 1 <= int(responses[3]["Retry-After"]) <= 60


def test_a_suspended_account_cannot_log_in(api) -> None:
    CitizenFactory(phone="13800138000", is_active=False)
    api.post(OTP, {"phone": "13800138000"}, format="json")
    response = api.post(
        TOKEN, {"phone": "13800138000", "code": last_code_sent_to("13800138000")}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "account_suspended"


def test_when_the_sms_gateway_fails_the_citizen_may_retry_at_once(api, settings) -> None:
    settings.SMS_BACKEND = "tests.accounts.test_login_api.BrokenGateway"
    response = api.post(OTP, {"phone": "13800138000"}, format="json")
    assert response.status_code == 503
    assert response.json()["code"] == "sms_unavailable"
    assert not OtpChallenge.objects.exists()
    settings.SMS_BACKEND = "locmem"
    assert api.post(OTP, {"phone": "13800138000"}, format="json").status_code == 202


class BrokenGateway(sms.BaseSmsBackend):
    def send(self, message: sms.SmsMessage) -> None:
        raise sms.SmsDeliveryError("gateway timeout")


@pytest.mark.parametrize("scope", ["login", "refresh"])
def test_logins_and_refreshes_sent_side_by_side_cannot_outrun_the_rate(
    monkeypatch, scope, steady_throttle_clock
) -> None:
    """Requests arriving together are counted one by one: DRF's rate read
    the caller's history and wrote it back, so every request of a burst
    read the same history and passed."""
    from rest_framework.test import APIClient

    from tests.concurrency import sent_side_by_side

    monkeypatch.setattr(ClientScopedRateThrottle, "THROTTLE_RATES", {scope: "2/min"})
    # Refused by their form, without the database, once admitted.
    path, body = {
        "login": (TOKEN, {"phone": "13800138000", "code": "abc"}),
        "refresh": ("/api/v1/auth/token/refresh/", {"refresh": ""}),
    }[scope]

    def send() -> int:
        return APIClient().post(path, body, format="json").status_code

    statuses = sent_side_by_side(
        6, send, reading=(f"throttle_{scope}_", f"throttle-fw:{scope}:"), monkeypatch=monkeypatch
    )
    assert statuses == [400, 400, 429, 429, 429, 429]

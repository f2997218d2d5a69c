"""Account rules under concurrent requests, on PostgreSQL and Redis."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from accounts import sms
from accounts.models import OtpChallenge, User
from tests.accounts.factories import CitizenFactory, make_id_number
from tests.accounts.helpers import last_code_sent_to
from tests.concurrency import at_once
from tests.conftest import client_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_the_real_stack_is_in_use() -> None:
    assert settings.DATABASES["default"]["ENGINE"] == "config.postgresql"
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert settings.CELERY_BROKER_URL.startswith("redis://")


def test_readyz_checks_the_real_database_and_redis() -> None:
    response = APIClient().get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "redis": "ok"}


def test_simultaneous_code_requests_send_one_sms() -> None:
    statuses = at_once(
        8,
        lambda i: (
            APIClient()
            .post("/api/v1/auth/otp/", {"phone": "13800138000"}, format="json")
            .status_code
        ),
    )
    assert sorted(statuses) == [202] + [429] * 7
    assert len([m for m in sms.outbox if m.to == "13800138000"]) == 1
    assert OtpChallenge.objects.filter(phone="13800138000").count() == 1


def test_one_code_logs_in_once_however_many_tries_race() -> None:
    APIClient().post("/api/v1/auth/otp/", {"phone": "13800138000"}, format="json")
    code = last_code_sent_to("13800138000")

    def log_in(_: int) -> int:
        return (
            APIClient()
            .post("/api/v1/auth/token/", {"phone": "13800138000", "code": code}, format="json")
            .status_code
        )

    statuses = at_once(8, log_in)
    assert sorted(statuses) == [200] + [400] * 7
    assert User.objects.filter(phone="13800138000").count() == 1


def test_racing_wrong_codes_never_get_more_than_five_tries() -> None:
    APIClient().post("/api/v1/auth/otp/", {"phone": "13800138000"}, format="json")
    code = last_code_sent_to("13800138000")
    wrong = f"{(int(code) + 1) % 10**6:06d}"

    def guess(_: int) -> str:
        response = APIClient().post(
            "/api/v1/auth/token/", {"phone": "13800138000", "code": wrong}, format="json"
        )
        return response.json()["code"]

    outcomes = Counter(at_once(12, guess))
    assert outcomes == {"otp_invalid": 4, "otp_attempts_exceeded": 1, "otp_expired": 7}
    challenge = OtpChallenge.objects.get(phone="13800138000")
    assert challenge.attempts == 5 and challenge.close_reason == "burned"


def test_racing_wrong_codes_from_strangers_leave_the_citizen_able_to_log_in() -> None:
    """Wrong codes from twelve other networks at once use two of the code's
    tries between them; the citizen's network still logs in with it."""
    APIClient().post(
        "/api/v1/auth/otp/", {"phone": "13800138000"}, format="json", REMOTE_ADDR="198.51.100.7"
    )
    code = last_code_sent_to("13800138000")
    wrong = f"{(int(code) + 1) % 10**6:06d}"

    def guess(i: int) -> str:
        response = APIClient().post(
            "/api/v1/auth/token/",
            {"phone": "13800138000", "code": wrong},
            format="json",
            REMOTE_ADDR=f"2001:db8:{i + 1:x}::1",
        )
        return response.json()["code"]

    outcomes = Counter(at_once(12, guess))
    assert outcomes == {"otp_invalid": 1, "otp_attempts_exceeded": 11}
    challenge = OtpChallenge.objects.get(phone="13800138000")
    assert (challenge.attempts, challenge.attempts_elsewhere) == (2, 2)
    response = APIClient().post(
        "/api/v1/auth/token/",
        {"phone": "13800138000", "code": code},
        format="json",
        REMOTE_ADDR="198.51.100.7",
    )
    assert response.status_code == 200


def test_racing_wrong_codes_from_everywhere_never_get_more_than_five_tries() -> None:
    APIClient().post(
        "/api/v1/auth/otp/", {"phone": "13800138000"}, format="json", REMOTE_ADDR="198.51.100.7"
    )
    code = last_code_sent_to("13800138000")
    wrong = f"{(int(code) + 1) % 10**6:06d}"

    def guess(i: int) -> None:
        APIClient().post(
            "/api/v1/auth/token/",
            {"phone": "13800138000", "code": wrong},
            format="json",
            REMOTE_ADDR="198.51.100.7" if i % 2 else f"203.0.113.{i}",
        )

    at_once(12, guess)
    challenge = OtpChallenge.objects.get(phone="13800138000")
    assert challenge.attempts == 5 and challenge.attempts_elsewhere <= 2
    assert challenge.close_reason == "burned"


def test_one_id_number_verifies_one_account_under_a_race() -> None:
    citizens = [CitizenFactory() for _ in range(4)]
    number = make_id_number(321)

    def verify(i: int) -> int:
        client = client_for(citizens[i])
        return client.post(
            "/api/v1/me/real-name/", {"name": "王小明", "id_number": number}, format="json"
        ).status_code

    assert sorted(at_once(4, verify)) == [200, 409, 409, 409]
    assert User.objects.filter(identity_level=2).count() == 1


def test_a_refresh_token_is_traded_once_under_a_race() -> None:
    from accounts.tokens import tokens_issue

    user = CitizenFactory()
    refresh = tokens_issue(user=user)["refresh"]

    def trade(_: int) -> int:
        return (
            APIClient()
            .post("/api/v1/auth/token/refresh/", {"refresh": refresh}, format="json")
            .status_code
        )

    statuses = at_once(6, trade)
    assert statuses.count(200) == 1
    assert statuses.count(401) == 5


class SlowGateway(sms.LocmemBackend):
    """A gateway that takes its time to accept a message, as real ones do."""

    def send(self, message: sms.SmsMessage) -> None:
        time.sleep(0.3)
        super().send(message)


@pytest.mark.parametrize(
    "address", [lambda i: "203.0.113.9", lambda i: f"2001:db8:1:2::{i + 1:x}"], ids=["ipv4", "ipv6"]
)
def test_simultaneous_codes_from_one_address_stay_within_its_cap(address) -> None:
    # While the gateway answers, the codes being sent are not yet committed
    # rows: counted from the rows alone, every request of a burst passes.
    with override_settings(
        OTP_SEND_HOURLY_LIMIT_PER_IP=3, SMS_BACKEND="tests.accounts.test_real_stack.SlowGateway"
    ):

        def send(i: int) -> int:
            return (
                APIClient()
                .post(
                    "/api/v1/auth/otp/",
                    {"phone": f"1380013800{i}"},
                    format="json",
                    REMOTE_ADDR=address(i),
                )
                .status_code
            )

        statuses = at_once(8, send)
    assert sorted(statuses) == [202] * 3 + [429] * 5
    assert len(sms.outbox) == OtpChallenge.objects.count() == 3


def test_a_burst_of_real_name_checks_stays_within_the_citizens_rate(monkeypatch) -> None:
    # Each check asks the identity bureau, which bills it, and answers
    # whether a name and an ID number belong together: a burst must not
    # get past the citizen's rate.
    from rest_framework.throttling import UserRateThrottle

    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"real_name": "3/day"})
    client = client_for(CitizenFactory())

    def check(i: int) -> int:
        return client.post(
            "/api/v1/me/real-name/",
            {"name": "王小明", "id_number": make_id_number(999)},
            format="json",
        ).status_code

    statuses = at_once(12, check)
    assert Counter(statuses) == {422: 3, 429: 9}

"""Whose address is it? ``X-Forwarded-For`` counts only as deep as
``NUM_PROXIES`` says, and only when it holds an IP address."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from accounts.models import AuditEntry, OtpChallenge
from config.api import ClientScopedRateThrottle, client_block, client_ip

pytestmark = pytest.mark.django_db

OTP = "/api/v1/auth/otp/"
TOKEN = "/api/v1/auth/token/"


@pytest.mark.parametrize(
    ("proxies", "forwarded", "remote", "expected"),
    [
        (0, "", "203.0.113.9", "203.0.113.9"),
        (0, "198.51.100.1", "203.0.113.9", "203.0.113.9"),
        (0, "not-an-ip", "203.0.113.9", "203.0.113.9"),
        (1, "198.51.100.1", "10.0.0.2", "198.51.100.1"),
        (1, "192.0.2.77, 198.51.100.1", "10.0.0.2", "198.51.100.1"),
        (2, "192.0.2.77, 198.51.100.1, 10.0.0.3", "10.0.0.2", "198.51.100.1"),
        (2, "198.51.100.1", "10.0.0.2", "198.51.100.1"),
        (1, "not-an-ip", "10.0.0.2", "10.0.0.2"),
        (1, "1.2.3.4:5678", "10.0.0.2", "10.0.0.2"),
        (1, " 2001:DB8::1 ", "10.0.0.2", "2001:db8::1"),
        (1, "", "10.0.0.2", "10.0.0.2"),
        (0, "", "garbage", None),
        (1, "fe80::1%" + "x" * 50, "10.0.0.2", "10.0.0.2"),
        (0, "", "fe80::1%eth0", None),
    ],
)
def test_the_client_address_rule(settings, proxies, forwarded, remote, expected) -> None:
    settings.NUM_PROXIES = proxies
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


def test_a_changing_forwarded_header_does_not_lift_the_otp_cap_per_address(api, settings) -> None:
    settings.OTP_SEND_HOURLY_LIMIT_PER_IP = 3
    for n in range(3):
        response = api.post(
            OTP, {"phone": f"1380013800{n}"}, format="json", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}"
        )
        assert response.status_code == 202
    response = api.post(
        OTP, {"phone": "13800138009"}, format="json", HTTP_X_FORWARDED_FOR="192.0.2.200"
    )
    assert response.status_code == 429
    assert set(OtpChallenge.objects.values_list("ip", flat=True)) == {"127.0.0.1"}


def wrong_login(api, **meta: str) -> int:
    """A login with a wrong code, from the address ``meta`` says; its status."""
    return api.post(
        TOKEN, {"phone": "13800138000", "code": "000000"}, format="json", **meta
    ).status_code


def test_a_changing_forwarded_header_does_not_lift_the_login_throttle(
    api, monkeypatch, steady_throttle_clock
) -> None:
    monkeypatch.setattr(ClientScopedRateThrottle, "THROTTLE_RATES", {"login": "3/min"})
    codes = [wrong_login(api, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}") for n in range(4)]
    assert codes == [400, 400, 400, 429]


@pytest.mark.parametrize(
    ("address", "block"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2::7", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::7", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        (None, None),
    ],
)
def test_per_address_throttles_count_an_ipv6_client_by_its_64(address, block) -> None:
    assert client_block(address) == block


def test_rotating_addresses_within_one_ipv6_64_does_not_lift_the_login_throttle(
    api, monkeypatch, steady_throttle_clock
) -> None:
    monkeypatch.setattr(ClientScopedRateThrottle, "THROTTLE_RATES", {"login": "3/min"})
    codes = [wrong_login(api, REMOTE_ADDR=f"2001:db8:1:2::{n + 1:x}") for n in range(4)]
    assert codes == [400, 400, 400, 429]
    # Another subscriber's network counts on its own.
    assert wrong_login(api, REMOTE_ADDR="2001:db8:9::1") == 400


@pytest.mark.parametrize(
    "forwarded", ["not-an-ip", "1.2.3.4, 5.6.7.8", "::ffff:zz", "ä" * 40, "fe80::1%" + "z" * 60]
)
def test_a_junk_forwarded_header_never_breaks_a_request(api, settings, forwarded) -> None:
    settings.NUM_PROXIES = 1
    response = api.post(
        OTP, {"phone": "13800138000"}, format="json", HTTP_X_FORWARDED_FOR=forwarded
    )
    assert response.status_code == 202
    expected = "5.6.7.8" if forwarded == "1.2.3.4, 5.6.7.8" else "127.0.0.1"
    assert OtpChallenge.objects.get().ip == expected


def test_behind_one_proxy_the_address_it_saw_counts(api, settings) -> None:
    settings.NUM_PROXIES = 1
    settings.OTP_SEND_HOURLY_LIMIT_PER_IP = 1

    def send(phone: str, forwarded: str) -> int:
        return api.post(
            OTP,
            {"phone": phone},
            format="json",
            REMOTE_ADDR="10.0.0.2",
            HTTP_X_FORWARDED_FOR=forwarded,
        ).status_code

    assert send("13800138000", "192.0.2.1") == 202
    # The same citizen's address again, with a forged entry on the left.
    assert send("13900139000", "198.51.100.7, 192.0.2.1") == 429
    assert send("13900139000", "192.0.2.2") == 202


def test_the_admin_audit_trail_records_the_same_address(client, operator, settings) -> None:
    from tests.accounts.factories import CitizenFactory

    settings.NUM_PROXIES = 0
    citizen = CitizenFactory(verified=True)
    client.force_login(operator)
    response = client.post(
        f"/admin/accounts/user/{citizen.pk}/pii/",
        REMOTE_ADDR="203.0.113.5",
        HTTP_X_FORWARDED_FOR="198.51.100.66",
    )
    assert response.status_code == 200
    entry = AuditEntry.objects.filter(action="user.pii_viewed").latest("at")
    assert entry.ip == "203.0.113.5"

"""The OTP send caps per client address count an IPv6 client by its /64,
as every per-address throttle does (config.api.client_block)."""

from __future__ import annotations

import pytest

from accounts import otp
from accounts.models import OtpChallenge

pytestmark = pytest.mark.django_db

OTP = "/api/v1/auth/otp/"


def send(api, phone: str, address: str) -> int:
    return api.post(OTP, {"phone": phone}, format="json", REMOTE_ADDR=address).status_code


def test_rotating_addresses_within_one_ipv6_64_hits_the_hourly_otp_cap(api, settings) -> None:
    settings.OTP_SEND_HOURLY_LIMIT_PER_IP = 3
    codes = [send(api, f"1380013800{n}", f"2001:db8:1:2::{n + 1:x}") for n in range(4)]
    assert codes == [202, 202, 202, 429]
    # Another subscriber's network counts on its own.
    assert send(api, "13800138009", "2001:db8:1:3::1") == 202


def test_rotating_addresses_within_one_ipv6_64_hits_the_daily_otp_cap(api, settings) -> None:
    settings.OTP_SEND_DAILY_LIMIT_PER_IP = 2
    codes = [send(api, f"1380013800{n}", f"2001:db8:1:2:{n:x}::1") for n in range(3)]
    assert codes == [202, 202, 429]
    assert send(api, "13800138009", "2001:db8:ffff:2::1") == 202


def test_an_ipv4_mapped_address_counts_as_its_ipv4(api, settings) -> None:
    settings.OTP_SEND_HOURLY_LIMIT_PER_IP = 1
    assert send(api, "13800138000", "192.0.2.7") == 202
    assert send(api, "13800138001", "::ffff:192.0.2.7") == 429


def test_the_exact_address_is_still_kept_for_the_citizen(api) -> None:
    assert send(api, "13800138000", "2001:db8:1:2::abcd") == 202
    assert OtpChallenge.objects.get().ip == "2001:db8:1:2::abcd"


def test_a_code_sent_without_an_address_counts_against_no_address() -> None:
    otp.otp_send(phone="13800138000", ip=None)
    otp.otp_send(phone="13800138001", ip=None)
    assert OtpChallenge.objects.count() == 2


def test_sends_under_way_from_the_block_count_against_its_cap(api, settings) -> None:
    """A send's row commits only once the gateway has answered: the sends
    still waiting for it count too (the real stack's test races them)."""
    from django.core.cache import cache

    settings.OTP_SEND_HOURLY_LIMIT_PER_IP = 3
    assert send(api, "13800138000", "2001:db8:1:2::1") == 202
    cache.set("otp-send-under-way:2001:db8:1:2::/64", 2, timeout=60)  # two waiting
    assert send(api, "13800138001", "2001:db8:1:2::2") == 429
    cache.set("otp-send-under-way:2001:db8:1:2::/64", 1, timeout=60)
    assert send(api, "13800138001", "2001:db8:1:2::2") == 202
    assert cache.get("otp-send-under-way:2001:db8:1:2::/64") == 1  # its own count is gone


@pytest.mark.django_db
def test_a_send_that_outlived_the_count_leaves_it_at_zero_not_below() -> None:
    """A send whose count expired while it waited for the gateway takes
    nothing off the next count: below zero, it would hide the next sends
    under way (on Redis in the PostgreSQL pass, in the cache otherwise)."""
    from config.redis_client import redis_client, redis_enabled, redis_key

    key = "otp-send-under-way:2001:db8:9:9::/64"
    assert otp._under_way_add(key, 1) == 1
    if redis_enabled():
        redis_client().delete(redis_key(key))  # expired
    else:
        from django.core.cache import cache

        cache.delete(key)
    assert otp._under_way_add(key, -1) == 0
    assert otp._under_way_add(key, 1) == 1
    assert otp._under_way_add(key, 1) == 2
    assert otp._under_way_add(key, -1) == 1

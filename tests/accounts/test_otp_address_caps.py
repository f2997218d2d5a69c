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
    settings.OTP_SEND_HOURLY_LIMIT_PER_IP = 3
    block = "2001:db8:1:2::/64"
    assert send(api, "13800138000", "2001:db8:1:2::1") == 202
    with otp._sends_under_way(block), otp._sends_under_way(block):  # two waiting
        assert send(api, "13800138001", "2001:db8:1:2::2") == 429
    with otp._sends_under_way(block) as others:  # one waiting
        assert others == 0
        assert send(api, "13800138001", "2001:db8:1:2::2") == 202
        with otp._sends_under_way(block) as others_now:
            assert others_now == 1  # the send that ended took only itself off


@pytest.fixture
def clock(monkeypatch):
    """otp's clock, moved by hand."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(otp.time, "time", lambda: now[0])
    return now


def test_a_send_that_outlived_its_time_takes_nothing_off_later_sends(clock) -> None:
    """A send that waited for the gateway past its time stops counting; when
    it ends it takes nothing off the sends that began after it (a shared
    counter lost one of them, on Redis in the PostgreSQL pass, in the
    process otherwise)."""
    block = "2001:db8:9:9::/64"
    with otp._sends_under_way(block) as others:
        assert others == 0
        clock[0] += otp._UNDER_WAY_SECONDS + 1
        late = otp._sends_under_way(block)
        assert late.__enter__() == 0  # the first send no longer counts
    # The first send has ended: the later one still counts.
    with otp._sends_under_way(block) as others:
        assert others == 1
    late.__exit__(None, None, None)
    with otp._sends_under_way(block) as others:
        assert others == 0


def test_a_send_left_behind_stops_counting_after_its_time(clock) -> None:
    """A process killed mid-send never takes itself off: its entry stops
    counting once its time is over."""
    block = "2001:db8:9:a::/64"
    otp._under_way_start(f"otp-send-under-way:{block}", "killed")
    with otp._sends_under_way(block) as others:
        assert others == 1
    clock[0] += otp._UNDER_WAY_SECONDS + 1
    with otp._sends_under_way(block) as others:
        assert others == 0

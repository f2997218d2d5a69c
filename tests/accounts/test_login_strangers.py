"""A stranger who knows a citizen's phone number tries to keep the citizen
from logging in: by typing wrong codes for the number, and by asking for
codes for it.

Networks are told apart as the throttles tell them (config.api.client_ip,
as far as ``NUM_PROXIES`` trusts ``X-Forwarded-For``, then client_block: an
IPv4 address, an IPv6 /64). The network that asked for a code keeps most
of its tries; wrong codes from everywhere else share the rest.
"""

from __future__ import annotations

import datetime as dt
import itertools

import hypothesis
import pytest
from django.core.cache import cache
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from accounts import otp, sms
from accounts.errors import AccountsError
from accounts.models import OtpChallenge, User
from config.api import ClientScopedRateThrottle
from tests.accounts.helpers import last_code_sent_to

pytestmark = pytest.mark.django_db

OTP = "/api/v1/auth/otp/"
TOKEN = "/api/v1/auth/token/"
PHONE = "13800138000"
OWNER = "198.51.100.7"  # the citizen's phone, on its network
STRANGER = "203.0.113.66"


def ask(api, address: str, phone: str = PHONE):
    return api.post(OTP, {"phone": phone}, format="json", REMOTE_ADDR=address)


def type_code(api, code: str, address: str, phone: str = PHONE):
    return api.post(TOKEN, {"phone": phone, "code": code}, format="json", REMOTE_ADDR=address)


def wrong(*codes: str) -> str:
    """A code that is none of ``codes``."""
    guess = int(codes[0])
    while f"{guess:06d}" in codes:
        guess = (guess + 1) % 10**6
    return f"{guess:06d}"


def a_minute_passes(phone: str = PHONE) -> None:
    """Pretend the codes of ``phone`` were sent 61 s earlier (past the
    one-a-minute rule; the cache's gate for it has expired meanwhile)."""
    cache.delete(otp.send_gate_key(phone))
    for challenge in OtpChallenge.objects.filter(phone=phone):
        challenge.created_at -= dt.timedelta(seconds=61)
        challenge.expires_at -= dt.timedelta(seconds=61)
        challenge.save()


def seconds_to_midnight() -> float:
    now = timezone.localtime()
    midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


# --- Wrong codes -----------------------------------------------------------------------


def test_a_strangers_wrong_codes_do_not_stop_the_citizen_logging_in(api) -> None:
    assert ask(api, OWNER).status_code == 202
    code = last_code_sent_to(PHONE)
    answers = [type_code(api, wrong(code), STRANGER).json() for _ in range(10)]
    assert [a["code"] for a in answers] == ["otp_invalid"] + ["otp_attempts_exceeded"] * 9
    assert answers[0]["attempts_left"] == 1
    response = type_code(api, code, OWNER)
    assert response.status_code == 200, response.json()
    assert User.objects.filter(phone=PHONE).exists()


def test_strangers_on_many_networks_share_two_tries_of_a_code(api) -> None:
    assert ask(api, OWNER).status_code == 202
    code = last_code_sent_to(PHONE)
    networks = [f"2001:db8:{n:x}::1" for n in range(1, 7)] + ["192.0.2.1", "192.0.2.2"]
    answers = [type_code(api, wrong(code), address).json()["code"] for address in networks * 2]
    assert answers[:2] == ["otp_invalid", "otp_attempts_exceeded"]
    assert set(answers[2:]) == {"otp_attempts_exceeded"}
    challenge = OtpChallenge.objects.get()
    assert (challenge.attempts, challenge.attempts_elsewhere) == (2, 2)
    assert challenge.closed_at is None
    assert type_code(api, code, OWNER).status_code == 200


def test_the_citizen_keeps_three_tries_whatever_strangers_typed(api) -> None:
    assert ask(api, OWNER).status_code == 202
    code = last_code_sent_to(PHONE)
    for _ in range(5):
        type_code(api, wrong(code), STRANGER)
    answers = [type_code(api, wrong(code), OWNER).json() for _ in range(3)]
    assert [a.get("attempts_left") for a in answers] == [2, 1, None]
    assert answers[2]["code"] == "otp_attempts_exceeded"
    # Five wrong codes in all: the code is burned, even for its network.
    assert type_code(api, code, OWNER).json()["code"] == "otp_expired"
    challenge = OtpChallenge.objects.get()
    assert (challenge.attempts, challenge.close_reason) == (5, "burned")


def test_five_wrong_codes_from_the_network_that_asked_burn_the_code(api) -> None:
    assert ask(api, OWNER).status_code == 202
    code = last_code_sent_to(PHONE)
    answers = [type_code(api, wrong(code), OWNER).json()["code"] for _ in range(5)]
    assert answers == ["otp_invalid"] * 4 + ["otp_attempts_exceeded"]
    assert type_code(api, code, OWNER).json()["code"] == "otp_expired"
    assert type_code(api, code, STRANGER).json()["code"] == "otp_expired"


def test_the_citizen_on_another_network_than_the_one_that_asked_has_two_tries(api) -> None:
    """A phone that moved from Wi-Fi to mobile data between asking and
    typing: the right code still logs in; after two wrong ones, it asks for
    a new code from where it is now."""
    assert ask(api, OWNER).status_code == 202
    code = last_code_sent_to(PHONE)
    assert type_code(api, code, "2001:db8:77::1").status_code == 200

    a_minute_passes()
    assert ask(api, OWNER).status_code == 202
    code = last_code_sent_to(PHONE)
    moved = "2001:db8:77::1"
    assert [type_code(api, wrong(code), moved).json()["code"] for _ in range(2)] == [
        "otp_invalid",
        "otp_attempts_exceeded",
    ]
    assert type_code(api, code, moved).json()["code"] == "otp_attempts_exceeded"
    a_minute_passes()
    assert ask(api, moved).status_code == 202
    assert type_code(api, last_code_sent_to(PHONE), moved).status_code == 200


def test_behind_a_proxy_the_strangers_forwarded_address_tells_them_apart(api, settings) -> None:
    """With NUM_PROXIES, the address the proxy saw counts; a forged entry on
    the left of X-Forwarded-For does not make the stranger the citizen."""
    settings.NUM_PROXIES = 1
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    owner = {**proxy, "HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    stranger = {**proxy, "HTTP_X_FORWARDED_FOR": "198.51.100.7, 203.0.113.66"}
    assert api.post(OTP, {"phone": PHONE}, format="json", **owner).status_code == 202
    code = last_code_sent_to(PHONE)
    for _ in range(5):
        api.post(TOKEN, {"phone": PHONE, "code": wrong(code)}, format="json", **stranger)
    response = api.post(TOKEN, {"phone": PHONE, "code": code}, format="json", **owner)
    assert response.status_code == 200


def test_a_strangers_spent_login_rate_is_not_the_citizens(
    api, monkeypatch, steady_throttle_clock
) -> None:
    monkeypatch.setattr(ClientScopedRateThrottle, "THROTTLE_RATES", {"login": "3/min"})
    assert ask(api, OWNER).status_code == 202
    code = last_code_sent_to(PHONE)
    statuses = [type_code(api, wrong(code), STRANGER).status_code for _ in range(4)]
    assert statuses == [400, 400, 400, 429]
    assert type_code(api, code, OWNER).status_code == 200


# --- Codes asked for by a stranger -------------------------------------------------------


def test_a_strangers_code_request_replaces_none_of_the_citizens_codes(api) -> None:
    assert ask(api, OWNER).status_code == 202
    code = last_code_sent_to(PHONE)
    a_minute_passes()
    assert ask(api, STRANGER).status_code == 202
    theirs = last_code_sent_to(PHONE)  # it reached the citizen's phone, not the stranger
    assert len([m for m in sms.outbox if m.to == PHONE]) == 2
    # The stranger burns the code they asked for.
    for _ in range(5):
        type_code(api, wrong(code, theirs), STRANGER)
    assert OtpChallenge.objects.get(ip=STRANGER).close_reason == "burned"
    assert type_code(api, code, OWNER).status_code == 200


def test_the_citizen_may_log_in_with_the_code_a_stranger_asked_for(api) -> None:
    """Either SMS the citizen got logs in; the login ends the other code."""
    assert ask(api, OWNER).status_code == 202
    own = last_code_sent_to(PHONE)
    a_minute_passes()
    assert ask(api, STRANGER).status_code == 202
    latest = last_code_sent_to(PHONE)
    assert type_code(api, latest, OWNER).status_code == 200
    if own != latest:
        assert type_code(api, own, OWNER).json()["code"] == "otp_expired"
    assert set(OtpChallenge.objects.values_list("close_reason", flat=True)) == {
        "used",
        "superseded",
    }


def test_a_new_code_asked_for_from_the_same_network_replaces_the_earlier_one(api) -> None:
    assert ask(api, OWNER).status_code == 202
    first = last_code_sent_to(PHONE)
    a_minute_passes()
    assert ask(api, OWNER).status_code == 202
    second = last_code_sent_to(PHONE)
    assert list(
        OtpChallenge.objects.order_by("created_at").values_list("close_reason", flat=True)
    ) == ["superseded", ""]
    if first != second:
        assert type_code(api, first, OWNER).json()["code"] == "otp_invalid"
    assert type_code(api, second, OWNER).status_code == 200


def test_one_network_asks_for_at_most_three_of_a_numbers_codes_a_day(api) -> None:
    statuses = []
    for _ in range(4):
        statuses.append(ask(api, STRANGER).status_code)
        a_minute_passes()
    assert statuses == [202, 202, 202, 429]
    refused = ask(api, STRANGER)
    assert refused.json()["code"] == "throttled"
    assert abs(int(refused["Retry-After"]) - seconds_to_midnight()) < 5 + 61 * 4
    # The citizen's own network still gets a code, and logs in with it.
    assert ask(api, OWNER).status_code == 202
    assert type_code(api, last_code_sent_to(PHONE), OWNER).status_code == 200


def test_the_cap_per_network_is_per_number(api) -> None:
    for _ in range(3):
        assert ask(api, STRANGER).status_code == 202
        a_minute_passes()
    assert ask(api, STRANGER, phone="13900139000").status_code == 202


def test_what_a_stranger_on_four_networks_still_can_do(api) -> None:
    """What remains without a CAPTCHA: the number's ten codes a day, asked
    for from four networks, leave the citizen none until midnight (China
    time); and each of their codes makes the citizen wait up to a minute
    before asking."""
    networks = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]
    statuses = []
    for address in itertools.islice(itertools.cycle(networks), 10):
        statuses.append(ask(api, address).status_code)
        waiting = ask(api, OWNER)
        assert waiting.status_code == 429 and 1 <= int(waiting["Retry-After"]) <= 60
        a_minute_passes()
    assert statuses == [202] * 10
    refused = ask(api, OWNER)
    assert refused.status_code == 429
    assert abs(int(refused["Retry-After"]) - seconds_to_midnight()) < 5 + 61 * 10


# --- The rule over any order of tries ---------------------------------------------------

_examples = itertools.count()


@hypothesis.settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["asker", "x", "y"]), st.booleans()), max_size=9))
def test_no_code_takes_more_than_five_wrong_codes_and_elsewhere_at_most_two(tries) -> None:
    """Over any order of wrong and right codes from the network that asked
    and from two others: a code takes at most five wrong codes in all, at
    most two of them from elsewhere; the right code logs in while the
    caller still has a try."""
    n = next(_examples)
    phone = f"1370013{n % 10**4:04d}"
    networks = {
        "asker": f"10.0.{n // 256 % 256}.{n % 256}",
        "x": "203.0.113.1",
        "y": "2001:db8:5::1",
    }
    otp.otp_send(phone=phone, ip=networks["asker"])
    code = last_code_sent_to(phone)
    wrong_in_all = wrong_elsewhere = 0
    logged_in = False
    for network, right in tries:
        elsewhere = network != "asker"
        left = 5 - wrong_in_all
        if elsewhere:
            left = min(left, 2 - wrong_elsewhere)
        try:
            otp.otp_login(phone=phone, code=code if right else wrong(code), ip=networks[network])
        except AccountsError as refused:
            outcome = refused.code
        else:
            outcome = "logged_in"
        if logged_in or wrong_in_all >= 5:
            assert outcome == "otp_expired"
        elif left <= 0:
            assert outcome == "otp_attempts_exceeded"
        elif right:
            assert outcome == "logged_in"
            logged_in = True
        else:
            wrong_in_all += 1
            wrong_elsewhere += elsewhere
            still = min(5 - wrong_in_all, 2 - wrong_elsewhere) if elsewhere else 5 - wrong_in_all
            assert outcome == ("otp_attempts_exceeded" if still <= 0 else "otp_invalid")
    challenge = OtpChallenge.objects.get(phone=phone)
    assert challenge.attempts == wrong_in_all <= 5
    assert challenge.attempts_elsewhere == wrong_elsewhere <= 2

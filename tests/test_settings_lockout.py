"""Admin log-in lock-outs (django-axes) count an IPv6 client by its /64, as
the per-address throttles do: a host owns its /64 and may take a new
address for every try. IPv4 addresses count one by one; the audit trail
keeps the full address."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command

from accounts.models import AuditEntry
from config.api import lockout_address
from tests.accounts.factories import AccessAttemptFactory, StaffFactory

pytestmark = pytest.mark.django_db


def _wrong_password(client, address: str):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": "opx", "password": "wrong-password"},
        REMOTE_ADDR=address,
    )


def _tries_until_locked(client, addresses: list[str]) -> list[int]:
    return [_wrong_password(client, address).status_code for address in addresses]


def test_a_new_address_in_the_same_64_for_every_try_is_still_locked_out(client, settings):
    StaffFactory(username="opx")
    limit = settings.AXES_FAILURE_LIMIT
    codes = _tries_until_locked(client, [f"2001:db8:1:2::{i:x}" for i in range(1, limit + 3)])
    assert codes[: limit - 1] == [200] * (limit - 1)
    assert set(codes[limit:]) == {429}
    # One record for the block, as an address (axes keeps it in an IP field).
    assert list(AccessAttempt.objects.values_list("username", "ip_address")) == [
        ("opx", "2001:db8:1:2::")
    ]
    # Another subscriber's /64 is not locked out.
    assert _wrong_password(client, "2001:db8:1:3::1").status_code == 200


def test_ipv4_addresses_count_one_by_one(client, settings):
    StaffFactory(username="opx")
    limit = settings.AXES_FAILURE_LIMIT
    codes = _tries_until_locked(client, [f"10.0.0.{i}" for i in range(1, limit + 3)])
    assert 429 not in codes
    assert _tries_until_locked(client, ["10.0.0.1"] * limit)[-1] == 429
    # An IPv4 client reaching us over IPv6 (mapped) is its IPv4 address.
    assert _wrong_password(client, "::ffff:10.0.0.1").status_code == 429


def test_axes_reset_ip_lifts_a_block_by_the_address_the_admin_shows(client, settings):
    StaffFactory(username="opx")
    limit = settings.AXES_FAILURE_LIMIT
    _tries_until_locked(client, ["2001:db8:1:2::5"] * limit)
    assert _wrong_password(client, "2001:db8:1:2::9").status_code == 429
    call_command("axes_reset_ip", "2001:db8:1:2::")
    assert not AccessAttempt.objects.exists()
    assert _wrong_password(client, "2001:db8:1:2::9").status_code == 200
    _tries_until_locked(client, ["2001:db8:1:2::5"] * limit)
    call_command("axes_reset")
    assert _wrong_password(client, "2001:db8:1:2::9").status_code == 200
    _tries_until_locked(client, ["2001:db8:1:2::5"] * limit)
    call_command("axes_reset_username", "opx")
    assert _wrong_password(client, "2001:db8:1:2::9").status_code == 200


def test_the_audit_trail_keeps_the_full_address(operator_client):
    attempt = AccessAttemptFactory(ip_address="2001:db8:1:2::")
    lifted = operator_client.post(
        f"/admin/axes/accessattempt/{attempt.pk}/delete/",
        {"post": "yes"},
        REMOTE_ADDR="2001:db8:9:8::7",
    )
    assert lifted.status_code == 302
    assert AuditEntry.objects.get(action="admin.accessattempt.deleted").ip == "2001:db8:9:8::7"


@pytest.mark.parametrize(
    ("remote", "counted"),
    [
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"),
        ("2001:db8::1", "2001:db8::"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
        ("not-an-address", None),
    ],
)
def test_lockout_address(rf, remote, counted):
    assert lockout_address(rf.get("/admin/login/", REMOTE_ADDR=remote)) == counted

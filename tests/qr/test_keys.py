"""Keys rotate without a valid code ever failing; retired keys leave when no code needs them."""

from __future__ import annotations

import datetime as dt
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from qr import caches, keys, selectors
from qr.models import SigningKey
from tests.qr.conftest import create_venue, issue, verify
from tests.qr.test_star_code_api import independently_verified

pytestmark = pytest.mark.django_db


def kids(api) -> list[str]:
    return [k["kid"] for k in api.get("/api/v1/qr/keys/").json()["keys"]]


def test_rotation_publishes_the_new_key_before_it_signs(citizen_api, api, settings):
    old = keys.signing_key_ensure()
    new = keys.signing_key_rotate()
    ahead = (new.activates_at - new.created_at).total_seconds()
    assert 3599 < ahead <= 3600
    assert kids(api) == [new.kid, old.kid]
    claims_kid = independently_verified(api, issue(citizen_api)["code"])
    assert claims_kid and selectors.signing_key_active().kid == old.kid
    assert selectors.signing_key_status(new) == "upcoming"


def test_an_immediate_rotation_keeps_old_codes_verifiable_until_they_expire(
    citizen_api, api, scanner_api
):
    old = keys.signing_key_ensure()
    old_code = issue(citizen_api)["code"]
    new = keys.signing_key_rotate(immediately=True)
    new_code = issue(citizen_api)["code"]
    assert new_code != old_code
    assert keys.signing_keys_prune() == []  # the old key's codes may still be valid
    assert kids(api) == [new.kid, old.kid]
    assert verify(scanner_api, old_code)["valid"] is True
    assert independently_verified(api, old_code)
    assert verify(scanner_api, new_code)["valid"] is True
    assert selectors.signing_key_status(old) == "retiring"
    assert selectors.signing_key_status(new) == "active"

    later = timezone.now() + dt.timedelta(seconds=30 + 60 + 15 + 1)
    assert keys.signing_keys_prune(now=later) == [old.kid]
    assert kids(api) == [new.kid]
    old.refresh_from_db()
    assert old.private_key == "" and old.withdrawn_at is not None
    assert verify(scanner_api, old_code)["reason"] in ("unknown_key", "replayed")


def test_exactly_one_key_signs(citizen_api):
    keys.signing_key_ensure()
    keys.signing_key_rotate(immediately=True)
    keys.signing_key_rotate()
    live = SigningKey.objects.filter(withdrawn_at__isnull=True)
    statuses = sorted(selectors.signing_key_status(k) for k in live)
    assert statuses == ["active", "retiring", "upcoming"]


def test_a_venue_code_holds_its_key_until_it_is_deactivated(integrator_api, service, api):
    old = keys.signing_key_ensure()
    venue = create_venue(integrator_api, service.code)
    keys.signing_key_rotate(immediately=True)
    far = timezone.now() + dt.timedelta(days=365)
    assert keys.signing_keys_prune(now=far) == []
    assert (
        api.post("/api/v1/qr/resolve/", {"code": venue["code"]}, format="json").status_code == 200
    )
    integrator_api.post(f"/api/v1/dept/codes/{venue['id']}/deactivate/")
    assert keys.signing_keys_prune(now=far) == [old.kid]


def test_a_retired_key_kept_for_what_it_signed_keeps_no_private_part(
    integrator_api, service, api, scanner_api, citizen_api
):
    """A superseded key stays published while a venue code or a receipt it
    signed needs it, but it signs nothing any more: once no process can
    still be signing with it, its private part is erased, as a withdrawn
    key's is. Kept, it could still sign codes every scanner accepts."""
    from accounts.models import AuditEntry
    from qr import documents

    for_venue = keys.signing_key_ensure()
    venue = create_venue(integrator_api, service.code)
    for_receipt = keys.signing_key_rotate(immediately=True)
    caches.keyring.clear()
    documents.document_sign({"knd": "receipt", "sub": "CS20261207000001"})
    keys.signing_key_rotate(immediately=True)
    assert keys.signing_keys_prune() == []
    for key in (for_venue, for_receipt):
        key.refresh_from_db()
        assert key.private_key  # a process's cached key may still be signing with it

    later = timezone.now() + dt.timedelta(seconds=30 + 60 + 15 + 1)
    assert keys.signing_keys_prune(now=later) == []  # both stay published
    assert keys.signing_keys_prune(now=later) == []
    for key in (for_venue, for_receipt):
        key.refresh_from_db()
        assert key.private_key == "" and key.withdrawn_at is None
        erased = AuditEntry.objects.filter(
            action="qr.signing_key.private_part_erased", target_id=str(key.pk)
        )
        assert erased.count() == 1
    caches.keyring.clear()
    assert {for_venue.kid, for_receipt.kid} <= set(kids(api))
    assert verify(scanner_api, venue["code"])["valid"] is True
    assert verify(scanner_api, issue(citizen_api)["code"])["valid"] is True


def test_a_key_made_by_another_process_is_found_on_first_sight(
    citizen_api, scanner_api, monkeypatch
):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from accounts import pii
    from qr import codes
    from tests.qr.conftest import forge

    keys.signing_key_ensure()
    verify(scanner_api, issue(citizen_api)["code"])  # this process now holds the key list
    # Another process rotates: the row appears without this process being told.
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes_raw()
    SigningKey.objects.create(
        kid="other-process",
        public_key=codes.b64url(private.public_key().public_bytes_raw()),
        private_key=pii.encrypt(codes.b64url(raw)),
        activates_at=timezone.now(),
    )
    code = forge()  # still signed with the key this process knew
    assert verify(scanner_api, code)["valid"] is True
    monkeypatch.setattr(caches, "_MISS_RELOAD_INTERVAL", 0)
    theirs = forge(sub="s_x", lvl=1, kid="other-process", private_key=private)
    assert verify(scanner_api, theirs)["valid"] is True


def test_the_command_rotates_and_reports(citizen_api):
    out = StringIO()
    call_command("rotate_signing_key", stdout=out)
    assert "signing from" in out.getvalue()  # the very first key starts at once
    first = selectors.signing_key_active()
    call_command("rotate_signing_key", stdout=out)
    assert "signing starts in 3600 s" in out.getvalue()
    call_command("rotate_signing_key", "--now", stdout=out)
    assert selectors.signing_key_active().kid != first.kid


def test_a_compromised_key_is_withdrawn_at_once(citizen_api, scanner_api, integrator_api, service):
    keys.signing_key_ensure()
    old_code = issue(citizen_api)["code"]
    create_venue(integrator_api, service.code)
    out = StringIO()
    call_command("rotate_signing_key", "--withdraw-previous", stdout=out)
    assert verify(scanner_api, old_code) == {"valid": False, "reason": "unknown_key"}
    assert "hrss: 1 venue code(s) must be replaced" in out.getvalue()
    assert SigningKey.objects.filter(withdrawn_at__isnull=True).count() == 1


def test_rotation_is_audited(operator):
    from accounts.models import AuditEntry

    key = keys.signing_key_rotate(immediately=True, actor=operator)
    entry = AuditEntry.objects.get(action="qr.signing_key.created", target_id=str(key.pk))
    assert entry.actor_id == str(operator.pk)


def test_a_deactivated_code_still_says_revoked_after_its_key_is_gone(
    integrator_api, service, api, scanner_api
):
    keys.signing_key_ensure()
    venue = create_venue(integrator_api, service.code)
    keys.signing_key_rotate(immediately=True)
    integrator_api.post(f"/api/v1/dept/codes/{venue['id']}/deactivate/")
    far = timezone.now() + dt.timedelta(days=365)
    assert keys.signing_keys_prune(now=far)
    caches.clear()
    response = api.post("/api/v1/qr/resolve/", {"code": venue["code"]}, format="json")
    assert response.status_code == 410
    assert response.json()["code"] == "code_revoked"
    assert verify(scanner_api, venue["code"]) == {"valid": False, "reason": "revoked"}


# --- The first key ------------------------------------------------------------------------


def a_stranger_code(**claims) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from qr import codes

    now = int(time.time())
    body = {"iss": "https://my.changsha.gov.cn", "sub": "s_x", "iat": now, "exp": now + 60}
    return codes.sign(
        body | claims, kid="20260101-abcdef", private_key=Ed25519PrivateKey.generate()
    )


def test_the_key_ring_only_reads_and_never_makes_a_key():
    """Readers never create state: the first key is the signers' business."""
    assert caches.keyring.signing_key() is None
    assert caches.keyring.active() is None
    assert caches.keyring.published() == []
    assert not SigningKey.objects.exists()


def test_a_scan_on_a_fresh_installation_is_an_unknown_key_and_makes_none(scanner_api):
    assert verify(scanner_api, a_stranger_code()) == {"valid": False, "reason": "unknown_key"}
    assert not SigningKey.objects.exists()


def test_the_first_star_code_makes_the_first_key(citizen_api, scanner_api):
    assert not SigningKey.objects.exists()
    code = issue(citizen_api)["code"]
    assert SigningKey.objects.count() == 1
    assert verify(scanner_api, code)["valid"] is True
    issue(citizen_api)
    assert SigningKey.objects.count() == 1


def test_the_first_venue_code_makes_the_first_key(integrator_api, service, api):
    assert not SigningKey.objects.exists()
    venue = create_venue(integrator_api, service.code)
    assert SigningKey.objects.get().kid == independently_verified_kid(api, venue["code"])
    assert (
        api.post("/api/v1/qr/resolve/", {"code": venue["code"]}, format="json").status_code == 200
    )


def independently_verified_kid(api, code: str) -> str:
    import base64
    import json

    assert independently_verified(api, code)
    header = code.removeprefix("MCS1:").split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


def test_a_first_key_another_process_made_is_used_not_doubled(citizen_api, api):
    """This process looked and found no key; another one made the first
    since. Issuing here signs with that key rather than making a second."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from qr import codes

    caches.keyring.reload()
    assert caches.keyring.active() is None  # and the ring will not look again for a while
    private = Ed25519PrivateKey.generate()
    SigningKey.objects.create(
        kid="other-process",
        public_key=codes.b64url(private.public_key().public_bytes_raw()),
        private_key=codes.b64url(private.private_bytes_raw()),  # the field encrypts it
        activates_at=timezone.now(),
    )
    code = issue(citizen_api)["code"]
    assert independently_verified_kid(api, code) == "other-process"
    assert SigningKey.objects.count() == 1


def test_a_loaded_key_never_shows_its_private_part(citizen_api):
    issue(citizen_api)
    (loaded,) = caches.keyring.published()
    assert loaded.private_key_b64
    assert loaded.private_key_b64 not in repr(loaded)
    assert loaded.private_key_b64 not in repr(caches.keyring.published())


@pytest.mark.integration  # two connections at once: the PostgreSQL pass
@pytest.mark.django_db(transaction=True)
def test_two_processes_ensuring_the_first_key_make_one(monkeypatch) -> None:
    """Two workers issue their first code at once on a fresh installation:
    one creates the first key, the other waits for it and signs with it (a
    row lock on the empty key table locks nothing)."""
    from tests.concurrency import at_once

    assert not SigningKey.objects.exists()
    real_create = keys.signing_key_create

    def slow_create(**kwargs):
        # The first caller is still inside its transaction when the other asks.
        time.sleep(0.5)
        return real_create(**kwargs)

    monkeypatch.setattr(keys, "signing_key_create", slow_create)

    made = at_once(2, lambda _i: keys.signing_key_ensure().kid)

    assert list(SigningKey.objects.values_list("kid", flat=True)) == [made[0]]
    assert made[0] == made[1]

"""A scanner profile's key is what the profile is of (its primary key): not
changed on its page, where changing it made a second profile. The signing
keys' list works out the key that signs once per page, not once per key."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import ApiKeyScope
from qr import keys
from qr.models import ScannerProfile, SigningKey
from tests.conftest import _key

pytestmark = pytest.mark.django_db


def test_a_profiles_key_is_read_only_on_its_page(operator_client, gate_profile, department):
    other = _key(department, ApiKeyScope.SCANNER)
    url = f"/admin/qr/scannerprofile/{gate_profile.pk}/change/"
    page = operator_client.get(url)
    assert page.status_code == 200
    assert "api_key" not in page.context["adminform"].form.fields
    response = operator_client.post(
        url, {"api_key": other.pk, "place": "地铁2号线 五一广场站 4号闸机", "disclosure": "level"}
    )
    assert response.status_code == 302
    (profile,) = ScannerProfile.objects.all()
    assert profile.api_key_id == gate_profile.api_key_id
    assert profile.place == "地铁2号线 五一广场站 4号闸机"


def test_a_new_profile_still_picks_its_key(operator_client, scanner_key):
    page = operator_client.get("/admin/qr/scannerprofile/add/")
    assert "api_key" in page.context["adminform"].form.fields
    response = operator_client.post(
        "/admin/qr/scannerprofile/add/",
        {"api_key": scanner_key.pk, "place": "五一广场站", "disclosure": "level"},
    )
    assert response.status_code == 302
    assert ScannerProfile.objects.get().api_key_id == scanner_key.pk


def _queries_of_the_keys_list(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/admin/qr/signingkey/")
    assert response.status_code == 200
    return len(queries.captured_queries)


def test_the_signing_keys_list_reads_the_signing_key_once(operator_client):
    keys.signing_key_ensure()
    operator_client.get("/admin/qr/signingkey/")  # the session's first reads
    one = _queries_of_the_keys_list(operator_client)
    for _ in range(10):
        keys.signing_key_rotate(immediately=True)
    assert SigningKey.objects.count() == 11
    assert _queries_of_the_keys_list(operator_client) == one


def test_the_signing_keys_list_says_which_key_signs(operator_client):
    first = keys.signing_key_ensure()
    upcoming = keys.signing_key_rotate()
    page = operator_client.get("/admin/qr/signingkey/").content.decode()
    rows = {key.kid: key for key in SigningKey.objects.all()}
    assert set(rows) == {first.kid, upcoming.kid}
    assert page.count("签发中") == 1 and page.count("已发布，待启用") == 1
    newest = keys.signing_key_rotate(immediately=True)
    page = operator_client.get("/admin/qr/signingkey/").content.decode()
    assert page.count("签发中") == 1 and newest.kid in page
    assert page.count("已停止签发，仍在公布") >= 1


def test_the_lists_status_is_the_keys_status():
    from django.utils import timezone

    from qr import selectors

    first = keys.signing_key_ensure()
    keys.signing_key_rotate(immediately=True)
    keys.signing_key_rotate()
    keys.signing_key_rotate(immediately=True)
    SigningKey.objects.filter(pk=first.pk).update(withdrawn_at=timezone.now())
    now = timezone.now()
    listed = {
        key.kid: key.key_status
        for key in selectors.signing_keys_with_status(SigningKey.objects.all(), now=now)
    }
    assert listed == {
        key.kid: selectors.signing_key_status(key, now=now) for key in SigningKey.objects.all()
    }
    assert sorted(listed.values()) == ["active", "retiring", "upcoming", "withdrawn"]

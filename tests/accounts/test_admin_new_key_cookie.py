"""A key made in the admin is shown once, on the page after the form: it
never travels in a cookie (Django's default message storage signs the
messages cookie but does not encrypt it), so that neither the browser's
cookie store nor a proxy's log holds it."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from django.contrib.messages.storage.cookie import CookieStorage
from django.test import RequestFactory

from accounts.models import ApiKey

pytestmark = pytest.mark.django_db


def _readable(value: str) -> str:
    """A cookie's value as anyone holding it reads it: a messages cookie is
    signed and compressed, not encrypted (decoded here as Django does)."""
    decoded = CookieStorage(RequestFactory().get("/"))._decode(value)
    return unquote(value) + "".join(str(message) for message in decoded or [])


def test_a_new_keys_value_is_never_in_a_cookie(operator_client, department) -> None:
    posted = operator_client.post(
        "/admin/accounts/apikey/add/",
        {"department": department.pk, "scope": "scanner", "name": "地铁闸机"},
    )
    assert posted.status_code == 302
    shown = operator_client.get(posted["Location"])
    raw = re.search(r"mcs_[0-9a-f]{8}_[A-Za-z0-9_\-]{43}", shown.content.decode()).group(0)
    assert raw.split("_")[1] == ApiKey.objects.get().prefix
    secret = raw.split("_", 2)[2]
    for response in (posted, shown):
        for cookie in response.cookies.values():
            assert secret not in _readable(cookie.value), cookie.key
    for cookie in operator_client.cookies.values():
        assert secret not in _readable(cookie.value), cookie.key
    # Shown once: not on the next page.
    assert raw not in operator_client.get(posted["Location"]).content.decode()

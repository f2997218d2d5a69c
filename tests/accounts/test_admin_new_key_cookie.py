"""A key made in the admin is shown once, in the answer to the form that
made it: it is never put in a message, so it travels in no cookie (Django's
cookie message storage signs but does not encrypt) and rests in no session
row (the session message storage keeps it in ``django_session``, signed and
base64-encoded, until the next page or the row's expiry)."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.sessions.models import Session
from django.test import RequestFactory

from accounts import api_keys
from accounts.models import ApiKey

pytestmark = pytest.mark.django_db

ADD = "/admin/accounts/apikey/add/"
KEY = re.compile(r"mcs_[0-9a-f]{8}_[A-Za-z0-9_\-]{43}")


def _readable(value: str) -> str:
    """A cookie's value as anyone holding it reads it: a messages cookie is
    signed and compressed, not encrypted (decoded here as Django does)."""
    decoded = CookieStorage(RequestFactory().get("/"))._decode(value)
    return unquote(value) + "".join(str(message) for message in decoded or [])


def _add_key(client, department, **extra):
    return client.post(
        ADD, {"department": department.pk, "scope": "scanner", "name": "地铁闸机", **extra}
    )


def test_a_new_key_is_shown_once_in_the_answer_to_the_form(operator_client, department) -> None:
    posted = _add_key(operator_client, department)
    assert posted.status_code == 200
    page = posted.content.decode()
    (raw,) = KEY.findall(page)
    key = ApiKey.objects.get()
    assert raw.split("_")[1] == key.prefix
    assert "no-store" in posted["Cache-Control"]
    # On to the key's own page, which holds no usable token.
    change = f"/admin/accounts/apikey/{key.pk}/change/"
    assert change in page
    assert not KEY.search(operator_client.get(change).content.decode())
    assert not KEY.search(operator_client.get("/admin/accounts/apikey/").content.decode())


def test_a_new_keys_value_rests_in_no_session_row_and_no_cookie(
    operator_client, department, monkeypatch
) -> None:
    made: list[str] = []
    create = api_keys.api_key_create

    def recording(**kwargs):
        key, raw = create(**kwargs)
        made.append(raw)
        return key, raw

    monkeypatch.setattr(api_keys, "api_key_create", recording)
    posted = _add_key(operator_client, department)
    (raw,) = made
    secret = raw.split("_", 2)[2]
    sessions = list(Session.objects.all())
    assert sessions
    for session in sessions:
        assert secret not in session.session_data
        assert secret not in str(session.get_decoded())
    for cookie in [*posted.cookies.values(), *operator_client.cookies.values()]:
        assert secret not in _readable(cookie.value), cookie.key


def test_a_key_added_from_a_pickers_popup_is_shown_there(operator_client, department) -> None:
    posted = _add_key(operator_client, department, _popup="1", _to_field="id")
    assert posted.status_code == 200
    page = posted.content.decode()
    (raw,) = KEY.findall(page)
    key = ApiKey.objects.get()
    assert raw.split("_")[1] == key.prefix
    # The picker is handed the new key's id (its label, never the token)
    # once the operator has copied it.
    assert "new-key-popup-response" in page
    assert str(key.pk) in page
    assert f"mcs_{key.prefix}_" in page.replace(raw, "")
    for session in Session.objects.all():
        assert raw.split("_", 2)[2] not in str(session.get_decoded())

"""Admin sessions past their expiry are deleted daily: Django never deletes
them by itself (``clearsessions``), and a row keeps whatever the session
held (the messages of its last pages among it) until it goes."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from accounts import tasks

pytestmark = pytest.mark.django_db


def a_session(*, expires_in: dt.timedelta) -> str:
    store = SessionStore()
    store["note"] = "kept"
    store.create()
    Session.objects.filter(session_key=store.session_key).update(
        expire_date=timezone.now() + expires_in
    )
    return store.session_key


def test_an_expired_session_row_is_removed_and_a_live_one_stays() -> None:
    expired = a_session(expires_in=-dt.timedelta(minutes=1))
    live = a_session(expires_in=dt.timedelta(hours=1))

    tasks.expired_sessions_purge()

    assert set(Session.objects.values_list("session_key", flat=True)) == {live}
    assert expired != live


def test_the_session_purge_runs_every_day_on_the_housekeeping_queue() -> None:
    entries = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "accounts.purge_expired_sessions"
    ]
    assert [entry["options"]["queue"] for entry in entries] == ["housekeeping"]

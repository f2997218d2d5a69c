"""Messages posted to an account after it closed are purged daily."""

from __future__ import annotations

import pytest
from django.conf import settings

from accounts import citizens, inbox, tasks
from accounts.models import Message
from tests.accounts.factories import CitizenFactory

pytestmark = pytest.mark.django_db


def post(user) -> None:
    inbox.message_post(user=user, kind="application", title="办件进度", body="您的办件已办结")


def test_messages_posted_after_the_close_are_purged_and_no_one_elses() -> None:
    closing, staying = CitizenFactory(), CitizenFactory()
    post(closing)
    citizens.account_close(user=closing)
    assert not Message.objects.filter(user=closing).exists()  # the close's own erasure
    post(closing)  # a department finished the case afterwards
    post(staying)

    assert tasks.closed_inboxes_purge() == 1

    assert not Message.objects.filter(user=closing).exists()
    assert Message.objects.filter(user=staying).count() == 1
    assert tasks.closed_inboxes_purge() == 0


def test_the_purge_runs_every_day_on_the_housekeeping_queue() -> None:
    entries = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "accounts.purge_closed_inboxes"
    ]
    assert [entry["options"]["queue"] for entry in entries] == ["housekeeping"]

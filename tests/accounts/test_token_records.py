"""What the database keeps of refresh tokens does not grow without end:
a token past its expiry is refused by its own ``exp``, so its record (and
its revocation mark) can go; live ones, revoked or not, stay."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts import tasks, tokens
from tests.accounts.factories import CitizenFactory

pytestmark = pytest.mark.django_db


def test_records_of_expired_refresh_tokens_are_purged() -> None:
    citizen = CitizenFactory()
    old = tokens.tokens_issue(user=citizen)
    tokens.token_refresh(refresh=old["refresh"])  # the old one is now revoked
    live = tokens.tokens_issue(user=citizen)
    revoked_live = tokens.tokens_issue(user=citizen)
    tokens.token_revoke(refresh=revoked_live["refresh"])
    # The first two expire.
    long_ago = timezone.now() - dt.timedelta(days=2)
    expired = list(OutstandingToken.objects.order_by("created_at")[:2])
    OutstandingToken.objects.filter(pk__in=[t.pk for t in expired]).update(expires_at=long_ago)

    assert tasks.refresh_tokens_purge() == 2

    assert OutstandingToken.objects.count() == 2
    assert not OutstandingToken.objects.filter(pk__in=[t.pk for t in expired]).exists()
    assert BlacklistedToken.objects.count() == 1  # the live, revoked one's mark stays
    # A live token still trades; a revoked live one is still refused.
    assert set(tokens.token_refresh(refresh=live["refresh"])) == {"access", "refresh"}
    with pytest.raises(tokens.AccountsError):
        tokens.token_refresh(refresh=revoked_live["refresh"])


def test_the_purge_runs_every_day_on_the_housekeeping_queue() -> None:
    entries = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "accounts.purge_refresh_tokens"
    ]
    assert [entry["options"]["queue"] for entry in entries] == ["housekeeping"]

"""config.queries.rows_insert: new rows of several tables, written once the
row it holds is found (one statement on PostgreSQL), or not at all."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Message, User
from config.queries import rows_insert
from services.models import ActorKind, Application, TimelineEntry

pytestmark = pytest.mark.django_db


class Refused(Exception):
    pass


def held(user: User, **conditions: object):
    return User.objects.select_for_update(no_key=True).filter(pk=user.pk, **conditions).values("pk")


def rows(citizen: User, service) -> tuple[Application, list[TimelineEntry], Message]:
    now = timezone.now()
    application = Application(
        number="CS20261207999001",
        service=service,
        department=service.department,
        applicant=citizen,
        status="submitted",
        form={"a": 1},
        created_at=now,
    )
    entries = [
        TimelineEntry(application=application, status=s, at=now, actor=ActorKind.CITIZEN)
        for s in ("submitted", "routed")
    ]
    message = Message(user=citizen, kind="k", title={"en": "t"}, body={"en": "b"}, data={})
    return application, entries, message


def test_the_rows_are_written_with_their_keys(citizen, service) -> None:
    application, entries, message = rows(citizen, service)
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        rows_insert([[application], entries, [message]], held=held(citizen), refused=Refused())
    # The keys the database gives are set, in the order of the rows.
    assert all(entry.pk for entry in entries)
    assert [e.status for e in TimelineEntry.objects.order_by("pk")] == ["submitted", "routed"]
    assert [e.pk for e in TimelineEntry.objects.order_by("pk")] == [e.pk for e in entries]
    assert Application.objects.get().form == {"a": 1}  # stored as the field stores it
    assert Message.objects.get().pk == message.pk
    assert not application._state.adding and application._state.db == "default"
    written = [q for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]
    if connection.vendor == "postgresql":
        assert len(written) == 1  # the lock and the three tables' rows
        assert "FOR NO KEY UPDATE" in written[0]["sql"]


def test_without_the_held_row_nothing_is_written(citizen, service) -> None:
    application, entries, message = rows(citizen, service)
    with pytest.raises(Refused), transaction.atomic():
        rows_insert(
            [[application], entries, [message]],
            held=held(citizen, closed_at__isnull=False),
            refused=Refused(),
        )
    assert not Application.objects.exists()
    assert not TimelineEntry.objects.exists()
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_needs_the_callers_transaction(citizen, service) -> None:
    """Outside an atomic block the rows could not be taken back."""
    application, _entries, _message = rows(citizen, service)
    with pytest.raises(TransactionManagementError):
        rows_insert([[application]], held=held(citizen), refused=Refused())
    assert not Application.objects.exists()


def test_a_group_mixing_given_and_missing_keys_is_refused(citizen, service) -> None:
    application, entries, _message = rows(citizen, service)
    entries[0].pk = 10**9
    with pytest.raises(ValueError), transaction.atomic():
        rows_insert([[application], entries], held=held(citizen), refused=Refused())

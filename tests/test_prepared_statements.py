"""PostgreSQL binds the parameters and keeps the statements a connection runs
again and again prepared (``DATABASE_PREPARED_STATEMENTS``, on by default):
parsed and planned once per connection instead of once per run. Off, Django's
default comes back (values quoted into the SQL text by psycopg), for a
pooler that cannot keep prepared statements."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import User
from tests.test_settings_env import settings_of

POSTGRES = "postgres://mcs:pw@db.internal:5432/mcs"


def test_on_postgresql_statements_are_bound_and_prepared_by_the_server() -> None:
    options = settings_of({"DATABASE_URL": POSTGRES})["db"]["OPTIONS"]
    assert options["server_side_binding"] is True
    assert options["prepare_threshold"] == 5
    assert options["options"] == "-c plan_cache_mode=force_custom_plan"


def test_options_the_url_gives_postgresql_are_kept() -> None:
    url = f"{POSTGRES}?options=-c%20search_path%3Dcity&sslmode=require"
    options = settings_of({"DATABASE_URL": url})["db"]["OPTIONS"]
    assert options["options"] == "-c search_path=city -c plan_cache_mode=force_custom_plan"
    assert options["sslmode"] == "require"


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_switched_off_it_is_djangos_default(value: str) -> None:
    db = settings_of({"DATABASE_URL": POSTGRES, "DATABASE_PREPARED_STATEMENTS": value})["db"]
    assert "server_side_binding" not in db.get("OPTIONS", {})
    assert "prepare_threshold" not in db.get("OPTIONS", {})
    assert "options" not in db.get("OPTIONS", {})


def test_sqlite_keeps_its_own_options() -> None:
    options = settings_of({})["db"]["OPTIONS"]
    assert "server_side_binding" not in options
    assert options["transaction_mode"] == "IMMEDIATE"


@pytest.mark.integration
@pytest.mark.django_db
def test_a_statement_run_again_is_prepared_on_the_connection(citizen) -> None:
    def prepared() -> list[tuple[str, int, int]]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE %s AND statement LIKE %s",
                ['%"accounts_user"%', "%$1%"],
            )
            return cursor.fetchall()

    # The same query with other values each time: one statement, $1 bound.
    for n in range(4):
        assert not User.objects.filter(pk=citizen.pk, phone=f"1380000000{n}").exists()
    assert prepared() == []
    for n in range(4, 10):
        assert not User.objects.filter(pk=citizen.pk, phone=f"1380000000{n}").exists()
    [(_statement, generic_plans, custom_plans)] = prepared()
    # Planned for each run's own values, never once for all (PostgreSQL
    # would take a generic plan from the sixth run on).
    assert (generic_plans, custom_plans) == (0, 5)
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone() == ("force_custom_plan",)


@pytest.mark.integration
@pytest.mark.django_db
def test_bulk_statements_fit_what_one_statement_can_carry(citizen) -> None:
    """PostgreSQL takes at most 65,535 parameters in one statement; bound
    by the server, every value is one. Django's own backend sent a bulk
    update of 25,000 messages (3 values a row) as one statement, and a bulk
    insert of 10,000 written row by row (8 values a row: one is an
    expression, so the values cannot go as arrays), and both failed."""
    from django.db.models.functions import Now
    from django.test.utils import CaptureQueriesContext

    from accounts.models import Message

    assert connection.features.uses_server_side_binding
    made = Message.objects.bulk_create(
        Message(
            user=citizen, kind="k", title={"en": "t"}, body={"en": "b"}, data={}, created_at=Now()
        )
        for _ in range(10_000)
    )
    more = Message.objects.bulk_create(
        Message(user=citizen, kind="k", title={"en": "t"}, body={"en": "b"}, data={})
        for _ in range(15_000)
    )
    assert Message.objects.filter(user=citizen).count() == 25_000
    now = timezone.now()
    for message in (*made, *more):
        message.read_at = now
    Message.objects.bulk_update([*made, *more], ["read_at"])
    assert not Message.objects.filter(user=citizen, read_at__isnull=True).exists()
    # Plain values go as one array a field (UNNEST): not cut for nothing.
    with CaptureQueriesContext(connection) as captured:
        Message.objects.bulk_create(
            Message(user=citizen, kind="k", title={}, body={}, data={}) for _ in range(5_000)
        )
    assert len(captured.captured_queries) == 1

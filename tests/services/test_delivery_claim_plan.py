"""A worker's claim, the sweeper and the release of the next event ask of
each due delivery: "is an earlier event of its application still pending to
its endpoint?" PostgreSQL must answer that by looking the application up
(delivery_in_order), never by reading every pending delivery for each one
asked about: at a backlog of 10,000 a claim of 32 read 320,000 rows.

It did read them all when its statistics were older than the backlog: the
usual case after a held endpoint is switched back on or a burst of
submissions, since statistics are taken when the table has changed by a
tenth. The tests make that case: statistics taken when every delivery had
been delivered, then a backlog that none of them has seen."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from services.models import Delivery, DeliveryStatus, Endpoint, OutboxEvent
from services.routing import deliveries, events, outbox, sweeper
from tests.services.conftest import department_endpoint

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

DELIVERED = 600
BACKLOG = 400
OLD_PINGS = 200


@pytest.fixture
def backlog(department, department_server, monkeypatch) -> Endpoint:
    """DELIVERED deliveries and OLD_PINGS finished pings of a month ago, the
    statistics taken, then BACKLOG due ones: each event the first of its own
    application (nothing earlier waits)."""
    monkeypatch.setattr(outbox, "deliveries_nudge", lambda *args, **kwargs: None)
    monkeypatch.setattr(outbox, "deliveries_wake", lambda *args, **kwargs: True)
    endpoint = department_endpoint(department, department_server, [events.APPLICATION_SUBMITTED])
    model = OutboxEvent.objects.create(
        type=events.APPLICATION_SUBMITTED, department=department, data={"bench": True}
    )
    with connection.cursor() as cursor:
        write(cursor, endpoint, model, DELIVERED, "succeeded", "NULL")
        write(cursor, endpoint, model, OLD_PINGS, "succeeded", "NULL", ping=True)
        cursor.execute("ANALYZE services_delivery")
        cursor.execute("ANALYZE services_outboxevent")
        write(cursor, endpoint, model, BACKLOG, "pending", "now() - interval '1 second' * i")
    return endpoint


def write(
    cursor: Any,
    endpoint: Endpoint,
    model: OutboxEvent,
    n: int,
    status: str,
    due: str,
    *,
    ping: bool = False,
) -> None:
    """``n`` events like ``model`` (its sealed data), one delivery each; or
    ``n`` pings of a month ago, handled."""
    made_at = "now() - interval '30 days'" if ping else "now()"
    kind = "'ping'" if ping else "e.type"
    key = "NULL, NULL" if ping else "gen_random_uuid(), 1"
    cursor.execute(
        "CREATE TEMP TABLE made ON COMMIT DROP AS SELECT gen_random_uuid() AS id, i "
        "FROM generate_series(1, %s) i",
        [n],
    )
    cursor.execute(
        "INSERT INTO services_outboxevent (id, type, department_id, data, created_at, "
        f"handled_at, handle_attempts) SELECT made.id, {kind}, e.department_id, e.data, "
        f"{made_at}, {made_at}, 0 FROM made, services_outboxevent e WHERE e.id = %s",
        [model.pk],
    )
    cursor.execute(
        "INSERT INTO services_delivery (id, event_id, endpoint_id, department_id, status, "
        "attempt_count, schedule_index, next_attempt_at, ordering_key, sequence, last_error, "
        f"created_at) SELECT gen_random_uuid(), made.id, %s, %s, %s, 0, 0, {due}, "
        f"{key}, '', {made_at} FROM made",
        [endpoint.pk, endpoint.department_id, status],
    )
    cursor.execute("DROP TABLE made")


def statements(run: Any) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        run()
    return [q["sql"] for q in captured.captured_queries if "U0" in q["sql"] or " IN (" in q["sql"]]


def plan(sql: str, *, as_at_scale: bool = False) -> dict[str, Any]:
    """The plan PostgreSQL runs for ``sql``, and what it read. ``as_at_scale``:
    as when reading the whole table costs what it does at city scale (the
    test's table is small enough to read whole)."""
    with connection.cursor() as cursor:
        if as_at_scale:
            cursor.execute("SET LOCAL enable_seqscan = off")
        try:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
            found = cursor.fetchone()[0]
        finally:
            cursor.execute("RESET enable_seqscan")
    return (json.loads(found) if isinstance(found, str) else found)[0]["Plan"]


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


def undone(run: Any) -> list[str]:
    """The statements ``run`` makes, its writes undone after: their plans
    are then read against the rows as ``run`` found them."""

    class Undo(Exception):
        pass

    with CaptureQueriesContext(connection) as captured:
        try:
            with transaction.atomic():
                run()
                raise Undo
        except Undo:
            pass
    return [q["sql"] for q in captured.captured_queries]


def work(sql: str, *, as_at_scale: bool = False) -> int:
    """Rows the plan of ``sql`` read or compared, in all: what its scans
    gave on, and what its scans and joins dropped."""
    total = 0
    for node in nodes(plan(sql, as_at_scale=as_at_scale)):
        loops = node.get("Actual Loops", 1)
        dropped = sum(
            node.get(f"Rows Removed by {what}", 0)
            for what in ("Filter", "Join Filter", "Index Recheck")
        )
        scanned = node["Actual Rows"] if "Scan" in node["Node Type"] else 0
        total += (dropped + scanned) * loops
    return total


def read(node: dict[str, Any]) -> int:
    """Rows a scan read: those it gave on and those it read and dropped."""
    per_loop = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
    return (per_loop + node.get("Rows Removed by Index Recheck", 0)) * node["Actual Loops"]


def rows_read_for_the_question(sql: str) -> tuple[int, list[str]]:
    """Rows the earlier-pending question read, in all, and the indexes it
    read them along."""
    asked = [n for n in nodes(plan(sql)) if n.get("Alias") == "u0"]
    assert asked, sql
    return sum(read(n) for n in asked), [n.get("Index Name", n["Node Type"]) for n in asked]


def test_a_claim_looks_each_delivery_up(backlog) -> None:
    claims = [
        sql
        for sql in statements(lambda: deliveries._claim_due(32))
        if "FOR UPDATE" in sql and "U0" in sql
    ]
    assert len(claims) == 1, claims
    # The claim's rows are held by the claim just made: this one skips them.
    read, indexes = rows_read_for_the_question(claims[0])
    assert indexes == ["delivery_in_order"], indexes
    assert read == 0, read  # nothing earlier pending: found nothing, read nothing
    assert Delivery.objects.filter(locked_until__isnull=False).count() == 32


def test_the_sweeper_looks_each_delivery_up(backlog, settings) -> None:
    settings.ROUTING_SWEEP_GRACE_SECONDS = 0
    swept = [sql for sql in statements(sweeper.deliveries_sweep) if "U0" in sql]
    assert len(swept) == 1, swept
    read, indexes = rows_read_for_the_question(swept[0])
    assert indexes == ["delivery_in_order"], indexes
    assert read == 0, read


def test_the_next_events_are_looked_up_by_their_application(backlog) -> None:
    """After a batch, the next event of each of its applications."""
    finished = list(Delivery.objects.filter(status=DeliveryStatus.PENDING)[:32])
    found = [
        sql
        for sql in statements(lambda: deliveries._release_next(finished))
        if '"ordering_key" IN (' in sql
    ]
    assert len(found) == 1, found
    steps = list(nodes(plan(found[0], as_at_scale=True)))
    indexes = [n["Index Name"] for n in steps if "Index Name" in n]
    assert indexes == ["delivery_in_order"], steps
    scans = [n for n in steps if n.get("Relation Name") == "services_delivery"]
    assert sum(read(n) for n in scans) == 32, steps


def test_one_delivery_is_claimed_by_its_key(backlog) -> None:
    """A nudge (a retry, a replay, the next event released) claims one."""
    one = Delivery.objects.filter(status=DeliveryStatus.PENDING).values_list("pk", flat=True)[0]
    [claim] = [sql for sql in undone(lambda: deliveries._claim_one(one)) if "UPDATE" in sql]
    assert work(claim) <= 5, plan(claim)


def test_held_deliveries_made_due_are_looked_up_by_their_keys(backlog) -> None:
    """After the commit of deliveries written held, with the endpoint open."""
    Delivery.objects.filter(status=DeliveryStatus.PENDING).update(next_attempt_at=None)
    held = list(Delivery.objects.filter(status=DeliveryStatus.PENDING).values_list("pk", flat=True))
    made_due = [
        sql
        for sql in undone(
            lambda: outbox._held_made_due(
                {backlog.pk: held[:5]}, event_type=events.APPLICATION_SUBMITTED
            )
        )
        if sql.startswith("UPDATE") and '"services_delivery"' in sql
    ]
    assert len(made_due) == 1, made_due
    assert work(made_due[0]) <= 5 * 5, plan(made_due[0])


def test_old_pings_are_purged_a_batch_at_a_time(backlog) -> None:
    """The purge reads each batch's own deliveries, not the deliveries
    pending elsewhere: asked of each old ping as a NOT EXISTS, every pending
    delivery was compared with every old ping."""
    reads = [sql for sql in undone(lambda: sweeper.pings_purge(batch=50)) if "SELECT" in sql]
    of_deliveries = [sql for sql in reads if '"services_delivery"' in sql]
    assert of_deliveries, reads
    for sql in of_deliveries:
        assert work(sql, as_at_scale=True) <= 4 * 50, plan(sql, as_at_scale=True)
    assert sweeper.pings_purge(batch=50) == OLD_PINGS
    assert Delivery.objects.filter(status=DeliveryStatus.PENDING).count() == BACKLOG


def test_pending_said_as_not_finished_is_pending(backlog) -> None:
    """The question says "pending" as "none of the finished statuses" (no
    index can take that as a condition): the two select the same rows, of
    every status there is."""
    assert set(DeliveryStatus.finished()) == set(DeliveryStatus.values) - {DeliveryStatus.PENDING}
    some = list(
        Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).values_list("pk", flat=True)[:4]
    )
    Delivery.objects.filter(pk__in=some[:2]).update(status=DeliveryStatus.FAILED)
    Delivery.objects.filter(pk__in=some[2:]).update(status=DeliveryStatus.CANCELLED)
    assert set(Delivery.objects.values_list("status", flat=True)) == set(DeliveryStatus.values)
    pending = set(
        Delivery.objects.filter(status=DeliveryStatus.PENDING).values_list("pk", flat=True)
    )
    assert len(pending) == BACKLOG
    said = Delivery.objects.filter(outbox.pending_as_filter()).values_list("pk", flat=True)
    assert set(said) == pending


QUEUES = [
    "services_delivery",
    "services_outboxevent",
    "services_application",
    "payments_paymentorder",
    "payments_refund",
    "payments_notifylog",
]


def test_the_tables_rows_pass_through_are_analyzed_after_a_hundredth_changed() -> None:
    """services 0024, payments 0009: statistics follow a backlog within
    autovacuum's next round, not after a tenth of the table has changed."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)", [QUEUES])
        found = dict(cursor.fetchall())
    sooner = ["autovacuum_analyze_scale_factor=0.01", "autovacuum_analyze_threshold=1000"]
    assert found == dict.fromkeys(QUEUES, sooner)

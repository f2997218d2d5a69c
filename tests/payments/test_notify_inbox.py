"""The callbacks' Redis inbox (PAYMENTS_NOTIFY_INBOX=redis, the default
with Redis): at the door a callback costs no database statement; a worker
moves it into the notify log once, whatever fails on the way; Redis away
sends it to the database instead, and nothing is refused or lost."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from config.redis_client import redis_client
from config.wsgi import application as wsgi_app
from payments import inbox, notifications
from payments.models import LedgerEntry, NotifyLog, OrderStatus, PaymentOrder
from tests.payments.conftest import apply_for, open_order
from tests.payments.test_notify_api import ACKNOWLEDGED, callback, paid_trade
from tests.wsgi import environ_for, wsgi_call

pytestmark = [pytest.mark.django_db, pytest.mark.integration]


@pytest.fixture(autouse=True)
def _redis_inbox(settings) -> None:
    settings.PAYMENTS_NOTIFY_INBOX = "redis"


@pytest.fixture
def opened(citizen_api, awaiting, django_capture_on_commit_callbacks) -> dict:
    """An open WeChat Pay order, its facts written after commit as in production."""
    with django_capture_on_commit_callbacks(execute=True):
        return open_order(citizen_api, awaiting, "wechat")


def door(headers: dict[str, str], body: bytes) -> tuple[int, bytes, list[str]]:
    """The callback through the WSGI application gunicorn serves; the SQL it
    ran. What it starts after commit (the worker's nudge) is not run."""
    extra = {
        f"HTTP_{k.upper().replace('-', '_')}": v
        for k, v in headers.items()
        if k.lower() != "content-type"
    }
    environ = environ_for(
        "/api/v1/payments/notify/wechat/", body, headers.get("Content-Type", ""), **extra
    )
    with CaptureQueriesContext(connection) as sql:
        status, _headers, payload = wsgi_call(wsgi_app, environ)
    return status, payload, [q["sql"] for q in sql.captured_queries]


def test_a_callback_costs_no_database_statement_at_the_door_and_is_applied_by_the_worker(
    opened,
) -> None:
    headers, body = callback(paid_trade(opened))

    status, payload, sql = door(headers, body)

    assert (status, payload) == ACKNOWLEDGED["wechat"]
    assert sql == []
    assert inbox.inbox_size() == 1 and not NotifyLog.objects.exists()
    assert PaymentOrder.objects.get(pk=opened["id"]).status == OrderStatus.PENDING

    assert notifications.notifies_drain() == 1

    assert inbox.inbox_size() == 0
    log = NotifyLog.objects.get()
    assert (log.outcome, log.order_no, log.channel) == ("accepted", opened["order_no"], "wechat")
    assert log.inbox_id and log.client_ip == "127.0.0.1" and log.received_at <= log.handled_at
    assert b'"resource"' in log.body_excerpt.encode()
    assert PaymentOrder.objects.get(pk=opened["id"]).status == OrderStatus.PAID


def test_a_repeat_after_the_charge_is_known_at_the_door_as_a_duplicate(
    opened, django_capture_on_commit_callbacks
) -> None:
    headers, body = callback(paid_trade(opened))
    door(headers, body)
    with django_capture_on_commit_callbacks(execute=True):  # the charge's facts, after commit
        notifications.notifies_drain()

    status, _payload, sql = door(headers, body)

    assert status == 204 and sql == []
    notifications.notifies_collect()
    assert list(NotifyLog.objects.order_by("received_at").values_list("outcome", flat=True)) == [
        "accepted",
        "duplicate",
    ]
    assert LedgerEntry.objects.filter(kind="charge").count() == 1


def test_facts_that_missed_the_charge_still_let_the_worker_find_the_repeat(opened) -> None:
    headers, body = callback(paid_trade(opened))
    door(headers, body)
    notifications.notifies_drain()  # its after-commit work (the facts' update) never runs

    door(headers, body)  # the door still believes the order unpaid
    notifications.notifies_drain()

    outcomes = NotifyLog.objects.order_by("received_at").values_list("outcome", flat=True)
    assert list(outcomes) == ["accepted", "duplicate"]
    assert LedgerEntry.objects.filter(kind="charge").count() == 1


def test_without_its_facts_in_redis_the_door_reads_the_order_and_copies_them(
    opened, django_capture_on_commit_callbacks
) -> None:
    key = inbox.facts_key(opened["order_no"])
    redis_client().delete(key)
    headers, body = callback(paid_trade(opened))

    with django_capture_on_commit_callbacks() as after_commit:
        status, _payload, sql = door(headers, body)

    assert status == 204
    assert len(sql) == 1 and "payments_paymentorder" in sql[0]  # at the door
    assert inbox.inbox_size() == 1
    copy, _nudge = after_commit
    copy()
    assert redis_client().get(key) == f"wechat|{opened['amount_fen']}||1".encode()


def test_a_copy_read_at_the_door_never_overwrites_newer_facts(
    opened, django_capture_on_commit_callbacks
) -> None:
    key = inbox.facts_key(opened["order_no"])
    redis_client().delete(key)
    headers, body = callback(paid_trade(opened))
    with django_capture_on_commit_callbacks() as after_commit:
        door(headers, body)  # reads the order unpaid; its copy waits for the commit
    with django_capture_on_commit_callbacks(execute=True):
        notifications.notifies_drain()  # the charge writes the paid facts
    paid = redis_client().get(key)
    assert paid is not None and paid.endswith(b"|0")

    after_commit[0]()  # the door's copy lands late

    assert redis_client().get(key) == paid


def test_a_move_repeated_after_a_crash_adds_no_second_row(opened, monkeypatch) -> None:
    headers, body = callback(paid_trade(opened))
    door(headers, body)
    client = redis_client()

    def crash(*args, **kwargs):
        raise ConnectionError("worker lost Redis after writing the rows")

    monkeypatch.setattr(type(client), "xdel", crash)
    with pytest.raises(ConnectionError):
        inbox.inbox_move(limit=10)
    monkeypatch.undo()
    assert NotifyLog.objects.count() == 1 and inbox.inbox_size() == 1

    assert inbox.inbox_move(limit=10) == 1  # read again, inserted once

    assert NotifyLog.objects.count() == 1 and inbox.inbox_size() == 0
    assert notifications.notifies_apply_waiting() == (1, 1)


def test_with_redis_away_the_callback_goes_to_the_database_and_is_still_applied(
    opened, settings, django_capture_on_commit_callbacks
) -> None:
    headers, body = callback(paid_trade(opened))
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    with django_capture_on_commit_callbacks(execute=True):
        status, _payload, sql = door(headers, body)

    assert status == 204  # the throttle counts nothing but lets it in
    assert any("INSERT" in q and "payments_notifylog" in q for q in sql)
    log = NotifyLog.objects.get()
    assert log.outcome == "accepted" and log.inbox_id is None  # the nudge applied it
    assert PaymentOrder.objects.get(pk=opened["id"]).status == OrderStatus.PAID


def test_one_mark_in_the_same_round_trip_nudges_once_per_drain(
    citizen_api, fee_service, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    from celery import current_app

    published: list[int] = []
    task = current_app.tasks[notifications.NOTIFY_APPLY_TASK]
    monkeypatch.setattr(task, "apply_async", lambda *a, **k: published.append(1))
    with django_capture_on_commit_callbacks(execute=True):
        orders_ = [
            open_order(citizen_api, apply_for(citizen_api, fee_service), "wechat") for _ in "abc"
        ]
    for order in orders_[:2]:
        with django_capture_on_commit_callbacks(execute=True):
            assert door(*callback(paid_trade(order)))[0] == 204
    assert published == [1]

    assert notifications.notifies_drain() == 2

    with django_capture_on_commit_callbacks(execute=True):
        assert door(*callback(paid_trade(orders_[2])))[0] == 204
    assert published == [1, 1]


def test_the_database_inbox_still_writes_rows_when_redis_is_there(opened, settings) -> None:
    settings.PAYMENTS_NOTIFY_INBOX = "database"
    headers, body = callback(paid_trade(opened))

    status, _payload, sql = door(headers, body)

    assert status == 204 and inbox.inbox_size() == 0
    assert NotifyLog.objects.get().outcome == "received"
    assert any("INSERT" in q for q in sql)


def test_the_door_makes_one_redis_round_trip(opened, monkeypatch) -> None:
    """The caller counted, the order's facts read, the callback appended
    and the worker's nudge mark set: one script call, whichever way the
    client sends it (counted where every command leaves for the server)."""
    import hiredis
    import redis.connection

    redis_client().script_load(inbox.OFFER_SCRIPT)  # as after any earlier callback

    trips: list[list[str]] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, *args, **kwargs):
        reader = hiredis.Reader()
        reader.feed(command if isinstance(command, bytes) else b"".join(command))
        names = []
        while (sent := reader.gets()) is not False:
            names.append(sent[0].decode())
        trips.append(names)
        return send(self, command, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    headers, body = callback(paid_trade(opened))

    assert door(headers, body)[0] == 204

    assert trips == [["EVALSHA"]]
    assert inbox.inbox_size() == 1


def test_over_its_rate_an_authentic_callback_is_answered_429_and_not_written_down(
    opened, settings
) -> None:
    settings.PAYMENTS_NOTIFY_RATE = "1/day"  # both in one window
    headers, body = callback(paid_trade(opened))
    assert door(headers, body)[0] == 204

    status, payload, _sql = door(headers, body)

    assert status == 429 and b'"throttled"' in payload
    assert inbox.inbox_size() == 1  # the first only


def test_facts_in_redis_refuse_a_genuine_callback_for_another_amount(opened) -> None:
    trade = paid_trade(opened)
    trade.amount_fen = 1  # genuinely signed, for one fen
    status, payload, sql = door(*callback(trade))

    assert status == 400 and b"FAIL" in payload
    assert not any("payments_paymentorder" in q for q in sql)  # judged on Redis's facts
    assert inbox.inbox_size() == 0
    log = NotifyLog.objects.get()
    assert (log.outcome, log.reason) == ("rejected", "amount_mismatch")


def test_facts_of_another_charge_send_the_callback_to_the_worker_to_judge(opened) -> None:
    """The order paid by another transaction: not a repeat, not the
    order's payment; written down as received, and the worker (under the
    order's lock) decides what it is."""
    key = inbox.facts_key(opened["order_no"])
    redis_client().set(key, f"wechat|{opened['amount_fen']}|4200000000OTHER|0")
    headers, body = callback(paid_trade(opened))

    assert door(headers, body)[0] == 204

    notifications.notifies_collect()
    assert NotifyLog.objects.get().outcome == "received"


def test_a_late_success_for_a_closed_order_is_written_to_the_database_before_the_answer(
    opened, django_capture_on_commit_callbacks
) -> None:
    """The sweep queries pending orders only: for a closed one the callback
    is the only word of the payment, so it never waits in Redis."""

    headers, body = callback(paid_trade(opened))  # paid at the channel
    PaymentOrder.objects.filter(pk=opened["id"]).update(status=OrderStatus.CLOSED)  # closed here
    with django_capture_on_commit_callbacks(execute=True):
        inbox.facts_remember(PaymentOrder.objects.get(pk=opened["id"]))
    assert redis_client().get(inbox.facts_key(opened["order_no"])).endswith(b"||0")

    status, _payload, sql = door(headers, body)

    assert status == 204
    assert any("INSERT" in q and "payments_notifylog" in q for q in sql)
    assert inbox.inbox_size() == 0
    assert NotifyLog.objects.get().outcome == "received"


def test_an_entry_the_database_refuses_is_set_aside_and_the_others_move(opened) -> None:
    headers, body = callback(paid_trade(opened))
    door(headers, body)
    fields = inbox.entry(
        channel="x" * 40,  # longer than the column: PostgreSQL refuses the row
        order_no="P1",
        transaction_id="T1",
        client_ip=None,
        body_excerpt="",
        result={},
    )
    inbox.inbox_add({"outcome": "received", **fields}, nudge_key="n", nudge_seconds=1)

    assert inbox.inbox_move(limit=10) == 2

    assert inbox.inbox_size() == 0
    assert NotifyLog.objects.get().order_no == opened["order_no"]
    refused = redis_client().xrange(inbox.refused_key())
    assert len(refused) == 1 and refused[0][1][b"channel"] == b"x" * 40


def test_a_failing_step_of_the_payments_sweep_does_not_stop_the_others(
    opened, monkeypatch, caplog
) -> None:
    from payments import orders, tasks

    def broken(**kwargs):
        raise RuntimeError("inbox step broke")

    monkeypatch.setattr(notifications, "notifies_apply_waiting", broken)
    queried: list[int] = []
    monkeypatch.setattr(orders, "orders_sweep", lambda **kw: queried.append(1) or 1)

    done = tasks.payments_sweep()

    assert done["applied"] == 0 and done["orders"] == 1 and queried == [1]
    assert "inbox step broke" in caplog.text

"""Beat sends the payments sweep every 15 s, and a run with a slow channel
can last longer: a run that finds another under way returns at once
instead of calling the same channels about the same orders again, and a
run that died does not hold the others back for longer than its lease."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from payments import tasks
from payments.models import OrderStatus, PaymentOrder
from payments.providers import provider_for
from tests.payments.test_sweep_with_a_channel_down import pending_paid_without_word

pytestmark = pytest.mark.django_db


def counted(channel: str, monkeypatch, meanwhile=None) -> list[str]:
    """The calls to ``channel`` (answered by its sandbox), listed; the first
    runs ``meanwhile`` before its answer."""
    calls: list[str] = []
    sandbox = provider_for(channel).http._transport

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        if len(calls) == 1 and meanwhile is not None:
            meanwhile()
        return sandbox.handle_request(request)

    monkeypatch.setattr(provider_for(channel).http, "_transport", httpx.MockTransport(answer))
    return calls


def test_a_sweep_that_finds_another_under_way_returns_at_once(
    citizen_api, fee_service, monkeypatch, caplog
) -> None:
    wechat = pending_paid_without_word(citizen_api, fee_service, "wechat", [9, 8])
    second: list[dict[str, int]] = []
    calls = counted("wechat", monkeypatch, meanwhile=lambda: second.append(tasks.payments_sweep()))

    first = tasks.payments_sweep()

    # The second came while the first was asking about the first order: it
    # did nothing, and the first asked about each order once.
    assert second == [{}]
    assert len(calls) == 2
    assert all(order_no in url for order_no, url in zip(wechat, calls, strict=True))
    assert first["orders"] == 2
    assert "payments sweep: another run is under way" in caplog.text

    # The first done, the next run goes ahead.
    later = pending_paid_without_word(citizen_api, fee_service, "wechat", [7])
    del calls[:]  # its opening
    assert tasks.payments_sweep()["orders"] == 1
    assert len(calls) == 1 and later[0] in calls[0]
    assert PaymentOrder.objects.get(order_no=later[0]).status == OrderStatus.PAID


def test_a_sweep_whose_worker_died_holds_the_others_back_for_its_lease_only(
    citizen_api, fee_service, monkeypatch
) -> None:
    """A run killed in the middle never gives its lease back: the lease runs
    out by itself (here after a second)."""
    from config import leases

    pending_paid_without_word(citizen_api, fee_service, "wechat", [9])
    calls = counted("wechat", monkeypatch)
    assert leases.Lease(tasks.SWEEP_LEASE, seconds=1).take()  # and its worker is killed

    assert tasks.payments_sweep() == {}
    assert calls == []

    deadline = time.monotonic() + 30
    while (swept := tasks.payments_sweep()) == {} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert swept["orders"] == 1
    assert len(calls) == 1


def slow(channel: str, monkeypatch, *, seconds: float, on_call: dict) -> list[str]:
    """``channel`` answering each call after ``seconds`` (slow, well within
    ANSWER_SECONDS); ``on_call[n]`` is run during the n-th call (from 1).
    The calls are listed."""
    calls: list[str] = []
    sandbox = provider_for(channel).http._transport

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        time.sleep(seconds)
        if len(calls) in on_call:
            on_call.pop(len(calls))()
        return sandbox.handle_request(request)

    monkeypatch.setattr(provider_for(channel).http, "_transport", httpx.MockTransport(answer))
    return calls


def test_a_step_that_outlasts_the_lease_keeps_it_and_the_next_run_finds_it_taken(
    citizen_api, fee_service, monkeypatch, settings
) -> None:
    """A channel slow but answering: a step of many orders lasts longer
    than the lease (here 1 s standing in for 300), though each of its
    calls takes far less. The lease is renewed as the step goes, so beat's
    next run, coming in the step's fourth call (more than the lease's
    lifetime after the step began), finds it taken and calls no one."""
    monkeypatch.setattr(tasks, "SWEEP_LEASE_SECONDS", 1)
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0  # every pending order due at every run
    wechat = pending_paid_without_word(citizen_api, fee_service, "wechat", [9, 8, 7, 6])
    second: list[dict[str, int]] = []
    calls = slow(
        "wechat",
        monkeypatch,
        seconds=0.4,
        on_call={4: lambda: second.append(tasks.payments_sweep())},
    )

    first = tasks.payments_sweep()

    assert second == [{}]
    # Each order asked about once, by the first run, which went to its end.
    assert len(calls) == 4
    assert all(order_no in url for order_no, url in zip(wechat, calls, strict=True))
    assert first["orders"] == 4 and "callbacks" in first
    assert [PaymentOrder.objects.get(order_no=n).status for n in wechat] == [OrderStatus.PAID] * 4


def test_a_run_whose_lease_another_took_in_a_step_stops_before_its_next_order(
    citizen_api, fee_service, monkeypatch, caplog
) -> None:
    """A call that outlasted the lease (a worker stalled, here 1 s standing
    in for 300) and another run took it meanwhile: the first asks its
    channel about no other order, and leaves the lease to the other."""
    from config import leases

    monkeypatch.setattr(tasks, "SWEEP_LEASE_SECONDS", 1)
    wechat = pending_paid_without_word(citizen_api, fee_service, "wechat", [9, 8, 7])
    other = leases.Lease(tasks.SWEEP_LEASE, seconds=60)

    def taken_meanwhile() -> None:
        deadline = time.monotonic() + 30
        while not other.take() and time.monotonic() < deadline:
            time.sleep(0.05)  # until the first run's lease runs out

    calls = slow("wechat", monkeypatch, seconds=0, on_call={1: taken_meanwhile})

    done = tasks.payments_sweep()

    assert len(calls) == 1 and wechat[0] in calls[0]
    assert done == {"applied": 0, "closes": 0, "orders": 1}
    assert [PaymentOrder.objects.get(order_no=n).status for n in wechat] == [
        OrderStatus.PAID,
        OrderStatus.PENDING,
        OrderStatus.PENDING,
    ]
    assert "payments sweep (orders): its lease was lost to another run" in caplog.text
    # Still the other's: the next run finds it taken.
    assert tasks.payments_sweep() == {}
    other.give_back()
    assert tasks.payments_sweep()["orders"] == 2


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_workers_sweeping_at_once_call_a_channel_once(
    citizen_api, fee_service, monkeypatch
) -> None:
    """Two workers' runs, the first held inside its call to WeChat Pay: the
    second returns without calling anyone."""
    from tests.concurrency import in_thread

    pending_paid_without_word(citizen_api, fee_service, "wechat", [9])
    asked, release = threading.Event(), threading.Event()

    def held() -> None:
        asked.set()
        assert release.wait(30)

    calls = counted("wechat", monkeypatch, meanwhile=held)
    errors: list[BaseException] = []
    first = in_thread(tasks.payments_sweep, errors)
    assert asked.wait(30)

    assert tasks.payments_sweep() == {}
    assert len(calls) == 1

    release.set()
    first.join(60)
    assert not errors
    assert PaymentOrder.objects.get().status == OrderStatus.PAID
    assert tasks.payments_sweep() != {}

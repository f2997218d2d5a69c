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

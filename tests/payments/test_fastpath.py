"""The notify fast path answers exactly as the view does.

These tests call the project's real WSGI application (``config.wsgi``), the
one gunicorn serves; the test client would skip the fast path.
"""

from __future__ import annotations

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.test import TestCase

from accounts.models import AuditEntry
from payments.apis.notify import NotifyView
from payments.models import NotifyLog, OrderStatus, PaymentOrder
from tests.payments.conftest import CHANNELS, apply_for, open_order
from tests.payments.test_notify_api import callback, paid_trade, tamper
from tests.wsgi import environ_for, wsgi_call

pytestmark = pytest.mark.django_db


def call(app, channel: str, headers: dict[str, str], body: bytes, **extra: str):
    """The channel's POST through ``app``; what it starts after commit runs too."""
    environ = environ_for(
        f"/api/v1/payments/notify/{channel}/",
        body,
        headers.get("Content-Type", ""),
        REMOTE_ADDR="127.0.0.9",
        **{
            "HTTP_" + k.upper().replace("-", "_"): v
            for k, v in headers.items()
            if k.lower() != "content-type"
        },
        **extra,
    )
    with TestCase.captureOnCommitCallbacks(execute=True):
        return wsgi_call(app, environ)


@pytest.fixture
def fast():
    from config.wsgi import application

    return application


@pytest.fixture
def django_app():
    return WSGIHandler()


@pytest.fixture
def view_calls(monkeypatch):
    calls = []
    original = NotifyView.post

    def spy(self, request, channel):
        calls.append(channel)
        return original(self, request, channel)

    monkeypatch.setattr(NotifyView, "post", spy)
    return calls


@pytest.mark.parametrize("channel", CHANNELS)
def test_the_fast_path_answers_as_the_view_does(
    citizen_api, fee_service, fast, django_app, view_calls, channel
) -> None:
    one, other = (
        open_order(citizen_api, apply_for(citizen_api, fee_service), channel) for _ in "ab"
    )
    first, second = callback(paid_trade(one)), callback(paid_trade(other))

    cases = [
        ("genuine", first, second),
        ("again", first, second),
        ("forged", (first[0], tamper(channel, first[1])), (second[0], tamper(channel, second[1]))),
        (
            "garbage",
            ({"Content-Type": "text/plain"}, b"junk"),
            ({"Content-Type": "text/plain"}, b"junk"),
        ),
    ]
    for name, (fast_headers, fast_body), (slow_headers, slow_body) in cases:
        answered_fast = call(fast, channel, fast_headers, fast_body)
        calls_before = len(view_calls)
        answered_slow = call(django_app, channel, slow_headers, slow_body)
        assert len(view_calls) == calls_before + 1  # the full cycle really ran
        assert answered_fast[0] == answered_slow[0], name
        assert answered_fast[2] == answered_slow[2], name
        assert answered_fast[1] == answered_slow[1], name
    assert view_calls == [channel] * len(cases)  # none of the fast path's went to the view
    assert {PaymentOrder.objects.get(pk=o["id"]).status for o in (one, other)} == {OrderStatus.PAID}
    outcomes = sorted(NotifyLog.objects.values_list("outcome", flat=True))
    assert outcomes == sorted(["accepted"] * 2 + ["duplicate"] * 2 + ["rejected"] * 4)
    assert AuditEntry.objects.filter(action="payment.notify_rejected").count() == 4


def test_what_the_view_would_answer_otherwise_goes_to_the_view(
    citizen_api, awaiting, fast, view_calls, settings
) -> None:
    order = open_order(citizen_api, awaiting, "alipay")
    headers, body = callback(paid_trade(order))
    assert call(fast, "alipay", headers, body, HTTP_ACCEPT_LANGUAGE="en")[0] == 200
    assert call(fast, "paypal", headers, body)[0] == 404
    settings.PAYMENTS_NOTIFY_RATE = "1/day"
    call(fast, "alipay", headers, body)
    throttled = call(fast, "alipay", headers, body)
    assert throttled[0] == 429 and throttled[1]["Content-Type"] == "application/problem+json"
    assert "Retry-After" in throttled[1]
    # The English one reached the view; the throttled ones were answered by
    # DRF's throttle check in front of it, with its problem.
    assert view_calls == ["alipay", "paypal"]  # the English one, and the unknown channel


@pytest.mark.parametrize(
    "extra",
    [
        {"QUERY_STRING": "x=%00"},
        {"HTTP_COOKIE": "django_language=en"},
        {"HTTP_ACCEPT_LANGUAGE": "zh;q=0.1, en;q=0.9"},
        {"HTTP_ACCEPT_LANGUAGE": "en"},
    ],
    ids=["query", "cookie", "english-first", "english"],
)
def test_requests_the_view_answers_differently_go_to_the_view(
    citizen_api, awaiting, fast, view_calls, extra
) -> None:
    order = open_order(citizen_api, awaiting, "unionpay")
    headers, body = callback(paid_trade(order))
    status, answered, _payload = call(fast, "unionpay", headers, body, **extra)
    if "QUERY_STRING" in extra:
        # Django's request limits refuse the NUL before any view.
        assert status == 400 and answered["Content-Type"] == "application/problem+json"
        assert view_calls == []
        assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PENDING
    else:
        assert status == 200 and view_calls == ["unionpay"]
    if "HTTP_ACCEPT_LANGUAGE" in extra:
        assert answered["Content-Language"] == "en"


@pytest.mark.parametrize("switch", [{"SECURE_SSL_REDIRECT": True}, {"SECURE_HSTS_SECONDS": 3600}])
def test_with_https_switches_on_callbacks_take_the_full_cycle(
    citizen_api, awaiting, fast, view_calls, settings, switch
) -> None:
    for name, value in switch.items():
        setattr(settings, name, value)
    order = open_order(citizen_api, awaiting, "alipay")
    headers, body = callback(paid_trade(order))
    status, _answered, _payload = call(
        fast, "alipay", headers, body, **{"wsgi.url_scheme": "https"}
    )
    assert status == 200
    assert view_calls == ["alipay"]


def test_an_empty_host_header_gets_djangos_400_without_the_callback_handled(
    citizen_api, awaiting, fast, view_calls, settings
) -> None:
    """``Host:`` sent empty is refused by Django whatever SERVER_NAME says;
    the fast path does not answer (or handle) it in Django's place."""
    settings.ALLOWED_HOSTS = ["testserver"]  # SERVER_NAME is allowed
    order = open_order(citizen_api, awaiting, "alipay")
    headers, body = callback(paid_trade(order))
    status, answered, _payload = call(fast, "alipay", headers, body, HTTP_HOST="")
    assert status == 400 and answered["Content-Type"] == "application/problem+json"
    assert view_calls == []
    assert PaymentOrder.objects.get(pk=order["id"]).status == OrderStatus.PENDING


@pytest.mark.parametrize("charset", ["zlib", "idna"])
@pytest.mark.parametrize("channel", CHANNELS)
def test_a_charset_that_is_not_a_text_encoding_is_answered_as_the_view_does(
    citizen_api, fee_service, fast, django_app, channel, charset
) -> None:
    """Django refuses such a body (415) before any view reads it: the fast
    path hands it over rather than handle the callback in the body."""
    one, other = (
        open_order(citizen_api, apply_for(citizen_api, fee_service), channel) for _ in "ab"
    )
    answers = []
    for app, order in ((fast, one), (django_app, other)):
        headers, body = callback(paid_trade(order))
        media_type = headers.pop("Content-Type").partition(";")[0]
        headers["Content-Type"] = f"{media_type}; charset={charset}"
        answers.append(call(app, channel, headers, body))
    answered_fast, answered_slow = answers
    assert answered_fast[0] == answered_slow[0] == 415
    assert answered_fast[1] == answered_slow[1]
    assert answered_fast[2] == answered_slow[2]
    assert {PaymentOrder.objects.get(pk=o["id"]).status for o in (one, other)} == {
        OrderStatus.PENDING
    }

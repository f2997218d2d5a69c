"""Rules of the HTTP edge to department systems."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from services.routing import deliveries, endpoints, transport
from tests.services.department import Answer


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.8", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("::1", False),
        ("fd00::1", False),
        ("::ffff:169.254.169.254", False),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 to the metadata address
        ("2002:a9fe:a9fe::", False),  # 6to4 around the metadata address
        ("::7f00:1", False),  # IPv4-compatible loopback
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("64:ff9b::5db8:d822", True),  # NAT64 to a public address
        ("224.0.0.1", False),
        ("::ffff:0:7f00:1", False),  # SIIT IPv4-translated loopback
        ("::ffff:0:a9fe:a9fe", False),  # SIIT IPv4-translated metadata address
        ("::ffff:0:5db8:d822", True),  # SIIT to a public address
        ("64:ff9b:1::5db8:d822", False),  # local-use NAT64, whatever it carries
        ("64:ff9b::a00:1", False),  # NAT64 into 10/8
        ("fec0::1", False),  # site-local
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("::", False),
        ("::5db8:d822", False),  # IPv4-compatible (deprecated)
        ("2002:5db8:d822::1", True),  # 6to4 around a public address
        ("2002:c0a8:1::1", False),  # 6to4 around 192.168.0.1
        ("2001:db8::1", False),  # documentation
        ("3fff::1", False),  # documentation (RFC 9637)
        ("2001:2::1", False),  # benchmarking
        ("2001:20::1", False),  # ORCHIDv2
        ("100::1", False),  # discard-only
        ("5f00::1", False),  # SRv6
        ("ff0e::1", False),  # global-scope multicast
        ("4000::1", False),  # not allocated for unicast
        ("192.0.2.1", False),  # documentation
        ("198.18.0.1", False),  # benchmarking
        ("192.0.0.9", False),  # IETF protocol assignments
        ("192.88.99.1", False),  # 6to4 relay anycast
        ("0.1.2.3", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("not an address", False),
    ],
)
def test_only_publicly_routable_addresses_count_as_public(address, public) -> None:
    assert transport.address_is_public(address) is public


def test_international_domain_names_are_stored_and_sent_in_ascii() -> None:
    assert (
        transport.url_normalize("https://例子.中国:8443/hook?x=1")
        == "https://xn--fsqu00a.xn--fiqs8s:8443/hook?x=1"
    )
    assert transport.url_shape_check("http://例子.中国/h")[1] == "xn--fsqu00a.xn--fiqs8s"


def test_the_refusal_does_not_reveal_the_private_address(settings, monkeypatch) -> None:
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = False
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, **kw: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", port))],
    )
    with pytest.raises(transport.UrlNotAllowed) as refused:
        transport.url_resolve("https://db.internal.example/hook")
    assert "10.9.8.7" not in str(refused.value)


def test_no_answer_and_a_private_answer_are_refused_alike(settings, monkeypatch) -> None:
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = False

    def dns(host, port, **kw):
        if host == "db.internal.example":
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fec0::5", port, 0, 0))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    refusals = []
    for url in ("https://db.internal.example/hook", "https://nothing.example/hook"):
        with pytest.raises(transport.UrlNotAllowed) as refused:
            transport.url_resolve(url)
        refusals.append((str(refused.value), refused.value.shape))
    assert refusals[0] == refusals[1] == (refusals[0][0], False)
    assert "internal" not in refusals[0][0]


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        ("120", 119, 121),
        ("Wed, 21 Oct 2015 07:28:00 -0000", 0, 0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0, 0),
        ("soon", None, None),
        ("", None, None),
    ],
)
def test_retry_after_is_read_in_both_http_forms(header, low, high) -> None:
    value = transport._retry_after(header)
    if low is None:
        assert value is None
    else:
        assert low <= value <= high


def test_a_send_never_raises(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(transport, "_http", broken)
    result = transport.webhook_post("http://127.0.0.1:9/x", body="{}", headers={}, timeout=1)
    assert result.status_code is None
    assert "something nobody expected" in result.error


def test_each_host_gets_its_own_connection_pool() -> None:
    assert transport._http("https", "a.example", 443) is transport._http("https", "a.example", 443)
    assert transport._http("https", "a.example", 443) is not transport._http(
        "https", "b.example", 443
    )


def test_a_reference_is_read_safely() -> None:
    assert deliveries._reference('{"reference": "HR-1"}') == "HR-1"
    assert deliveries._reference('{"reference": "a\\u0000b"}') == "ab"
    assert deliveries._reference("[" * 100_000) == ""
    assert deliveries._reference("not json") == ""
    assert deliveries._reference('["list"]') == ""
    assert deliveries._reference('{"reference": "ok\\ud800"}') == "ok?"  # a lone surrogate
    assert deliveries._reference('{"reference": "\\udfff"}') == "?"


@pytest.mark.django_db
def test_nul_bytes_in_a_department_answer_are_recorded_safely(
    citizen_api, service, department, department_server, django_capture_on_commit_callbacks
) -> None:
    from services.models import Application, Delivery
    from tests.services.conftest import submit

    endpoints.endpoint_create(
        department=department,
        url=department_server.url(),
        events=["application.submitted"],
        actor=None,
    )
    department_server.answer(Answer(200, b'{"reference": "R\\u0000-1", "x": "\x00"}'))
    with django_capture_on_commit_callbacks(execute=True):
        body = submit(citizen_api).json()
    delivery = Delivery.objects.get()
    assert delivery.status == "succeeded"
    assert "\x00" not in delivery.attempts.get().response_body
    assert Application.objects.get(pk=body["id"]).department_reference == "R-1"


@pytest.mark.django_db
@pytest.mark.parametrize("body", [b'{"reference": "\\ud800"}', b'{"reference": "HR\\udfff-2"}'])
def test_a_lone_surrogate_in_the_reference_is_recorded_like_any_answer(
    hook, apply, department_server, body
) -> None:
    """Valid JSON, not valid text for the database: once failed the whole
    record, so the delivery was sent again and again and never counted."""
    from services.models import Application, Delivery

    department_server.answer(Answer(200, body))
    apply()
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempt_count) == ("succeeded", 1)
    assert len(department_server.received) == 1
    application = Application.objects.get()
    assert application.status == "routed" and application.department_reference.endswith(
        ("?", "?-2")
    )


@pytest.mark.django_db
def test_the_reference_in_an_answer_longer_than_the_kept_excerpt_is_stored(
    apply, hook, department_server
) -> None:
    """docs/departments.md: a JSON answer ``{"reference": ...}`` is stored as
    the application's reference. The engine reads up to RESPONSE_READ_LIMIT
    bytes of the answer and keeps only RESPONSE_KEEP_BYTES on record; the
    reference was parsed from that excerpt, so an answer a little longer
    (one that echoes what it received) lost it silently."""
    from services.models import Application, DeliveryAttempt

    department_server.default = Answer(200, {"received": "x" * 3000, "reference": "HRSS-2026-0001"})
    body = apply()
    application = Application.objects.get(pk=body["id"])
    assert application.status == "routed"
    assert application.department_reference == "HRSS-2026-0001"
    kept = DeliveryAttempt.objects.get().response_body
    assert len(kept.encode()) <= transport.RESPONSE_KEEP_BYTES


def _trickling_server(stop: threading.Event, status_line: bytes, then: bytes) -> int:
    """A server that answers with ``status_line``, then ``then`` one byte
    every 0.2 s for as long as the client listens."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def run() -> None:
        connection, _ = server.accept()
        with connection, server:
            connection.recv(65536)
            connection.sendall(status_line)
            for byte in then * 1000:
                if stop.wait(0.2):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=run, daemon=True).start()
    return server.getsockname()[1]


@pytest.mark.parametrize(
    ("status_line", "then"),
    [
        (b"HTTP/1.1 200 OK\r\n", b"X"),  # headers that never end
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"{"),  # a body, slowly
    ],
    ids=["headers", "body"],
)
def test_a_peer_that_trickles_its_answer_is_cut_off_at_the_timeout(
    settings, status_line, then
) -> None:
    """httpx's timeout is per read: a byte every 0.2 s never trips it. The
    whole exchange ends at the try's deadline, so a sender thread is never
    held past what the delivery's lease counts on."""
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = True
    stop = threading.Event()
    port = _trickling_server(stop, status_line, then)
    started = time.monotonic()
    try:
        result = transport.webhook_post(
            f"http://127.0.0.1:{port}/events", body="{}", headers={}, timeout=1.0
        )
    finally:
        stop.set()
    took = time.monotonic() - started
    assert (result.status_code, result.error) == (None, "响应超时")
    assert took < deliveries.slowest_post_seconds(1.0), took


@pytest.fixture
def silent_dns(monkeypatch):
    """Names starting with "slow" whose servers never answer: a lookup hangs
    until the test ends (then fails, as the resolver's own time-out would);
    other names resolve to a public address. Yields the list of lookups
    hanging as each call returned."""
    released = threading.Event()
    hanging: list[str] = []

    def lookup(host, port, **kw):
        if not host.startswith("slow"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]
        hanging.append(host)
        released.wait(30)
        hanging.remove(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(transport, "LOOKUP_SECONDS", 0.2)
    yield hanging
    released.set()
    deadline = time.monotonic() + 10
    while transport._under_way and time.monotonic() < deadline:  # the hung lookups end
        time.sleep(0.01)


def test_a_lookup_that_never_answers_is_refused_without_waiting_for_it(
    integrator_api, silent_dns
) -> None:
    response = integrator_api.post(
        "/api/v1/dept/endpoints/",
        {"url": "https://slow.example.org/hook", "events": ["application.submitted"]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "endpoint_url_not_allowed"
    assert silent_dns == ["slow.example.org"]  # answered while the lookup still hangs


def test_a_send_whose_lookup_never_answers_is_a_failed_try_within_its_time(silent_dns) -> None:
    result = transport.webhook_post(
        "https://slow.example.org/hook", body="{}", headers={}, timeout=0.3
    )
    assert result.status_code is None and result.error
    assert silent_dns == ["slow.example.org"]


def test_names_that_never_answer_hold_no_other_names_lookup(silent_dns) -> None:
    """One department's silent names, however many and however often asked,
    leave every other name's lookup free: each silent name holds one lookup."""
    for _ in range(3):
        for n in range(40):
            with pytest.raises(transport.UrlNotAllowed):
                transport.host_resolve(f"slow{n}.example.org", 443, timeout=0.01)
    assert sorted(silent_dns) == sorted(f"slow{n}.example.org" for n in range(40))
    assert transport.host_resolve("dept.example.org", 443) == ["93.184.216.34"]


def test_a_lookup_that_cannot_start_is_refused_and_not_left_pending(
    silent_dns, monkeypatch
) -> None:
    def no_thread(self) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as broken:
        broken.setattr(threading.Thread, "start", no_thread)
        with pytest.raises(transport.UrlNotAllowed):
            transport.host_resolve("dept.example.org", 443)
    assert transport._under_way == {}
    assert transport.host_resolve("dept.example.org", 443) == ["93.184.216.34"]


def test_past_the_bound_of_lookups_under_way_a_new_name_is_refused_at_once(
    silent_dns, monkeypatch
) -> None:
    monkeypatch.setattr(transport, "MAX_LOOKUPS_UNDER_WAY", 3)
    for n in range(3):
        with pytest.raises(transport.UrlNotAllowed):
            transport.host_resolve(f"slow{n}.example.org", 443, timeout=0.01)
    with pytest.raises(transport.UrlNotAllowed):
        transport.host_resolve("dept.example.org", 443, timeout=5)
    assert len(transport._under_way) == 3


class _Clock:
    """transport's ``time`` module, with a monotonic clock the test moves."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead


def test_sends_share_a_hosts_lookup_until_it_expires_then_check_the_new_answer(
    settings, monkeypatch
) -> None:
    """A send keeps what a name resolved to for LOOKUP_KEEP_SECONDS (the
    next sends to that host ask no name server); once expired, the name is
    looked up and checked again: a name moved to a private address is then
    refused, and a failure is never kept."""
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = False
    answers = {"hooks.example.org": "93.184.216.34"}
    asked: list[str] = []

    def fake_dns(host, port, *args, **kwargs):
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    clock = _Clock()
    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    monkeypatch.setattr(transport, "time", clock)
    url = "https://hooks.example.org/events"
    for _ in range(5):
        assert transport.url_resolve(url, keep=True)[3] == ["93.184.216.34"]
    assert asked == ["hooks.example.org"]

    answers["hooks.example.org"] = "10.0.0.8"
    clock.ahead = transport.LOOKUP_KEEP_SECONDS - 1
    assert transport.url_resolve(url, keep=True)[3] == ["93.184.216.34"]  # the checked one
    clock.ahead = transport.LOOKUP_KEEP_SECONDS + 1
    with pytest.raises(transport.UrlNotAllowed):
        transport.url_resolve(url, keep=True)
    assert asked == ["hooks.example.org"] * 2

    del answers["hooks.example.org"]  # and later back
    clock.ahead += transport.LOOKUP_KEEP_SECONDS + 1
    with pytest.raises(transport.UrlNotAllowed):
        transport.url_resolve(url, keep=True)
    answers["hooks.example.org"] = "93.184.216.35"
    assert transport.url_resolve(url, keep=True)[3] == ["93.184.216.35"]
    assert len(asked) == 4


def test_checks_outside_a_send_always_look_up_afresh(monkeypatch) -> None:
    """Registration (and any check not made for a send) neither uses nor
    leaves a kept answer."""
    asked: list[str] = []

    def fake_dns(host, port, *args, **kwargs):
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    transport.url_resolve("https://hooks.example.org/a", keep=True)
    transport.url_resolve("https://hooks.example.org/b")
    transport.url_resolve("https://fresh.example.org/a")
    transport.url_resolve("https://fresh.example.org/a", keep=True)
    assert asked == ["hooks.example.org", "hooks.example.org", "fresh.example.org"] + [
        "fresh.example.org"
    ]

"""Events reach department systems signed, retried, dead-lettered, paused
and replayed as the design says. A real HTTP server plays the department;
signatures are checked with the standardwebhooks library."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from accounts.models import Message
from services.models import Application, Delivery, DeliveryStatus, Endpoint
from services.routing import deliveries, endpoints, events, outbox, sweeper, transport
from tests.accounts.factories import StaffFactory
from tests.feeds import walk, walk_back
from tests.services.conftest import submit, try_again
from tests.services.department import Answer

pytestmark = pytest.mark.django_db


def test_a_submitted_application_reaches_the_department_signed(
    citizen, citizen_api, apply, hook, department_server
) -> None:
    body = apply()
    [request] = department_server.received
    payload = request.verified(hook.secret_shown)  # raises if the signature is wrong
    assert payload["type"] == "application.submitted"
    assert payload["timestamp"].endswith("+08:00")
    application = payload["data"]["application"]
    assert application["number"] == body["number"] and application["service"] == "sbk-apply"
    assert application["form"] == body["form"]
    assert application["applicant"] == {
        "sub": citizen.subject,
        "name": "张三丰",
        "id_number": citizen.id_number,
        "phone": "13800138000",
    }
    delivery = Delivery.objects.get()
    assert request.headers["webhook-id"] == delivery.event.webhook_id
    assert request.headers["user-agent"].startswith("MyChangsha-Webhooks")
    assert delivery.status == "succeeded" and delivery.attempt_count == 1
    routed = Application.objects.get(pk=body["id"])
    assert routed.status == "routed"
    assert routed.department_reference == "DEPT-REF-1"
    assert (
        citizen_api.get(f"/api/v1/applications/{body['id']}/").json()["timeline"][-1]["status"]
        == "routed"
    )


def test_a_wrong_secret_does_not_verify(apply, hook, department_server) -> None:
    from standardwebhooks import WebhookVerificationError

    from services.routing.transport import secret_generate

    apply()
    with pytest.raises(WebhookVerificationError):
        department_server.received[0].verified(secret_generate())


def test_only_subscribed_live_endpoints_of_the_owning_department_receive(
    apply, hook, department, other_department, department_server
) -> None:
    endpoints.endpoint_create(
        department=department,
        url=department_server.url("/only-cancels"),
        events=["application.cancelled"],
        actor=None,
    )
    endpoints.endpoint_create(
        department=other_department,
        url=department_server.url("/other-dept"),
        events=["application.submitted"],
        actor=None,
    )
    off, _s = endpoints.endpoint_create(
        department=department,
        url=department_server.url("/off"),
        events=["application.submitted"],
        actor=None,
    )
    endpoints.endpoint_update(endpoint=off, actor=None, is_active=False)
    apply()
    assert [r.path for r in department_server.received] == ["/hrss/events"]


def test_a_failing_department_gets_the_same_event_again_until_it_recovers(
    apply, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    department_server.answer(Answer(500, {"error": "db down"}), Answer(503, {}))
    body = apply()
    delivery = Delivery.objects.get()
    assert delivery.status == "pending" and delivery.attempt_count == 1
    wait = (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()
    assert 4.5 <= wait <= 5.5  # 5 s ± 10 % jitter
    delivery = try_again(delivery, django_capture_on_commit_callbacks)
    wait = (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()
    assert 27 <= wait <= 33
    delivery = try_again(delivery, django_capture_on_commit_callbacks)
    assert delivery.status == "succeeded"
    assert [a.status_code for a in delivery.attempts.all()] == [500, 503, 200]
    assert delivery.attempts.first().response_body == '{"error": "db down"}'
    ids = {r.headers["webhook-id"] for r in department_server.received}
    assert ids == {delivery.event.webhook_id}
    assert all(r.verified(hook.secret_shown) for r in department_server.received)
    assert Application.objects.get(pk=body["id"]).status == "routed"


def test_a_delivery_that_never_succeeds_is_dead_lettered_after_the_schedule(
    settings, apply, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    department_server.default = Answer(500, {})
    apply()
    delivery = Delivery.objects.get()
    while delivery.status == DeliveryStatus.PENDING:
        delivery = try_again(delivery, django_capture_on_commit_callbacks)
    assert delivery.status == "failed" and delivery.failed_at is not None
    assert delivery.attempt_count == 1 + len(settings.ROUTING_RETRY_SCHEDULE) == 9
    assert len(department_server.received) == 9


@pytest.mark.parametrize(
    ("status", "retried"),
    [(400, False), (401, False), (404, False), (408, True), (429, True), (502, True)],
)
def test_client_errors_are_final_except_timeout_and_throttling(
    apply, hook, department_server, status, retried
) -> None:
    department_server.answer(Answer(status, {}))
    apply()
    delivery = Delivery.objects.get()
    assert delivery.status == ("pending" if retried else "failed")


def test_retry_after_is_honoured_on_429(apply, hook, department_server) -> None:
    department_server.answer(Answer(429, {}, {"Retry-After": "120"}))
    apply()
    delivery = Delivery.objects.get()
    assert 119 <= (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds() <= 121


def test_410_gone_disables_the_endpoint_and_its_events_wait_for_it(
    department, apply, integrator_api, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    clerk = StaffFactory(department=department)
    department_server.answer(Answer(410, {}))
    apply()
    hook.refresh_from_db()
    assert not hook.is_active and hook.disabled_reason == "410 Gone"
    assert Message.objects.filter(user=clerk, kind="endpoint.disabled").exists()
    first = Delivery.objects.get()
    assert first.status == "pending" and first.next_attempt_at is None  # held, not dead
    apply()
    assert len(department_server.received) == 1  # nothing is sent to a disabled endpoint...
    assert (
        Delivery.objects.filter(status="pending", next_attempt_at=None).count() == 2
    )  # ...but kept
    with django_capture_on_commit_callbacks(execute=True):
        response = integrator_api.patch(
            f"/api/v1/dept/endpoints/{hook.id}/", {"is_active": True}, format="json"
        )
    assert response.json()["state"] == "active"
    assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}
    assert len(department_server.of_type("application.submitted")) == 3


def test_a_department_pausing_its_endpoint_loses_nothing(
    apply, integrator_api, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    integrator_api.patch(f"/api/v1/dept/endpoints/{hook.id}/", {"is_active": False}, format="json")
    for _ in range(2):
        apply()
    assert department_server.received == []
    with django_capture_on_commit_callbacks(execute=True):
        integrator_api.patch(
            f"/api/v1/dept/endpoints/{hook.id}/", {"is_active": True}, format="json"
        )
    assert len(department_server.of_type("application.submitted")) == 2
    assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}


def test_redirects_are_not_followed(apply, hook, department_server) -> None:
    department_server.answer(Answer(302, {}, {"Location": "http://169.254.169.254/"}))
    apply()
    assert len(department_server.received) == 1
    assert Delivery.objects.get().status == "failed"


def test_a_slow_department_times_out(settings, apply, hook, department_server) -> None:
    settings.ROUTING_TIMEOUT_SECONDS = 0.5
    department_server.answer(Answer(200, {}, delay=2))
    apply()
    delivery = Delivery.objects.get()
    assert delivery.status == "pending"
    attempt = delivery.attempts.get()
    assert attempt.status_code is None and attempt.error == "响应超时"
    assert attempt.duration_ms < 1500


def test_the_address_is_checked_again_at_delivery_time(
    settings, apply, hook, department_server
) -> None:
    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = False  # the endpoint now points somewhere forbidden
    apply()
    assert department_server.received == []
    delivery = Delivery.objects.get()
    assert delivery.attempts.get().error == str(transport.REFUSED)
    assert delivery.status == "pending"


def test_a_host_whose_dns_answer_changes_is_refused_at_send_time_without_saying_why(
    settings, monkeypatch, apply, integrator_api
) -> None:
    """Registered while their names pointed to public addresses; by the first
    event one name points to loopback through an SIIT address, the other no
    longer resolves. Nothing is sent, and the department's delivery log
    tells the two apart no better than registration does."""
    import socket

    settings.ROUTING_ALLOW_PRIVATE_ENDPOINTS = False
    answers = {
        "rebind.example.org": (socket.AF_INET, "93.184.216.34"),
        "vanish.example.org": (socket.AF_INET, "93.184.216.35"),
    }

    def fake_dns(host, port, *args, **kwargs):
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family, address = answers[host]
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    for host in answers:
        response = integrator_api.post(
            "/api/v1/dept/endpoints/",
            {"url": f"https://{host}/hook", "events": ["application.submitted"]},
            format="json",
        )
        assert response.status_code == 201, response.json()
    answers["rebind.example.org"] = (socket.AF_INET6, "::ffff:0:7f00:1")
    del answers["vanish.example.org"]

    def no_connection(*args, **kwargs):
        raise AssertionError("a refused address was connected to")

    monkeypatch.setattr(transport, "_http", no_connection)
    apply()
    errors = set()
    deliveries = integrator_api.get("/api/v1/dept/deliveries/").json()["results"]
    assert len(deliveries) == 2
    for delivery in deliveries:
        assert delivery["status"] == "pending"
        detail = integrator_api.get(f"/api/v1/dept/deliveries/{delivery['id']}/").json()
        [attempt] = detail["attempts"]
        assert attempt["status_code"] is None
        errors.add(attempt["error"])
    assert errors == {str(transport.REFUSED)}


def test_the_circuit_breaker_pauses_holds_and_resumes(
    settings,
    department,
    apply,
    hook,
    department_server,
    django_capture_on_commit_callbacks,
    integrator_api,
) -> None:
    settings.ROUTING_BREAKER_THRESHOLD = 3
    clerk = StaffFactory(department=department)
    department_server.default = Answer(500, {})
    for _ in range(3):
        apply()
    hook.refresh_from_db()
    assert hook.state == "paused" and "3 consecutive failures" in hook.pause_reason
    assert Message.objects.filter(user=clerk, kind="endpoint.paused").exists()
    assert integrator_api.get(f"/api/v1/dept/endpoints/{hook.id}/").json()["state"] == "paused"

    # While paused, new events wait without spending their retries.
    apply()
    held = Delivery.objects.order_by("-created_at").first()
    assert held.attempt_count == 0 and held.next_attempt_at is None
    assert len(department_server.received) == 3

    # The department fixes its system and sends a test event: everything flows,
    # the held event and the three that failed (their retries made due at once).
    department_server.default = Answer(200, {"reference": "OK"})
    with django_capture_on_commit_callbacks(execute=True):
        response = integrator_api.post(f"/api/v1/dept/endpoints/{hook.id}/test/")
    assert response.status_code == 202
    hook.refresh_from_db()
    assert hook.state == "active" and hook.consecutive_failures == 0
    assert not Delivery.objects.filter(status="pending").exists()
    assert len(department_server.of_type("application.submitted")) == 3 + 4


def test_paused_endpoints_are_probed_and_resumed(
    settings, citizen_api, service, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    Endpoint.objects.filter(pk=hook.pk).update(paused_at=timezone.now(), pause_reason="test")
    with django_capture_on_commit_callbacks(execute=True):
        assert sweeper.endpoints_probe_paused() == 1
    assert department_server.of_type("ping")
    hook.refresh_from_db()
    assert hook.state == "active"
    with django_capture_on_commit_callbacks(execute=True):
        assert sweeper.endpoints_probe_paused() == 0


def test_ping_reaches_the_endpoint_signed(
    integrator_api, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = integrator_api.post(f"/api/v1/dept/endpoints/{hook.id}/test/")
    assert response.status_code == 202
    [request] = department_server.received
    assert request.verified(hook.secret_shown)["type"] == "ping"


def test_a_dead_letter_is_replayed_with_the_same_id(
    apply, integrator_api, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    department_server.answer(Answer(400, {"error": "schema"}))
    apply()
    delivery = Delivery.objects.get()
    assert delivery.status == "failed"
    with django_capture_on_commit_callbacks(execute=True):
        response = integrator_api.post(f"/api/v1/dept/deliveries/{delivery.id}/retry/")
    assert response.status_code == 202
    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and delivery.attempt_count == 2
    assert len({r.headers["webhook-id"] for r in department_server.received}) == 1


def test_the_department_reads_its_deliveries_and_their_attempts(
    apply, integrator_api, other_integrator_key, hook, department_server
) -> None:
    from tests.conftest import client_with_key

    department_server.answer(Answer(500, {"e": 1}))
    apply()
    delivery = Delivery.objects.get()
    listed = integrator_api.get(
        "/api/v1/dept/deliveries/", {"endpoint": str(hook.id), "status": "pending"}
    ).json()
    assert [d["id"] for d in listed["results"]] == [str(delivery.id)]
    assert listed["results"][0]["event"]["id"] == delivery.event.webhook_id
    detail = integrator_api.get(f"/api/v1/dept/deliveries/{delivery.id}/").json()
    assert detail["attempts"][0]["status_code"] == 500
    assert detail["attempts"][0]["response_body"] == '{"e": 1}'
    assert (
        integrator_api.get("/api/v1/dept/deliveries/", {"status": "succeeded"}).json()["results"]
        == []
    )
    assert integrator_api.get("/api/v1/dept/deliveries/", {"endpoint": "nope"}).status_code == 400
    other = client_with_key(other_integrator_key.raw)
    assert other.get(f"/api/v1/dept/deliveries/{delivery.id}/").status_code == 404
    assert other.post(f"/api/v1/dept/deliveries/{delivery.id}/retry/").status_code == 404
    assert other.get("/api/v1/dept/deliveries/").json()["results"] == []


def test_a_delivery_in_a_workers_hands_is_not_sent_twice(
    citizen, service, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    from services.applications import application_submit
    from tests.services.conftest import GOOD_FORM

    application_submit(citizen=citizen, service=service, form=GOOD_FORM)  # nudge never runs
    delivery = Delivery.objects.get()
    Delivery.objects.filter(pk=delivery.pk).update(
        locked_until=timezone.now() + dt.timedelta(seconds=30)
    )
    assert deliveries.delivery_attempt(delivery.pk) is None
    assert department_server.received == []


def test_the_sweeper_delivers_what_lost_its_nudge(
    settings, citizen, service, hook, department_server, django_capture_on_commit_callbacks
) -> None:
    from services.applications import application_submit
    from tests.services.conftest import GOOD_FORM

    application_submit(
        citizen=citizen, service=service, form=GOOD_FORM
    )  # the broker "lost" the nudge
    assert department_server.received == []
    Delivery.objects.update(
        next_attempt_at=timezone.now()
        - dt.timedelta(seconds=settings.ROUTING_SWEEP_GRACE_SECONDS + 1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert sweeper.deliveries_sweep() == {"deliveries": 1, "events": 0}
    assert len(department_server.received) == 1
    assert Delivery.objects.get().status == "succeeded"
    with django_capture_on_commit_callbacks(execute=True):
        assert sweeper.deliveries_sweep() == {"deliveries": 0, "events": 0}


def test_a_huge_response_is_cut_short(apply, hook, department_server) -> None:
    department_server.answer(Answer(200, b"x" * 500_000))
    apply()
    attempt = Delivery.objects.get().attempts.get()
    assert len(attempt.response_body) == 2048


def test_in_process_subscribers_run_once_per_event(django_capture_on_commit_callbacks) -> None:
    seen = []
    events.subscribe("test.happened", lambda event: seen.append(event.id))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            event = outbox.event_publish(type="test.happened", data={"x": 1})
        assert seen == [event.id]
        assert outbox.event_handle(event.id) is False
        assert seen == [event.id]
    finally:
        events._subscribers.pop("test.happened", None)


def test_a_change_made_while_a_send_is_in_flight_is_not_overwritten(
    citizen, service, hook, department_server, monkeypatch
) -> None:
    """The department deletes its endpoint while a try is on the wire: the
    try is recorded, the delivery stays cancelled."""
    from services.applications import application_submit
    from tests.services.conftest import GOOD_FORM

    application_submit(citizen=citizen, service=service, form=GOOD_FORM)  # nudge never runs
    delivery = Delivery.objects.get()
    real_post = transport.webhook_post

    def post_while_deleting(*args, **kwargs):
        result = real_post(*args, **kwargs)
        endpoints.endpoint_delete(endpoint=Endpoint.objects.get(pk=hook.pk), actor=None)
        return result

    monkeypatch.setattr(transport, "webhook_post", post_while_deleting)
    deliveries.delivery_attempt(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "cancelled"
    assert delivery.attempt_count == 1
    assert delivery.attempts.get().succeeded


def test_a_deleted_endpoints_dead_letters_are_cancelled_with_it(
    citizen, service, hook, department_server, operator_client, django_capture_on_commit_callbacks
) -> None:
    """No replay can reach a deleted endpoint: its dead letters are
    cancelled with it (attempts kept), the operator is not offered a replay
    that must fail, and the dashboard does not count them as waiting."""
    from services.applications import application_submit
    from tests.services.conftest import GOOD_FORM

    department_server.default = Answer(422, {})  # refused for good: a dead letter
    with django_capture_on_commit_callbacks(execute=True):
        application_submit(citizen=citizen, service=service, form=GOOD_FORM)
    delivery = Delivery.objects.get()
    assert delivery.status == "failed"
    page = f"/admin/services/delivery/{delivery.pk}/change/"
    assert "重新投递" in operator_client.get(page).content.decode()

    endpoints.endpoint_delete(endpoint=Endpoint.objects.get(pk=hook.pk), actor=None)
    delivery.refresh_from_db()
    assert delivery.status == "cancelled"
    assert delivery.attempts.count() == 1
    assert "重新投递" not in operator_client.get(page).content.decode()
    deleted = operator_client.get("/admin/services/endpoint/?state=deleted").context["cl"]
    assert [e.pk for e in deleted.result_list] == [hook.pk]
    disabled = operator_client.get("/admin/services/endpoint/?state=disabled").context["cl"]
    assert list(disabled.result_list) == []


def test_a_failing_subscriber_is_tried_again_later_not_in_a_loop(
    settings, django_capture_on_commit_callbacks
) -> None:
    from services.models import OutboxEvent

    calls = []

    def flaky(event) -> None:
        calls.append(event.id)
        if len(calls) == 1:
            raise RuntimeError("payments database hiccup")

    events.subscribe("test.flaky", flaky)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            event = outbox.event_publish(type="test.flaky", data={})
        event.refresh_from_db()
        assert event.handled_at is None and event.handle_attempts == 1
        assert event.handle_after > timezone.now()
        OutboxEvent.objects.filter(pk=event.pk).update(
            created_at=timezone.now() - dt.timedelta(minutes=1)
        )
        with django_capture_on_commit_callbacks(execute=True):
            assert sweeper.deliveries_sweep()["events"] == 0  # not before its wait is over
        OutboxEvent.objects.filter(pk=event.pk).update(handle_after=timezone.now())
        with django_capture_on_commit_callbacks(execute=True):
            assert sweeper.deliveries_sweep()["events"] == 1
        event.refresh_from_db()
        assert event.handled_at is not None and len(calls) == 2
    finally:
        events._subscribers.pop("test.flaky", None)


def test_a_delivered_hook_hears_of_its_event_type_only_with_the_departments_reference(
    department, department_server, django_capture_on_commit_callbacks
) -> None:
    """What a delivered event means is registered from outside the engine
    (the applications side registers ``routed``); the handler runs in the
    transaction recording the try, and only for a success."""
    hook, _secret = endpoints.endpoint_create(
        department=department,
        url=department_server.url("/hooks"),
        events=["test.delivered", "test.other"],
        actor=None,
    )
    heard = []
    deliveries.on_delivered(
        "test.delivered", lambda delivered: heard.extend(ref for _event, ref in delivered)
    )
    try:
        department_server.answer(Answer(500, {"reference": "NOT-YET"}), Answer(200))
        with django_capture_on_commit_callbacks(execute=True):
            outbox.event_publish(type="test.delivered", data={}, department=department)
        with django_capture_on_commit_callbacks(execute=True):
            outbox.event_publish(type="test.other", data={}, department=department)
        assert heard == []  # the first try failed; the other type has no handler
        delivery = Delivery.objects.get(event__type="test.delivered")
        try_again(delivery, django_capture_on_commit_callbacks)
        assert heard == ["DEPT-REF-1"]
        assert Delivery.objects.get(pk=delivery.pk).status == "succeeded"
    finally:
        deliveries._on_delivered.pop("test.delivered", None)
    assert hook.deliveries.filter(status="succeeded").count() == 2


def test_an_operator_reads_a_delivery_and_its_tries_as_the_department_does(
    operator_client, integrator_api, apply, hook, department_server
) -> None:
    """The admin and the department API show one record of a delivery."""
    department_server.answer(Answer(503, {"error": "maintenance window"}))
    apply()
    delivery = Delivery.objects.get()
    page = operator_client.get(f"/admin/services/delivery/{delivery.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "maintenance window" in html  # the try's response, on the inline
    shown = integrator_api.get(f"/api/v1/dept/deliveries/{delivery.pk}/").json()
    assert shown["last_status_code"] == 503 and shown["attempt_count"] == 1
    assert shown["attempts"][0]["response_body"] == '{"error": "maintenance window"}'
    for field in ("status", "attempt_count", "next_attempt_at", "last_status_code"):
        assert str(Delivery._meta.get_field(field).verbose_name) in html


def test_a_department_lists_each_delivery_once_when_its_events_go_to_many_endpoints(
    department, department_server, citizen_api, service, integrator_api
) -> None:
    """One event makes a delivery per subscribed endpoint, all of one time:
    the list still walks through them page by page, none twice, none left
    out, newest first."""
    for n in range(12):
        endpoints.endpoint_create(
            department=department,
            url=department_server.url(f"/hook-{n}"),
            events=["application.submitted"],
            actor=None,
        )
    for _ in range(6):
        assert submit(citizen_api).status_code == 201
    made = list(Delivery.objects.order_by("-created_at", "-id").values_list("id", flat=True))
    assert len(made) == 72 and len({d.created_at for d in Delivery.objects.all()}) == 6
    expected = [str(d) for d in made]
    url = "/api/v1/dept/deliveries/"
    for params in ({}, {"status": "pending"}):
        for size in (2, 5, 12, 100):
            asked = {**params, "page_size": size}
            for listed in (walk(integrator_api, url, asked), walk_back(integrator_api, url, asked)):
                assert sorted(listed) == sorted(expected)  # each once
                assert listed == expected  # newest first, one event's in a fixed order

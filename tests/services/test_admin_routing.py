"""Operators at work on deliveries and endpoints from their pages: replay a
dead letter, hold, resume and ping an endpoint; each button only for staff
allowed to, each step audited with the operator's address; the records
themselves stay read-only."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from accounts.models import AuditEntry, User
from services.models import Delivery, DeliveryAttempt, Endpoint, TimelineEntry
from tests.accounts.factories import StaffFactory
from tests.services.department import Answer

pytestmark = pytest.mark.django_db


def staff_with(*codenames: str) -> User:
    staff = StaffFactory()
    staff.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="services", codename__in=codenames)
    )
    return staff


def delivery_page(delivery: Delivery) -> str:
    return f"/admin/services/delivery/{delivery.pk}/change/"


def replay_url(delivery: Delivery) -> str:
    return f"/admin/services/delivery/{delivery.pk}/do/replay/"


def endpoint_url(endpoint: Endpoint, action: str = "") -> str:
    base = f"/admin/services/endpoint/{endpoint.pk}/"
    return f"{base}do/{action}/" if action else f"{base}change/"


@pytest.fixture
def dead_letter(apply, hook, department_server) -> Delivery:
    department_server.answer(Answer(400, {"error": "schema"}))  # final: no retry
    apply()
    delivery = Delivery.objects.get()
    assert delivery.status == "failed"
    return delivery


def test_an_operator_replays_a_dead_letter_from_its_page(
    operator_client, operator, dead_letter, department_server, django_capture_on_commit_callbacks
) -> None:
    html = operator_client.get(delivery_page(dead_letter)).content.decode()
    assert f'action="{replay_url(dead_letter)}"' in html
    application = dead_letter.event.application
    assert (
        f'href="/admin/services/application/{application.pk}/change/">{application.number}<' in html
    )
    assert 'name="_save"' not in html  # a record, not a form
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(replay_url(dead_letter), REMOTE_ADDR="10.20.30.41")
    assert response.status_code == 302
    assert response.url == delivery_page(dead_letter)
    dead_letter.refresh_from_db()
    assert dead_letter.status == "succeeded" and dead_letter.attempt_count == 2
    assert len({r.headers["webhook-id"] for r in department_server.received}) == 1
    entry = AuditEntry.objects.get(action="delivery.replayed")
    assert (entry.actor_id, entry.target_id, entry.ip) == (
        str(operator.pk),
        str(dead_letter.pk),
        "10.20.30.41",
    )
    page = operator_client.get(response.url).content.decode()
    assert "已重新投递" in page


def test_staff_who_may_only_look_get_no_replay_button(client, dead_letter) -> None:
    client.force_login(staff_with("view_delivery"))
    html = client.get(delivery_page(dead_letter)).content.decode()
    assert "/do/" not in html
    assert client.post(replay_url(dead_letter)).status_code == 403
    dead_letter.refresh_from_db()
    assert dead_letter.status == "failed"
    assert not AuditEntry.objects.filter(action="delivery.replayed").exists()


def test_staff_with_the_change_permission_may_replay(
    client, dead_letter, django_capture_on_commit_callbacks
) -> None:
    client.force_login(staff_with("view_delivery", "change_delivery"))
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(replay_url(dead_letter)).status_code == 302
    dead_letter.refresh_from_db()
    assert dead_letter.status == "succeeded"


def test_a_replay_is_a_post_and_unknown_buttons_are_refused(operator_client, dead_letter) -> None:
    assert operator_client.get(replay_url(dead_letter)).status_code == 405
    assert (
        operator_client.post(f"/admin/services/delivery/{dead_letter.pk}/do/delete/").status_code
        == 403
    )
    missing = "/admin/services/delivery/00000000-0000-7000-8000-000000000000/do/replay/"
    assert operator_client.post(missing).status_code == 404
    assert operator_client.post("/admin/services/delivery/not-an-id/do/replay/").status_code == 404


def test_an_operator_holds_resumes_and_pings_an_endpoint(
    operator_client,
    operator,
    hook,
    apply,
    integrator_api,
    department_server,
    django_capture_on_commit_callbacks,
) -> None:
    html = operator_client.get(endpoint_url(hook)).content.decode()
    assert f'action="{endpoint_url(hook, "hold")}"' in html
    assert f'action="{endpoint_url(hook, "resume")}"' not in html  # it is running
    assert 'name="_save"' not in html

    address = {"REMOTE_ADDR": "10.20.30.40"}
    assert operator_client.post(endpoint_url(hook, "hold"), **address).status_code == 302
    hook.refresh_from_db()
    assert hook.state == "held" and hook.is_active  # the department's switch is untouched
    html = operator_client.get(endpoint_url(hook)).content.decode()
    assert f'action="{endpoint_url(hook, "resume")}"' in html
    assert f'action="{endpoint_url(hook, "hold")}"' not in html
    assert "运营暂停" in html

    # While held nothing but pings goes; the department cannot lift the hold.
    apply()
    assert department_server.received == []
    answer = integrator_api.patch(
        f"/api/v1/dept/endpoints/{hook.pk}/", {"is_active": True}, format="json"
    )
    assert answer.status_code == 200
    assert answer.json()["state"] == "held" and answer.json()["hold_reason"]
    assert Delivery.objects.get().status == "pending"
    assert department_server.received == []

    with django_capture_on_commit_callbacks(execute=True):
        assert operator_client.post(endpoint_url(hook, "resume"), **address).status_code == 302
    hook.refresh_from_db()
    assert hook.state == "active"
    # What waited went on the resume.
    assert [r.payload["type"] for r in department_server.received] == ["application.submitted"]
    assert Delivery.objects.get().status == "succeeded"

    with django_capture_on_commit_callbacks(execute=True):
        assert operator_client.post(endpoint_url(hook, "ping"), **address).status_code == 302
    assert department_server.received[-1].payload["type"] == "ping"
    entries = AuditEntry.objects.filter(target_id=str(hook.pk), actor_id=str(operator.pk))
    assert sorted(entries.values_list("action", "ip")) == [
        ("endpoint.held", "10.20.30.40"),
        ("endpoint.pinged", "10.20.30.40"),
        ("endpoint.resumed", "10.20.30.40"),
    ]
    assert entries.get(action="endpoint.resumed").data == {"by": "operator", "hold": True}


def test_a_resume_leaves_the_departments_own_switch_alone(
    operator_client, hook, integrator_api, department_server
) -> None:
    """An endpoint its department switched off (or that answered 410) stays
    off: resuming lifts the operator's hold and the breaker's pause only."""
    assert operator_client.post(endpoint_url(hook, "hold")).status_code == 302
    answer = integrator_api.patch(
        f"/api/v1/dept/endpoints/{hook.pk}/", {"is_active": False}, format="json"
    )
    assert answer.json()["state"] == "held"  # the operators' hold shows first
    assert answer.json()["is_active"] is False
    response = operator_client.post(endpoint_url(hook, "resume"), follow=True)
    assert "已被部门停用" in response.content.decode()
    hook.refresh_from_db()
    assert (hook.is_active, hook.held_at, hook.state) == (False, None, "disabled")
    html = operator_client.get(endpoint_url(hook)).content.decode()
    assert f'action="{endpoint_url(hook, "resume")}"' not in html  # nothing of ours to lift
    assert f'action="{endpoint_url(hook, "hold")}"' in html


def test_a_breaker_pause_is_lifted_by_an_operator(
    operator_client, hook, apply, department_server, django_capture_on_commit_callbacks
) -> None:
    Endpoint.objects.filter(pk=hook.pk).update(
        paused_at=timezone.now(), pause_reason="10 consecutive failures"
    )
    apply()
    assert Delivery.objects.get().next_attempt_at is None  # held while paused
    html = operator_client.get(endpoint_url(hook)).content.decode()
    assert f'action="{endpoint_url(hook, "resume")}"' in html
    with django_capture_on_commit_callbacks(execute=True):
        assert operator_client.post(endpoint_url(hook, "resume")).status_code == 302
    hook.refresh_from_db()
    assert (hook.state, hook.pause_reason) == ("active", "")
    assert Delivery.objects.get().status == "succeeded"
    assert AuditEntry.objects.get(action="endpoint.resumed").data == {
        "by": "operator",
        "pause": True,
    }


def test_staff_who_may_only_look_cannot_touch_an_endpoint(client, hook, department_server) -> None:
    client.force_login(staff_with("view_endpoint"))
    html = client.get(endpoint_url(hook)).content.decode()
    assert "/do/" not in html
    for action in ("hold", "resume", "ping"):
        assert client.post(endpoint_url(hook, action)).status_code == 403
    hook.refresh_from_db()
    assert hook.is_active
    assert department_server.received == []


def test_an_applications_page_leads_to_what_was_sent_about_it(operator_client, dead_letter) -> None:
    page = operator_client.get(
        f"/admin/services/application/{dead_letter.event.application_id}/change/"
    ).content.decode()
    assert f'href="{delivery_page(dead_letter)}"' in page
    assert "application.submitted → " in page and "失败（死信）" in page


def test_staff_who_may_not_read_deliveries_do_not_see_where_events_go(client, dead_letter) -> None:
    """An application's page lists its deliveries (with the department's
    endpoint URL) only for staff who may read deliveries."""
    page = f"/admin/services/application/{dead_letter.event.application_id}/change/"
    client.force_login(staff_with("view_application"))
    html = client.get(page).content.decode()
    assert dead_letter.event.application.number in html
    assert dead_letter.endpoint.url not in html and "投递记录" not in html
    client.force_login(staff_with("view_application", "view_delivery"))
    html = client.get(page).content.decode()
    assert dead_letter.endpoint.url in html and "投递记录" in html


def test_removing_and_registering_the_url_again_keeps_the_hold(
    operator_client,
    hook,
    apply,
    integrator_api,
    department_server,
    django_capture_on_commit_callbacks,
) -> None:
    """A hold is on the department's address: deleting the held endpoint and
    registering the same URL again (or a second endpoint at it, or moving
    another endpoint to it) comes back held, until an operator resumes."""
    assert operator_client.post(endpoint_url(hook, "hold")).status_code == 302
    assert integrator_api.delete(f"/api/v1/dept/endpoints/{hook.pk}/").status_code == 204
    again = integrator_api.post(
        "/api/v1/dept/endpoints/",
        {"url": hook.url, "events": ["application.submitted"]},
        format="json",
    ).json()
    assert again["state"] == "held" and again["hold_reason"]
    other = integrator_api.post(
        "/api/v1/dept/endpoints/",
        {
            "url": department_server.url("/events").replace("127.0.0.1", "127.0.0.2"),
            "events": ["application.submitted"],
        },
        format="json",
    ).json()
    assert other["state"] == "active"
    moved = integrator_api.patch(
        f"/api/v1/dept/endpoints/{other['id']}/", {"url": hook.url}, format="json"
    ).json()
    assert moved["state"] == "held"

    apply()
    assert department_server.received == []

    with django_capture_on_commit_callbacks(execute=True):
        assert operator_client.post(endpoint_url(Endpoint.objects.get(pk=again["id"]), "resume"))
    assert [r.payload["type"] for r in department_server.received] == ["application.submitted"]
    # The resumed URL stays resumed, though the moved endpoint there is
    # still held (each is resumed on its own page) and passes its hold on.
    third = integrator_api.post(
        "/api/v1/dept/endpoints/",
        {"url": hook.url, "events": ["application.cancelled"]},
        format="json",
    ).json()
    assert third["state"] == "held"
    assert Endpoint.objects.get(pk=hook.pk).held_at is None
    assert Endpoint.objects.get(pk=moved["id"]).held_at is not None  # resumed one by one


def test_a_secret_in_an_endpoint_urls_query_is_never_shown_whole(
    operator_client, department, department_server, apply, integrator_api
) -> None:
    """Some systems take a token in the query string; the department sees
    its URL whole, nobody else does: not the admin's pages, the dashboard,
    the audit trail or the staff's messages."""
    from accounts.models import Message
    from config.masking import mask_url_query

    clerk = StaffFactory(department=department)  # told of the hold in the inbox
    url = department_server.url("/events?token=s3cr3t-t0ken&v=2")
    created = integrator_api.post(
        "/api/v1/dept/endpoints/", {"url": url, "events": ["application.submitted"]}, format="json"
    )
    assert created.status_code == 201 and created.json()["url"] == url  # its own, whole
    endpoint = Endpoint.objects.get(pk=created.json()["id"])
    assert endpoint.url_shown == mask_url_query(url) == url.split("?")[0] + "?token=***&v=***"
    apply()
    delivery = Delivery.objects.get()
    assert operator_client.post(endpoint_url(endpoint, "hold")).status_code == 302
    pages = [
        "/admin/",
        "/admin/services/endpoint/",
        endpoint_url(endpoint),
        "/admin/services/delivery/",
        delivery_page(delivery),
        f"/admin/services/application/{delivery.event.application_id}/change/",
        "/admin/accounts/auditentry/",
    ]
    for page in pages:
        html = operator_client.get(page).content.decode()
        at = html.find("s3cr3t-t0ken")
        assert at < 0, (page, html[max(0, at - 300) : at + 50])
    assert "token=***" in operator_client.get(endpoint_url(endpoint)).content.decode()
    for entry in AuditEntry.objects.filter(target_id=str(endpoint.pk)):
        assert "s3cr3t-t0ken" not in str(entry.data), entry.action
    told = Message.objects.get(user=clerk, kind="endpoint.held")
    assert "token=***" in str(told.body) and "s3cr3t-t0ken" not in str([told.body, told.data])


def test_a_bulk_replay_names_what_it_could_not_replay(
    operator_client, dead_letter, department_server, django_capture_on_commit_callbacks
) -> None:
    from services.routing import endpoints

    other, _secret = endpoints.endpoint_create(
        department=dead_letter.endpoint.department,
        url=department_server.url("/other"),
        events=["application.submitted"],
        actor=None,
    )
    in_hand = Delivery.objects.create(
        event=dead_letter.event,
        endpoint=other,
        department=other.department,
        status="pending",
        locked_until=timezone.now() + timezone.timedelta(minutes=1),  # a worker is sending it
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            "/admin/services/delivery/",
            {"action": "replay", "_selected_action": [str(dead_letter.pk), str(in_hand.pk)]},
            follow=True,
        )
    shown = [str(m) for m in response.context["messages"]]
    assert "已重新投递 1 条" in shown
    assert any(
        "1 条未重新投递" in m and str(in_hand.pk)[-8:] in m and "delivery_not_retryable" in m
        for m in shown
    ), shown


def test_a_held_address_cannot_be_freed_by_moving_or_respelling(
    operator_client, hook, integrator_api, department_server
) -> None:
    """A hold is on the department's address (scheme, host, port), and a
    held endpoint's URL cannot change: moving it away and registering the
    old URL, or the same address under another path or query, stays held."""
    assert operator_client.post(endpoint_url(hook, "hold")).status_code == 302
    moved = integrator_api.patch(
        f"/api/v1/dept/endpoints/{hook.pk}/", {"url": department_server.url("/v2")}, format="json"
    )
    assert moved.status_code == 409 and moved.json()["code"] == "endpoint_held"
    assert integrator_api.delete(f"/api/v1/dept/endpoints/{hook.pk}/").status_code == 204
    for url in (hook.url + "?x=1", department_server.url("/another/path")):
        again = integrator_api.post(
            "/api/v1/dept/endpoints/",
            {"url": url, "events": ["application.submitted"]},
            format="json",
        )
        assert again.status_code == 201, again.json()
        assert again.json()["state"] == "held", url
    entry = AuditEntry.objects.filter(action="endpoint.held", actor_kind="system").first()
    assert entry is not None and entry.data["as"] == str(hook.pk)  # the inherited hold, audited


def test_searching_endpoints_takes_a_whole_url_only(operator_client, hook, integrator_api) -> None:
    """A search for part of a URL would tell, character by character, a
    query value the pages show masked."""
    url = hook.url.split("?")[0] + "?token=s3cr3t"
    created = integrator_api.post(
        "/api/v1/dept/endpoints/", {"url": url, "events": ["application.submitted"]}, format="json"
    ).json()
    listed = operator_client.get("/admin/services/endpoint/", {"q": "token=s3cr"})
    assert created["id"] not in listed.content.decode()
    whole = operator_client.get("/admin/services/endpoint/", {"q": url})
    assert created["id"] in whole.content.decode()
    deliveries = operator_client.get("/admin/services/delivery/", {"q": "s3cr3"})
    assert deliveries.status_code == 200 and "s3cr3t" not in deliveries.content.decode()


def test_a_department_answer_echoing_the_application_is_shown_masked(
    operator_client, dead_letter
) -> None:
    """A department's system may answer with the application it got (the
    applicant's name, ID number and phone): its page shows that answer with
    the personal values masked, as every page here does; the full values
    are the PII page's, behind its permission and the audit trail."""
    echo = (
        '{"received": {"applicant": {"name": "张三丰", "id_number": "430102199003070018",'
        ' "phone": "13800138000"}}}'
    )
    DeliveryAttempt.objects.create(
        delivery=dead_letter,
        number=9,
        started_at=timezone.now(),
        duration_ms=12,
        status_code=422,
        response_body=echo,
    )
    html = operator_client.get(delivery_page(dead_letter)).content.decode()
    assert "430102199003070018" not in html and "13800138000" not in html
    assert "张三丰" not in html
    assert "430102********0018" in html and "138****8000" in html


def test_what_citizens_and_departments_wrote_on_an_application_is_shown_masked(
    operator_client, dead_letter
) -> None:
    """A cancel reason, a department's note or a rating's comment is free
    text and may carry a phone or an ID number: masked on the page, as the
    refund reasons are."""
    application = dead_letter.event.application
    application.rating_comment = "办得快，有事打 13800138000"
    application.save(update_fields=["rating_comment"])
    TimelineEntry.objects.create(
        application=application,
        status="cancelled",
        actor="citizen",
        note="重复提交，正确的身份证号是 430102199003070018",
    )
    html = operator_client.get(
        f"/admin/services/application/{application.pk}/change/"
    ).content.decode()
    assert "13800138000" not in html and "430102199003070018" not in html
    assert "138****8000" in html and "430102********0018" in html

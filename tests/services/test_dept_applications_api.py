"""A department follows the applications to its services and reports progress."""

from __future__ import annotations

import pytest

from accounts.api_keys import api_key_create
from accounts.models import ApiKeyScope, AuditEntry, Message
from services.models import Application, OutboxEvent, TimelineEntry
from tests.conftest import client_with_key
from tests.services.conftest import GOOD_FORM, submit

pytestmark = pytest.mark.django_db

URL = "/api/v1/dept/applications/"


def test_the_department_sees_the_applicants_verified_identity(
    integrator_api, citizen, citizen_api, service
) -> None:
    number = submit(citizen_api).json()["number"]
    response = integrator_api.get(f"{URL}{number}/")
    assert response.status_code == 200
    body = response.json()
    assert (
        body["number"] == number
        and body["service"] == "sbk-apply"
        and body["status"] == "submitted"
    )
    assert body["form"] == GOOD_FORM
    assert body["applicant"] == {
        "sub": citizen.subject,
        "name": "张三丰",
        "id_number": citizen.id_number,
        "phone": "13800138000",
    }
    assert [t["status"] for t in body["timeline"]] == ["submitted"]


def test_a_department_lists_only_applications_to_its_services(
    integrator_api, citizen_api, service, other_service
) -> None:
    mine = submit(citizen_api).json()["number"]
    submit(citizen_api, other_service.code)
    listed = integrator_api.get(URL).json()
    assert [a["number"] for a in listed["results"]] == [mine]


def test_a_department_filters_by_status(integrator_api, citizen_api, service) -> None:
    first = submit(citizen_api).json()["number"]
    second = submit(citizen_api).json()["number"]
    integrator_api.post(f"{URL}{first}/status/", {"status": "accepted"}, format="json")
    accepted = integrator_api.get(URL, {"status": "accepted"}).json()["results"]
    assert [a["number"] for a in accepted] == [first]
    submitted = integrator_api.get(URL, {"status": "submitted"}).json()["results"]
    assert [a["number"] for a in submitted] == [second]
    assert integrator_api.get(URL, {"status": "nope"}).status_code == 400


def test_another_departments_application_is_not_found(
    integrator_api, citizen_api, other_service
) -> None:
    number = submit(citizen_api, other_service.code).json()["number"]
    assert integrator_api.get(f"{URL}{number}/").status_code == 404
    response = integrator_api.post(f"{URL}{number}/status/", {"status": "accepted"}, format="json")
    assert response.status_code == 404
    assert Application.objects.get(number=number).status == "submitted"


def test_the_department_accepts_asks_for_more_and_completes(
    integrator_api, citizen_api, service
) -> None:
    body = submit(citizen_api).json()
    number = body["number"]
    accepted = integrator_api.post(
        f"{URL}{number}/status/",
        {"status": "accepted", "note": "已受理", "reference": "HRSS-2026-001"},
        format="json",
    )
    assert accepted.status_code == 200, accepted.json()
    assert accepted.json()["reference"] == "HRSS-2026-001"
    assert accepted.json()["due_date"] is not None
    integrator_api.post(
        f"{URL}{number}/status/", {"status": "needs_info", "note": "请补充份数"}, format="json"
    )
    citizen_view = citizen_api.get(f"/api/v1/applications/{body['id']}/").json()
    assert citizen_view["status"] == "needs_info"
    assert citizen_view["timeline"][-1]["note"] == "请补充份数"
    citizen_api.post(
        f"/api/v1/applications/{body['id']}/supplement/", {"form": {"copies": 1}}, format="json"
    )
    done = integrator_api.post(f"{URL}{number}/status/", {"status": "completed"}, format="json")
    assert done.json()["status"] == "completed"
    actions = AuditEntry.objects.filter(action="application.status_changed").values_list(
        "data__to", flat=True
    )
    assert sorted(actions) == ["accepted", "completed", "needs_info"]


@pytest.mark.parametrize("target", ["routed", "cancelled", "submitted", "awaiting_payment"])
def test_a_department_cannot_make_the_citizens_or_systems_moves(
    integrator_api, citizen_api, service, target
) -> None:
    number = submit(citizen_api).json()["number"]
    response = integrator_api.post(f"{URL}{number}/status/", {"status": target}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"
    assert response.json()["status"] == 409
    assert response.json()["current_status"] == "submitted"


def test_completing_before_accepting_is_refused(integrator_api, citizen_api, service) -> None:
    number = submit(citizen_api).json()["number"]
    response = integrator_api.post(f"{URL}{number}/status/", {"status": "completed"}, format="json")
    assert response.status_code == 409
    assert response.json()["status"] == 409
    assert response.json()["current_status"] == "submitted"


def test_an_unknown_status_is_a_400(integrator_api, citizen_api, service) -> None:
    number = submit(citizen_api).json()["number"]
    response = integrator_api.post(f"{URL}{number}/status/", {"status": "done"}, format="json")
    assert response.status_code == 400
    assert "status" in response.json()["errors"]


def test_scanner_keys_cannot_touch_applications(scanner_api, citizen_api, service) -> None:
    number = submit(citizen_api).json()["number"]
    assert scanner_api.get(f"{URL}{number}/").status_code == 403


def test_listing_is_flat_in_queries(
    integrator_api, citizen, service, django_assert_max_num_queries
) -> None:
    from services.applications import application_submit

    for _ in range(25):
        application_submit(citizen=citizen, service=service, form=GOOD_FORM)
    with django_assert_max_num_queries(3):
        response = integrator_api.get(URL, {"page_size": 25})
    assert len(response.json()["results"]) == 25


def test_unpaid_applications_are_not_the_departments_to_see(
    integrator_api, citizen_api, paid_service
) -> None:
    body = submit(citizen_api, "id-card-renew").json()
    assert body["status"] == "awaiting_payment"
    assert integrator_api.get(URL).json()["results"] == []
    assert integrator_api.get(f"{URL}{body['number']}/").status_code == 404
    citizen_api.post(f"/api/v1/applications/{body['id']}/cancel/", {}, format="json")
    assert integrator_api.get(URL).json()["results"] == []


def test_a_paid_application_reaches_the_department(
    integrator_api, citizen_api, paid_service
) -> None:
    from services.applications import application_mark_paid

    body = submit(citizen_api, "id-card-renew").json()
    application_mark_paid(application=Application.objects.get(pk=body["id"]))
    [listed] = integrator_api.get(URL).json()["results"]
    assert listed["number"] == body["number"] and listed["status"] == "submitted"


def test_the_list_is_newest_first_by_when_each_reached_the_department(
    integrator_api, citizen_api, service, paid_service
) -> None:
    """A department polling the top of its list sees an application paid
    today above one that reached it yesterday, though the paid one was
    made first."""
    from services.applications import application_mark_paid

    paid_later = submit(citizen_api, "id-card-renew").json()
    free = submit(citizen_api).json()["number"]
    application_mark_paid(application=Application.objects.get(pk=paid_later["id"]))
    for params in ({}, {"status": "submitted"}):
        page = integrator_api.get(URL, {"page_size": 1, **params}).json()
        assert [a["number"] for a in page["results"]] == [paid_later["number"]]
        rest = integrator_api.get(page["next"]).json()["results"]
        assert [a["number"] for a in rest] == [free]


def test_a_status_report_is_audited_with_the_callers_address(
    integrator_api, integrator_key, citizen_api, service
) -> None:
    """As every other write of the department API is."""
    number = submit(citizen_api).json()["number"]
    response = integrator_api.post(
        f"{URL}{number}/status/", {"status": "accepted"}, format="json", REMOTE_ADDR="203.0.113.9"
    )
    assert response.status_code == 200, response.json()
    entry = AuditEntry.objects.get(action="application.status_changed")
    assert entry.ip == "203.0.113.9"
    assert entry.actor_kind == "api_key"


def test_an_unknown_status_filter_is_refused_in_the_callers_language(integrator_api) -> None:
    chinese = integrator_api.get(URL, {"status": "nope"}).json()
    assert chinese["code"] == "invalid" and "不是合法选项" in chinese["errors"]["status"][0]
    english = integrator_api.get(URL, {"status": "nope"}, HTTP_ACCEPT_LANGUAGE="en").json()
    assert english["errors"]["status"] == ['"nope" is not a valid choice.']


# --- Reports sent again: Idempotency-Key ------------------------------------------------------


def report(client, number: str, body: dict, **headers):
    return client.post(f"{URL}{number}/status/", body, format="json", **headers)


def traces() -> dict[str, int]:
    """What a report leaves behind, counted."""
    return {
        "timeline": TimelineEntry.objects.count(),
        "events": OutboxEvent.objects.count(),
        "messages": Message.objects.count(),
        "audit": AuditEntry.objects.filter(action="application.status_changed").count(),
    }


ACCEPT = {"status": "accepted", "note": "已受理", "reference": "HRSS-2026-007"}


def test_a_report_sent_again_with_its_key_gets_the_first_answer_and_applies_once(
    integrator_api, citizen_api, service
) -> None:
    """The department's first report timed out on its side: sent again with
    the same Idempotency-Key, it gets the answer the first one got."""
    number = submit(citizen_api).json()["number"]
    first = report(integrator_api, number, ACCEPT, HTTP_IDEMPOTENCY_KEY="accept-007")
    assert first.status_code == 200, first.json()
    after_first = traces()
    again = report(integrator_api, number, ACCEPT, HTTP_IDEMPOTENCY_KEY="accept-007")
    assert again.status_code == 200, again.json()
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert traces() == after_first
    timeline = integrator_api.get(f"{URL}{number}/").json()["timeline"]
    assert [t["status"] for t in timeline] == ["submitted", "accepted"]


def test_the_same_key_with_another_report_is_refused(integrator_api, citizen_api, service) -> None:
    number = submit(citizen_api).json()["number"]
    report(integrator_api, number, ACCEPT, HTTP_IDEMPOTENCY_KEY="accept-007")
    before = traces()
    response = report(
        integrator_api, number, {"status": "rejected"}, HTTP_IDEMPOTENCY_KEY="accept-007"
    )
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert traces() == before
    assert Application.objects.get(number=number).status == "accepted"


def test_a_report_sent_again_without_a_key_is_a_conflict(
    integrator_api, citizen_api, service
) -> None:
    number = submit(citizen_api).json()["number"]
    assert report(integrator_api, number, ACCEPT).status_code == 200
    before = traces()
    again = report(integrator_api, number, ACCEPT)
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_transition"
    assert again.json()["current_status"] == "accepted"
    assert traces() == before


def test_a_report_key_belongs_to_the_api_key_that_sent_it(
    integrator_api, other_integrator_key, department, citizen_api, service, other_service
) -> None:
    """Another department's key (or another key of the same department)
    using the same key value gets its own answer, never the first one."""
    mine = submit(citizen_api).json()["number"]
    theirs = submit(citizen_api, other_service.code).json()["number"]
    assert report(integrator_api, mine, ACCEPT, HTTP_IDEMPOTENCY_KEY="report-1").status_code == 200

    other_api = client_with_key(other_integrator_key.raw)
    looked = report(other_api, mine, ACCEPT, HTTP_IDEMPOTENCY_KEY="report-1")
    assert looked.status_code == 404 and "Idempotent-Replayed" not in looked
    own = report(other_api, theirs, ACCEPT, HTTP_IDEMPOTENCY_KEY="report-1")
    assert own.status_code == 200 and "Idempotent-Replayed" not in own
    assert own.json()["number"] == theirs
    assert Application.objects.get(number=theirs).status == "accepted"

    _second_key, raw = api_key_create(department=department, scope=ApiKeyScope.INTEGRATOR)
    second_key_api = client_with_key(raw)
    second = report(second_key_api, mine, ACCEPT, HTTP_IDEMPOTENCY_KEY="report-1")
    assert second.status_code == 409 and "Idempotent-Replayed" not in second


def test_a_refused_report_is_not_remembered_under_its_key(
    integrator_api, citizen_api, service
) -> None:
    """As for every POST with an Idempotency-Key: only an answer that did
    something is kept; a refused report sent again is looked at again."""
    number = submit(citizen_api).json()["number"]
    done = {"status": "completed", "note": "已办结"}
    early = report(integrator_api, number, done, HTTP_IDEMPOTENCY_KEY="done-1")
    assert early.status_code == 409
    again = report(integrator_api, number, done, HTTP_IDEMPOTENCY_KEY="done-1")
    assert again.status_code == 409 and "Idempotent-Replayed" not in again
    unknown = report(integrator_api, number, {"status": "done"}, HTTP_IDEMPOTENCY_KEY="accept-1")
    assert unknown.status_code == 400
    assert (
        report(integrator_api, number, ACCEPT, HTTP_IDEMPOTENCY_KEY="accept-1").status_code == 200
    )
    completed = report(integrator_api, number, done, HTTP_IDEMPOTENCY_KEY="done-1")
    assert completed.status_code == 200 and completed.json()["status"] == "completed"


@pytest.mark.parametrize("key", ["x" * 300, "k 1", "k-1\n"])
def test_a_report_with_a_malformed_key_is_a_400_and_not_applied(
    integrator_api, citizen_api, service, key
) -> None:
    number = submit(citizen_api).json()["number"]
    response = report(integrator_api, number, ACCEPT, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_invalid"
    assert Application.objects.get(number=number).status == "submitted"

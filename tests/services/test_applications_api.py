"""A citizen applies, follows progress, cancels, supplements and rates."""

from __future__ import annotations

import re

import pytest

from accounts.models import Message
from services.models import Application, OutboxEvent, TimelineEntry
from tests.accounts.factories import CitizenFactory
from tests.conftest import client_for
from tests.services.conftest import GOOD_FORM, submit

pytestmark = pytest.mark.django_db

URL = "/api/v1/applications/"


def move(application: Application, *statuses: str) -> Application:
    """Put an application where a story needs it, the way the department would."""
    from accounts.api_keys import api_key_create
    from services.applications import application_department_update

    key, _raw = api_key_create(department=application.department, scope="integrator")
    for status in statuses:
        application = application_department_update(
            application=application, status=status, api_key=key
        )
    return application


def test_a_free_service_application_is_submitted_at_once(citizen_api, service) -> None:
    response = submit(citizen_api)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) >= {
        "id",
        "number",
        "service",
        "status",
        "form",
        "created_at",
        "due_date",
        "timeline",
    }
    assert body["service"] == "sbk-apply"
    assert body["status"] == "submitted"
    assert body["form"] == GOOD_FORM
    assert body["due_date"] is None
    assert re.fullmatch(r"CS\d{8}\d{6,}", body["number"])
    assert [(t["status"], t["actor"]) for t in body["timeline"]] == [("submitted", "citizen")]
    assert body["created_at"].endswith("+08:00")


def test_submitting_writes_the_event_for_the_department_in_the_same_transaction(
    citizen_api, service
) -> None:
    body = submit(citizen_api).json()
    event = OutboxEvent.objects.get(type="application.submitted")
    assert str(event.application_id) == body["id"]
    assert event.department == service.department
    assert event.data["application"]["number"] == body["number"]
    assert event.data["application"]["applicant"]["sub"]


def test_a_service_with_a_fee_waits_for_payment(citizen_api, paid_service) -> None:
    body = submit(
        citizen_api, "id-card-renew", {"reason": "有效期满", "phone": "13800138000"}
    ).json()
    assert body["status"] == "awaiting_payment"
    assert body["fee_fen"] == 2000 and body["currency"] == "CNY"
    assert not OutboxEvent.objects.filter(type="application.submitted").exists()


def test_numbers_are_unique_and_readable(citizen_api, service) -> None:
    numbers = {submit(citizen_api).json()["number"] for _ in range(5)}
    assert len(numbers) == 5


def test_form_errors_are_reported_per_field(citizen_api, service) -> None:
    response = submit(citizen_api, form={"reason": "x", "phone": "123", "copies": 9, "extra": 1})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "form_invalid"
    assert set(body["errors"]) == {"form.reason", "form.phone", "form.copies", "form"}
    missing = submit(citizen_api, form={}).json()["errors"]
    assert missing == {"form.reason": ["此项为必填项"], "form.phone": ["此项为必填项"]}
    assert not Application.objects.exists()


def test_form_errors_speak_english_too(citizen_api, service) -> None:
    response = submit(citizen_api, form={}, HTTP_ACCEPT_LANGUAGE="en")
    assert response.json()["errors"]["form.reason"] == ["This field is required"]


@pytest.mark.parametrize("form", [[], "text", 12, None])
def test_a_form_that_is_not_an_object_is_a_field_error(citizen_api, service, form) -> None:
    response = citizen_api.post(URL, {"service": "sbk-apply", "form": form}, format="json")
    assert response.status_code == 400
    assert "form" in response.json()["errors"]


def test_a_citizen_below_the_services_identity_level_is_refused(new_citizen, service) -> None:
    response = submit(client_for(new_citizen))
    assert response.status_code == 403
    assert response.json()["code"] == "identity_level_too_low"


def test_an_unknown_or_offline_service_is_a_field_error(citizen_api, service) -> None:
    assert "service" in submit(citizen_api, "nope").json()["errors"]
    service.is_active = False
    service.save()
    assert "service" in submit(citizen_api).json()["errors"]


@pytest.mark.parametrize("channels", [["hall"], ["hall", "mail"]])
def test_a_service_not_handled_online_takes_no_application(citizen_api, service, channels) -> None:
    # Its guide sends citizens to a hall (or the post): an application made
    # here (and, with a fee, paid here) would reach a department that does
    # not take it online.
    service.channels = channels
    service.fee_fen = 12000
    service.save()
    response = submit(citizen_api)
    assert response.status_code == 409
    problem = response.json()
    assert problem["code"] == "service_not_online"
    assert not Application.objects.exists()


def test_the_same_idempotency_key_and_body_give_the_first_answer_again(
    citizen_api, service
) -> None:
    first = submit(citizen_api, HTTP_IDEMPOTENCY_KEY="k-1")
    again = submit(citizen_api, HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Application.objects.count() == 1


def test_the_same_key_with_another_body_is_refused(citizen_api, service) -> None:
    submit(citizen_api, HTTP_IDEMPOTENCY_KEY="k-1")
    response = submit(
        citizen_api, form={**GOOD_FORM, "reason": "换一个理由"}, HTTP_IDEMPOTENCY_KEY="k-1"
    )
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert Application.objects.count() == 1


def test_idempotency_keys_belong_to_their_caller(citizen_api, other_citizen_api, service) -> None:
    submit(citizen_api, HTTP_IDEMPOTENCY_KEY="shared")
    assert submit(other_citizen_api, HTTP_IDEMPOTENCY_KEY="shared").status_code == 201
    assert Application.objects.count() == 2


def test_a_key_expires_after_a_day(citizen_api, service) -> None:
    import datetime as dt

    from accounts.models import IdempotencyRecord

    submit(citizen_api, HTTP_IDEMPOTENCY_KEY="k-1")
    IdempotencyRecord.objects.update(created_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    assert "Idempotent-Replayed" not in submit(citizen_api, HTTP_IDEMPOTENCY_KEY="k-1")
    assert Application.objects.count() == 2


def test_a_failed_request_is_not_remembered_under_its_key(citizen_api, service) -> None:
    assert submit(citizen_api, form={}, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 400
    assert submit(citizen_api, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 201


@pytest.mark.parametrize("key", ["x" * 300, "k-1\n", "\nk-1", "k 1"])
def test_a_malformed_idempotency_key_is_a_400(citizen_api, service, key) -> None:
    response = submit(citizen_api, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_invalid"
    assert not Application.objects.exists()


def test_citizen_lists_only_their_own_applications(citizen_api, other_citizen_api, service) -> None:
    mine = submit(citizen_api).json()["id"]
    submit(other_citizen_api)
    listed = citizen_api.get(URL).json()
    assert [a["id"] for a in listed["results"]] == [mine]
    assert set(listed) == {"results", "next", "previous"}


def test_citizen_cannot_read_another_citizens_application(
    citizen_api, other_citizen_api, service
) -> None:
    theirs = submit(other_citizen_api).json()["id"]
    for path in ("", "cancel/", "supplement/", "rating/"):
        method = citizen_api.get if not path else citizen_api.post
        response = (
            method(f"{URL}{theirs}/{path}", {}, format="json")
            if path
            else method(f"{URL}{theirs}/")
        )
        assert response.status_code == 404, path
    assert Application.objects.get(pk=theirs).status == "submitted"


def test_the_list_is_flat_in_queries(
    citizen, citizen_api, service, django_assert_max_num_queries
) -> None:
    from services.applications import application_submit

    for _ in range(30):
        application_submit(citizen=citizen, service=service, form=GOOD_FORM)
    with django_assert_max_num_queries(3):
        response = citizen_api.get(URL, {"page_size": 30})
    assert len(response.json()["results"]) == 30


def test_citizen_cancels_before_acceptance_and_the_department_is_told(citizen_api, service) -> None:
    body = submit(citizen_api).json()
    response = citizen_api.post(f"{URL}{body['id']}/cancel/", {"reason": "不需要了"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["timeline"][-1]["note"] == "不需要了"
    event = OutboxEvent.objects.get(type="application.cancelled")
    assert event.department == service.department


def test_a_cancelled_unpaid_application_is_not_news_to_the_department(
    citizen_api, paid_service
) -> None:
    body = submit(citizen_api, "id-card-renew").json()
    citizen_api.post(f"{URL}{body['id']}/cancel/", {}, format="json")
    event = OutboxEvent.objects.get(type="application.cancelled")
    assert event.department is None
    assert not event.deliveries.exists()


def test_an_accepted_application_cannot_be_cancelled(citizen_api, service) -> None:
    body = submit(citizen_api).json()
    move(Application.objects.get(pk=body["id"]), "accepted")
    response = citizen_api.post(f"{URL}{body['id']}/cancel/", {}, format="json")
    assert response.status_code == 409
    problem = response.json()
    assert problem["code"] == "invalid_transition"
    # RFC 9457's status is the HTTP status; the application's is its own member.
    assert problem["status"] == 409
    assert problem["current_status"] == "accepted"


def test_supplement_answers_needs_info(citizen_api, service) -> None:
    body = submit(citizen_api).json()
    move(Application.objects.get(pk=body["id"]), "accepted", "needs_info")
    response = citizen_api.post(
        f"{URL}{body['id']}/supplement/", {"form": {"copies": 2}}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "accepted"
    assert response.json()["form"] == {**GOOD_FORM, "copies": 2}
    event = OutboxEvent.objects.get(type="application.supplemented")
    assert event.data["supplement"] == {"copies": 2}
    assert event.data["application"]["form"]["copies"] == 2


def test_a_supplement_is_checked_against_the_form(citizen_api, service) -> None:
    body = submit(citizen_api).json()
    move(Application.objects.get(pk=body["id"]), "accepted", "needs_info")
    response = citizen_api.post(
        f"{URL}{body['id']}/supplement/", {"form": {"copies": 99}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "form_invalid"
    assert Application.objects.get(pk=body["id"]).status == "needs_info"


def test_an_empty_supplement_is_refused_and_the_application_waits(citizen_api, service) -> None:
    # {} would end needs_info, start the clock again and tell the department
    # it was supplemented, without a single answer.
    body = submit(citizen_api).json()
    move(Application.objects.get(pk=body["id"]), "accepted", "needs_info")
    response = citizen_api.post(f"{URL}{body['id']}/supplement/", {"form": {}}, format="json")
    assert response.status_code == 400
    problem = response.json()
    assert problem["code"] == "form_invalid"
    assert list(problem["errors"]) == ["form"]
    assert Application.objects.get(pk=body["id"]).status == "needs_info"
    assert not OutboxEvent.objects.filter(type="application.supplemented").exists()


def test_supplement_outside_needs_info_is_a_conflict(citizen_api, service) -> None:
    body = submit(citizen_api).json()
    response = citizen_api.post(f"{URL}{body['id']}/supplement/", {"form": {}}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"


@pytest.mark.parametrize("end", ["completed", "rejected"])
def test_citizen_rates_once_after_the_end(citizen_api, service, end) -> None:
    body = submit(citizen_api).json()
    application = Application.objects.get(pk=body["id"])
    too_early = citizen_api.post(f"{URL}{body['id']}/rating/", {"score": 5}, format="json")
    assert too_early.status_code == 409 and too_early.json()["code"] == "rating_not_allowed"
    move(application, "accepted", end)
    response = citizen_api.post(
        f"{URL}{body['id']}/rating/", {"score": 4, "comment": "很快"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["rating"]["score"] == 4
    twice = citizen_api.post(f"{URL}{body['id']}/rating/", {"score": 1}, format="json")
    assert twice.status_code == 409 and twice.json()["code"] == "rating_not_allowed"


@pytest.mark.parametrize("score", [0, 6, "five", None])
def test_a_score_is_one_to_five(citizen_api, service, score) -> None:
    body = submit(citizen_api).json()
    response = citizen_api.post(f"{URL}{body['id']}/rating/", {"score": score}, format="json")
    assert response.status_code == 400


def test_every_status_change_reaches_the_citizens_inbox(citizen, citizen_api, service) -> None:
    body = submit(citizen_api).json()
    move(Application.objects.get(pk=body["id"]), "accepted", "completed")
    kinds = list(
        Message.objects.filter(user=citizen)
        .order_by("created_at")
        .values_list("data__status", flat=True)
    )
    assert kinds == ["submitted", "accepted", "completed"]
    inbox = citizen_api.get("/api/v1/me/messages/", HTTP_ACCEPT_LANGUAGE="en").json()["results"]
    assert inbox[0]["title"] == "Application progress: Completed"


def test_timeline_is_oldest_first_with_who_and_when(citizen_api, service) -> None:
    body = submit(citizen_api).json()
    move(Application.objects.get(pk=body["id"]), "accepted", "needs_info")
    timeline = citizen_api.get(f"{URL}{body['id']}/").json()["timeline"]
    assert [(t["status"], t["actor"]) for t in timeline] == [
        ("submitted", "citizen"),
        ("accepted", "department"),
        ("needs_info", "department"),
    ]
    assert timeline[0]["at"] <= timeline[1]["at"] <= timeline[2]["at"]


def test_a_citizens_steps_are_labelled_by_the_masked_phone_never_a_username(
    citizen, service
) -> None:
    """An account with a username (staff who also log in by SMS code) is
    not named by it on the timeline operators read; one longer than the
    label's column was a 500 on PostgreSQL."""
    citizen.username = "ops-" + "x" * 140
    citizen.save(update_fields=["username"])
    api = client_for(citizen)
    body = submit(api).json()
    cancelled = api.post(f"{URL}{body['id']}/cancel/", {}, format="json")
    assert cancelled.status_code == 200, cancelled.json()
    labels = list(
        TimelineEntry.objects.filter(application_id=body["id"])
        .order_by("at", "pk")
        .values_list("actor_label", flat=True)
    )
    assert labels == [citizen.phone_masked, citizen.phone_masked]  # in the admin and the export


def test_forms_are_encrypted_at_rest(citizen_api, service) -> None:
    from django.db import connection

    body = submit(citizen_api).json()
    with connection.cursor() as cursor:
        cursor.execute("SELECT form FROM services_application")
        [(raw,)] = cursor.fetchall()
    assert "13800138000" not in raw and raw.startswith("gAAAA")
    assert Application.objects.get(pk=body["id"]).form == GOOD_FORM


def test_another_citizen_sees_nothing_in_lists_even_with_many_applications(service) -> None:
    from services.applications import application_submit

    owner = CitizenFactory(verified=True)
    for _ in range(3):
        application_submit(citizen=owner, service=service, form=GOOD_FORM)
    stranger = client_for(CitizenFactory(verified=True))
    assert stranger.get(URL).json()["results"] == []


def test_a_service_hidden_by_its_category_cannot_be_applied_for(citizen_api, service) -> None:
    service.category.is_active = False
    service.category.save()
    response = submit(citizen_api)
    assert response.status_code == 400
    assert "service" in response.json()["errors"]


def test_submitting_takes_a_fixed_number_of_statements(
    citizen_api, service, django_assert_max_num_queries
) -> None:
    """Submit (a free service, no endpoint registered): the same statements
    for the first application and the next ones, savepoints included. On
    PostgreSQL: the citizen, the service, the number, the endpoints, and
    one statement that holds the account open and writes the application,
    its timeline, the message and the event; elsewhere the account is asked
    for first and each table's rows take a statement."""
    from django.db import connection

    most = 7 if connection.vendor == "postgresql" else 11
    counts = []
    for _ in range(3):
        with django_assert_max_num_queries(most) as captured:
            assert submit(citizen_api).status_code == 201
        counts.append(len(captured.captured_queries))
    assert len(set(counts)) == 1


def test_a_submit_with_its_idempotency_key_takes_five_statements_more(
    citizen_api, service, django_assert_max_num_queries
) -> None:
    """As the apps send it (docs/mobile.md): the key looked up, then in the
    transaction that writes the application the record inserted and its
    answer stored, the submit's own transaction a savepoint within. An
    expired record is not looked for on every request."""
    from django.db import connection

    most = (7 if connection.vendor == "postgresql" else 11) + 5
    counts = []
    for number in range(3):
        with django_assert_max_num_queries(most) as captured:
            assert submit(citizen_api, HTTP_IDEMPOTENCY_KEY=f"k-{number}").status_code == 201
        counts.append(len(captured.captured_queries))
    assert len(set(counts)) == 1


def test_the_platforms_notes_on_the_timeline_speak_the_readers_language(
    citizen_api, integrator_api, service
) -> None:
    """A supplement sent in English left "Information supplied" on the
    timeline for the (Chinese) department, and a note written by a worker
    stayed in the worker's language for every reader."""
    from django.utils import translation

    from services.applications import applications_mark_routed

    body = submit(citizen_api).json()
    with translation.override("en"):  # a worker speaking English
        applications_mark_routed([(body["id"], "")])
    move(Application.objects.get(pk=body["id"]), "accepted", "needs_info")
    supplied = citizen_api.post(
        f"{URL}{body['id']}/supplement/",
        {"form": {"copies": 2}},
        format="json",
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert supplied.status_code == 200, supplied.json()

    def notes(response) -> list[str]:
        return [entry["note"] for entry in response.json()["timeline"] if entry["note"]]

    assert notes(supplied) == ["Delivered to the department", "Information supplied"]
    department = integrator_api.get(f"/api/v1/dept/applications/{body['number']}/")
    assert notes(department) == ["已送达办理部门", "已补正"]
    assert notes(citizen_api.get(f"{URL}{body['id']}/")) == ["已送达办理部门", "已补正"]
    english = citizen_api.get(f"{URL}{body['id']}/", HTTP_ACCEPT_LANGUAGE="en")
    assert notes(english) == ["Delivered to the department", "Information supplied"]


def test_notes_people_write_are_shown_as_written(citizen_api, service) -> None:
    body = submit(citizen_api).json()
    cancelled = citizen_api.post(
        f"{URL}{body['id']}/cancel/", {"reason": "已补正"}, format="json", HTTP_ACCEPT_LANGUAGE="en"
    )
    assert cancelled.json()["timeline"][-1]["note"] == "已补正"

"""A citizen closes their account: the application records stay, pseudonymous;
what was stored for departments no longer names them, and a department's
replay sends the pseudonymous subject only."""

from __future__ import annotations

import json

import pytest

from accounts.models import User
from services.models import Application, Delivery, DeliveryAttempt, OutboxEvent, TimelineEntry
from services.routing import events
from tests.concurrency import close_meanwhile, pause_in
from tests.services.conftest import submit
from tests.services.department import Answer

pytestmark = pytest.mark.django_db

ME = "/api/v1/me/"
DEPT = "/api/v1/dept/applications/"


def personal_data(citizen: User) -> list[str]:
    """What must not leave once the account is closed (the fixture object
    keeps the values the database no longer has)."""
    return [citizen.real_name, citizen.id_number, citizen.phone]


def assert_names_nobody(text: str, citizen: User) -> None:
    for value in personal_data(citizen):
        assert value not in text


def test_a_replay_after_the_account_closed_carries_the_subject_only(
    citizen,
    citizen_api,
    integrator_api,
    apply,
    hook,
    department_server,
    django_capture_on_commit_callbacks,
) -> None:
    body = apply()
    [first] = department_server.received
    assert first.verified(hook.secret_shown)["data"]["application"]["applicant"]["name"] == "张三丰"
    delivery = Delivery.objects.get()
    assert delivery.status == "succeeded"

    assert citizen_api.delete(ME).status_code == 204
    with django_capture_on_commit_callbacks(execute=True):
        response = integrator_api.post(f"/api/v1/dept/deliveries/{delivery.id}/retry/")
    assert response.status_code == 202

    replay = department_server.received[1]
    payload = replay.verified(hook.secret_shown)
    assert replay.headers["webhook-id"] == first.headers["webhook-id"]
    assert payload["type"] == "application.submitted"
    application = payload["data"]["application"]
    assert application["applicant"] == {"sub": citizen.subject}
    assert application["number"] == body["number"]
    assert application["status"] == "submitted"
    assert application["form"] == {}
    assert_names_nobody(replay.body.decode(), citizen)
    stored = OutboxEvent.objects.get()
    assert stored.webhook_id == first.headers["webhook-id"]
    assert_names_nobody(json.dumps(stored.data, ensure_ascii=False), citizen)


def test_closing_strips_every_stored_event_of_the_citizen_and_no_one_elses(
    citizen,
    citizen_api,
    other_citizen,
    other_citizen_api,
    integrator_api,
    apply,
    hook,
    django_capture_on_commit_callbacks,
) -> None:
    capture = django_capture_on_commit_callbacks
    supplemented = apply()
    for status in ("accepted", "needs_info"):
        integrator_api.post(
            f"{DEPT}{supplemented['number']}/status/", {"status": status}, format="json"
        )
    with capture(execute=True):
        citizen_api.post(
            f"/api/v1/applications/{supplemented['id']}/supplement/",
            {"form": {"phone": "13800138000", "copies": 2}},
            format="json",
        )
    cancelled = apply()
    with capture(execute=True):
        citizen_api.post(
            f"/api/v1/applications/{cancelled['id']}/cancel/",
            {"reason": "张三丰换了电话 13800138000"},
            format="json",
        )
    theirs = apply(other_citizen_api)
    mine = OutboxEvent.objects.filter(application__applicant=citizen)
    before = {event.id: event.type for event in mine}
    assert sorted(before.values()) == [
        "application.cancelled",
        "application.submitted",
        "application.submitted",
        "application.supplemented",
    ]

    assert citizen_api.delete(ME).status_code == 204

    after = {event.id: event for event in mine.all()}
    assert {i: e.type for i, e in after.items()} == before  # same events, same webhook-ids
    for event in after.values():
        assert_names_nobody(json.dumps(event.data, ensure_ascii=False), citizen)
        assert event.data["application"]["applicant"] == {"sub": citizen.subject}
    [other] = OutboxEvent.objects.filter(application__number=theirs["number"])
    assert other.data["application"]["applicant"]["name"] == "李四"
    assert other.data["application"]["applicant"]["id_number"] == other_citizen.id_number


def test_the_department_keeps_the_case_under_the_subject_and_can_finish_it(
    citizen, citizen_api, integrator_api, apply, hook
) -> None:
    body = apply()
    integrator_api.post(
        f"{DEPT}{body['number']}/status/",
        {"status": "accepted", "note": "已受理", "reference": "HRSS-1"},
        format="json",
    )
    assert citizen_api.delete(ME).status_code == 204

    seen = integrator_api.get(f"{DEPT}{body['number']}/").json()
    assert seen["applicant"] == {"sub": citizen.subject}
    assert seen["form"] == {}
    assert seen["status"] == "accepted" and seen["reference"] == "HRSS-1"
    assert [s["status"] for s in seen["timeline"]] == ["submitted", "routed", "accepted"]
    assert seen["timeline"][-1]["note"] == "已受理"  # the department's own note stays
    listed = integrator_api.get(DEPT).json()["results"]
    assert [a["applicant"] for a in listed] == [{"sub": citizen.subject}]
    done = integrator_api.post(
        f"{DEPT}{body['number']}/status/", {"status": "completed"}, format="json"
    )
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert_names_nobody(done.content.decode(), citizen)


def test_the_application_record_stays_without_what_the_citizen_wrote(
    citizen, citizen_api, integrator_api, service
) -> None:
    body = submit(citizen_api).json()
    for status in ("accepted", "completed"):
        integrator_api.post(f"{DEPT}{body['number']}/status/", {"status": status}, format="json")
    citizen_api.post(
        f"/api/v1/applications/{body['id']}/rating/",
        {"score": 5, "comment": "张三丰很满意，电话13800138000"},
        format="json",
    )
    assert citizen_api.delete(ME).status_code == 204

    kept = Application.objects.get(pk=body["id"])
    assert kept.number == body["number"] and kept.status == "completed"
    assert kept.applicant_id == citizen.pk
    assert kept.form == {}
    assert kept.rating_score == 5 and kept.rating_comment == ""
    steps = TimelineEntry.objects.filter(application=kept)
    assert [s.status for s in steps] == ["submitted", "accepted", "completed"]
    mine = steps.get(actor="citizen")
    assert mine.actor_label == "" and mine.note == ""  # was the masked phone


# --- The rule, payload by payload ------------------------------------------------------------------


APPLICANT = {
    "sub": "s_1",
    "name": "张三丰",
    "id_number": "430102199003070012",
    "phone": "13800138000",
}
APPLICATION = {"number": "CS1", "status": "submitted", "form": {"phone": "13800138000"}}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"application": {**APPLICATION, "applicant": APPLICANT}},
            {"application": {**APPLICATION, "form": {}, "applicant": {"sub": "s_1"}}},
        ),
        (
            {"application": {**APPLICATION, "applicant": APPLICANT}, "supplement": {"copies": 2}},
            {
                "application": {**APPLICATION, "form": {}, "applicant": {"sub": "s_1"}},
                "supplement": {},
            },
        ),
        (
            {"application": {**APPLICATION, "applicant": APPLICANT}, "reason": "换了电话"},
            {"application": {**APPLICATION, "form": {}, "applicant": {"sub": "s_1"}}, "reason": ""},
        ),
        (
            {"payment": {"order_no": "P1", "application": "CS1", "amount_fen": 2000}},
            {"payment": {"order_no": "P1", "application": "CS1", "amount_fen": 2000}},
        ),
    ],
    ids=["submitted", "supplemented", "cancelled", "payment"],
)
def test_a_pseudonymised_payload_keeps_the_case_and_drops_the_person(data, expected) -> None:
    original = json.dumps(data, sort_keys=True)
    assert events.pseudonymised(data, subject="s_1") == expected
    assert json.dumps(data, sort_keys=True) == original  # the stored dict is not changed in place


# --- A citizen's change racing the close -------------------------------------------------------


def test_an_application_sent_as_the_account_closes_is_not_kept(citizen, service) -> None:
    """The request read the account just before the close committed: no
    application may be stored with the citizen's form, nor their identity
    sent to the department, after their data was erased."""
    from accounts import citizens
    from accounts.errors import AccountsError
    from services import applications
    from tests.services.conftest import GOOD_FORM

    read_before_the_close = User.objects.get(pk=citizen.pk)
    citizens.account_close(user=citizen)
    with pytest.raises(AccountsError) as refused:
        applications.application_submit(
            citizen=read_before_the_close, service=service, form=GOOD_FORM
        )
    assert refused.value.error.code == "account_inactive"
    assert not Application.objects.exists() and not OutboxEvent.objects.exists()


def test_what_a_citizen_writes_as_the_account_closes_is_not_kept(
    citizen, citizen_api, integrator_api, service
) -> None:
    """A supplement, a rating or a cancel reason that reached the
    application after the close erased it does not write it back."""
    from accounts import citizens
    from accounts.errors import AccountsError
    from services import applications

    needs_info = submit(citizen_api).json()
    finished = submit(citizen_api).json()
    waiting = submit(citizen_api).json()
    for number, moves in [
        (needs_info["number"], ("accepted", "needs_info")),
        (finished["number"], ("accepted", "completed")),
    ]:
        for status in moves:
            integrator_api.post(f"{DEPT}{number}/status/", {"status": status}, format="json")
    read_before_the_close = User.objects.get(pk=citizen.pk)
    citizens.account_close(user=citizen)

    def application(body: dict) -> Application:
        return Application.objects.get(pk=body["id"])

    for move, body, values in [
        (applications.application_supplement, needs_info, {"form": {"phone": "13800138000"}}),
        (applications.application_rate, finished, {"score": 1, "comment": "张三丰，13800138000"}),
        (applications.application_cancel, waiting, {"reason": "张三丰，13800138000"}),
    ]:
        with pytest.raises(AccountsError) as refused:
            move(citizen=read_before_the_close, application=application(body), **values)
        assert refused.value.error.code == "account_inactive"
    assert application(needs_info).form == {} and application(needs_info).status == "needs_info"
    assert application(finished).rated_at is None
    assert application(waiting).status == "submitted"
    assert "13800138000" not in str(list(TimelineEntry.objects.values_list("note", flat=True)))


def test_closing_erases_what_departments_answered_with_the_application(
    citizen, citizen_api, other_citizen, other_citizen_api, apply, hook, department_server
) -> None:
    # A department's system that echoes every event back in its answer.
    department_server.respond = lambda received: Answer(body=received.payload)
    apply()
    apply(other_citizen_api)
    mine = DeliveryAttempt.objects.filter(delivery__event__application__applicant=citizen)
    theirs = DeliveryAttempt.objects.filter(delivery__event__application__applicant=other_citizen)
    [echoed] = mine
    assert citizen.id_number in echoed.response_body
    assert other_citizen.id_number in theirs.get().response_body

    assert citizen_api.delete(ME).status_code == 204

    [kept] = mine.all()
    assert kept.response_body == ""
    assert (kept.status_code, kept.succeeded, kept.number) == (200, True, echoed.number)
    assert other_citizen.id_number in theirs.get().response_body


@pytest.mark.integration  # PostgreSQL's row locks, two sessions
@pytest.mark.django_db(transaction=True)
def test_a_close_waits_for_an_application_being_written_then_erases_it(
    citizen, service, monkeypatch
) -> None:
    """The application's transaction holds the account from its start: a
    close that comes meanwhile waits, then erases what it wrote (the form,
    the applicant in the stored event)."""
    from services import applications
    from services.routing.outbox import Publication
    from tests.services.conftest import GOOD_FORM

    # Paused once the application's rows are written, not yet committed.
    paused, release = pause_in(monkeypatch, Publication, "written")
    close_waited = close_meanwhile(
        lambda: applications.application_submit(
            citizen=User.objects.get(pk=citizen.pk), service=service, form=GOOD_FORM
        ),
        paused=paused,
        release=release,
        user_id=citizen.pk,
    )

    assert close_waited
    application = Application.objects.get()
    assert application.form == {}
    stored = OutboxEvent.objects.get()
    assert stored.data["application"]["applicant"] == {"sub": citizen.subject}
    assert_names_nobody(json.dumps(stored.data, ensure_ascii=False), citizen)


@pytest.mark.integration  # PostgreSQL's row locks, two sessions
@pytest.mark.django_db(transaction=True)
def test_a_department_report_and_a_close_at_once_both_go_through(
    citizen, service, integrator_key, monkeypatch
) -> None:
    """The department's report holds the application and, at its commit,
    checks the account its message is for; a close that came meanwhile
    holds the account and waits for the application. Neither may wait on
    the other (PostgreSQL would abort one: the citizen's close or the
    department's report would fail): the report goes through, then the
    close."""
    from services import applications
    from tests.services.conftest import GOOD_FORM

    application = applications.application_submit(citizen=citizen, service=service, form=GOOD_FORM)
    # Paused with the application locked, the report not yet committed.
    paused, release = pause_in(monkeypatch, applications, "messages_post")
    close_waited = close_meanwhile(
        lambda: applications.application_department_update(
            application=application, status="accepted", api_key=integrator_key
        ),
        paused=paused,
        release=release,
        user_id=citizen.pk,
    )

    assert close_waited
    application.refresh_from_db()
    assert application.status == "accepted" and application.form == {}
    assert User.objects.get(pk=citizen.pk).closed_at is not None


@pytest.mark.integration  # PostgreSQL's row locks, two sessions
@pytest.mark.django_db(transaction=True)
def test_a_report_answer_kept_while_the_account_closes_goes_with_it(
    citizen, service, integrator_key, monkeypatch
) -> None:
    """A report sent with an Idempotency-Key holds the application when the
    close comes: the close waits, and the answer the report kept (the
    applicant's identity) is erased with the account's data; the report
    sent again is looked at again, and names nobody."""
    from accounts.models import IdempotencyRecord
    from services import applications
    from tests.conftest import client_with_key
    from tests.services.conftest import GOOD_FORM

    number = applications.application_submit(
        citizen=citizen, service=service, form=GOOD_FORM
    ).number
    url = f"{DEPT}{number}/status/"
    accept = {"status": "accepted", "note": "已受理"}
    answers = []

    def report() -> None:
        department = client_with_key(integrator_key.raw)
        answers.append(department.post(url, accept, format="json", HTTP_IDEMPOTENCY_KEY="k-1"))

    # Paused with the application locked and the answer's record written.
    paused, release = pause_in(monkeypatch, applications, "messages_post")
    assert close_meanwhile(report, paused=paused, release=release, user_id=citizen.pk)

    [first] = answers
    assert first.status_code == 200 and citizen.id_number in first.content.decode()
    assert not IdempotencyRecord.objects.exists()
    again = client_with_key(integrator_key.raw).post(
        url, accept, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    assert again.status_code == 409 and "Idempotent-Replayed" not in again
    assert_names_nobody(again.content.decode(), citizen)


def test_an_answer_that_comes_after_the_close_is_not_kept(
    citizen, apply, hook, department_server, monkeypatch
) -> None:
    """The event was sent before the account closed; the department's
    system echoes it back after: the attempt is recorded, its body not."""
    from accounts.citizens import account_close
    from services.routing import deliveries

    department_server.respond = lambda received: Answer(body=received.payload)
    record = deliveries._record

    def closing_first(outcomes, lease):
        account_close(user=User.objects.get(pk=citizen.pk))
        return record(outcomes, lease)

    monkeypatch.setattr(deliveries, "_record", closing_first)
    apply()

    [attempt] = DeliveryAttempt.objects.all()
    assert attempt.succeeded and attempt.status_code == 200
    assert attempt.response_body == ""
    assert citizen.id_number in department_server.received[0].body.decode()

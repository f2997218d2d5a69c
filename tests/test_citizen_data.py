"""All of a citizen's data, across apps: every model that holds some is
answered for by a registered section (export and erasure), and the export
through the API carries every section, and only the citizen's own."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection, models
from django.test.utils import CaptureQueriesContext, isolate_apps

from accounts import citizen_data
from services.routing import endpoints, events
from tests.qr.conftest import _fresh_qr_memory, issue, recorded_scans, verify  # noqa: F401
from tests.services.conftest import GOOD_FORM, submit

EXPORT = "/api/v1/me/export/"
DEPT = "/api/v1/dept/applications/"

# Models that hold something of a citizen's but belong to no section, each
# with the reason. A new model with a key to the user (or to an
# application, …) must get a section or a line here, or the test below fails.
EXEMPT: dict[str, str] = {
    "admin.logentry": "actions of staff in the admin; citizens have no admin access",
    "token_blacklist.outstandingtoken": (
        "ids and expiry of issued refresh tokens, no personal data: closing revokes "
        "them all, and the rows must outlive the account so a stolen token is refused"
    ),
    "accounts.apikey": "created_by names the staff member who made a department's key",
    "services.deliveryattempt": (
        "one HTTP try of a delivery: status code, latency and the department's answer; "
        "nothing the citizen gave (the payload is the event's, erased with it)"
    ),
}


# Models that hold nothing of a citizen's, each with the reason. Every model
# is a section's, an exemption or one of these: a new model that is none of
# them fails the test below, whatever it is keyed by (a phone, a string).
NO_CITIZEN_DATA: dict[str, str] = {
    "auth.permission": "the permission catalogue",
    "auth.group": "groups of staff permissions",
    "contenttypes.contenttype": "the model catalogue",
    "sessions.session": "admin sessions of staff; citizens use tokens, never sessions",
    "axes.accessfailurelog": "failed admin log-ins (usernames, addresses): staff only",
    "axes.accessattempt": "admin log-in attempts: staff only",
    "axes.accessattemptexpiration": "expiry of admin log-in lock-outs",
    "axes.accesslog": "admin log-ins: staff only",
    "token_blacklist.blacklistedtoken": "revocation marks on refresh token ids",
    "django_celery_beat.solarschedule": "schedules of periodic tasks",
    "django_celery_beat.intervalschedule": "schedules of periodic tasks",
    "django_celery_beat.clockedschedule": "schedules of periodic tasks",
    "django_celery_beat.crontabschedule": "schedules of periodic tasks",
    "django_celery_beat.periodictasks": "the periodic tasks' change marker",
    "django_celery_beat.periodictask": "periodic tasks",
    "accounts.department": "departments",
    "services.category": "the catalog",
    "services.service": "the catalog",
    "services.holiday": "the working-day calendar",
    "services.applicationserial": "the counter behind application numbers",
    "services.endpoint": "departments' endpoints",
    "qr.signingkey": "star-code signing keys",
    "qr.venuecode": "departments' venue codes",
    "qr.scannerprofile": "what each scanner key may see",
    "qr.scanclaim": "replay claims: a code's id per scanner key, no subject",
    "payments.notifylog": (
        "the channels' callbacks: order numbers, transaction ids and the channels' own "
        "already-masked payer references; no account, name or phone of ours"
    ),
    "payments.reconciliationreport": "daily per-channel reconciliation counts",
    "payments.reconciliationmismatch": "order numbers and amounts that disagree, for staff",
    "payments.sandboxtrade": "the sandbox channel's own books: order numbers and amounts",
    "payments.sandboxrefund": "the sandbox channel's own refunds",
}


# Models of a section that exports them but has no erase hook: the rows stay
# as they are when the account closes, each for the reason given. A section
# without an erase hook must name its models here.
KEPT_ON_CLOSE: dict[str, str] = {
    "accounts.auditentry": (
        "the append-only audit trail (who did what to an account must outlive it); "
        "it names the citizen by the account's opaque id and, for their own actions, "
        "the masked phone of the time; exported as the audit_trail section"
    ),
    "payments.paymentorder": "the city's financial record, pointing at the pseudonymous account",
    "payments.refund": "the city's financial record, pointing at the pseudonymous account",
    "payments.ledgerentry": "the city's financial record, pointing at the pseudonymous account",
}


def test_rows_a_closing_keeps_are_named_with_the_reason() -> None:
    kept = {
        m._meta.label_lower
        for section in citizen_data.sections()
        if section.erase is None
        for m in section.models
    }
    assert kept == set(KEPT_ON_CLOSE)
    assert all(reason.strip() for reason in KEPT_ON_CLOSE.values())


def test_every_model_is_a_sections_an_exemption_or_holds_no_citizen_data() -> None:
    classified = (
        {m._meta.label_lower for m in citizen_data.covered_models()}
        | set(EXEMPT)
        | set(NO_CITIZEN_DATA)
    )
    unclassified = sorted(m._meta.label_lower for m in apps.get_models())
    unclassified = [label for label in unclassified if label not in classified]
    assert unclassified == [], (
        "say for each whether it holds a citizen's data: register a section, or add it "
        "to EXEMPT or NO_CITIZEN_DATA with the reason"
    )
    assert not set(NO_CITIZEN_DATA) & set(EXEMPT)
    assert all(reason.strip() for reason in NO_CITIZEN_DATA.values())


def exempt_models() -> set[type[models.Model]]:
    return {apps.get_model(label) for label in EXEMPT}


# --- Every model is answered for ------------------------------------------------------------


def test_every_model_holding_a_citizens_data_belongs_to_a_section() -> None:
    missing = citizen_data.uncovered_models(
        apps.get_models(),
        user_model=get_user_model(),
        covered=citizen_data.covered_models(),
        exempt=exempt_models(),
    )
    assert missing == set(), (
        f"register a citizen data section for {sorted(m._meta.label for m in missing)} "
        "(accounts/citizen_data.py), or exempt it here with the reason"
    )


def test_exemptions_name_only_models_that_hold_citizen_data_and_say_why() -> None:
    holding = citizen_data.models_holding_citizen_data(
        apps.get_models(), user_model=get_user_model(), exempt=exempt_models()
    )
    stale = exempt_models() - holding
    assert stale == set(), f"{stale} no longer hold citizen data: drop their exemptions"
    assert all(reason.strip() for reason in EXEMPT.values())
    assert not exempt_models() & citizen_data.covered_models()


def test_what_the_check_finds_today() -> None:
    """The rule in action on the real models: direct keys, keys through an
    application, and the pseudonymous subject of star-code scans."""
    holding = citizen_data.models_holding_citizen_data(
        apps.get_models(), user_model=get_user_model(), exempt=exempt_models()
    )
    labels = {m._meta.label_lower for m in holding}
    assert {
        "accounts.user",
        "accounts.message",
        "services.application",
        "services.timelineentry",
        "services.outboxevent",
        "services.delivery",
        "qr.scanevent",
    } <= labels
    # An exempt model passes nothing on: scans point at a staff-made API key,
    # venue codes at a catalog service; neither is thereby a citizen's.
    assert "qr.scannerprofile" not in labels and "qr.venuecode" not in labels


@isolate_apps("tests")
def test_a_new_model_with_a_key_to_the_user_and_no_section_fails_the_check() -> None:
    user_model = get_user_model()

    class Parcel(models.Model):  # noqa: DJ008  (throwaway model)
        owner = models.ForeignKey(user_model, on_delete=models.CASCADE, related_name="+")

        class Meta:
            app_label = "tests"

    class ParcelLabel(models.Model):  # noqa: DJ008  (throwaway model)
        parcel = models.OneToOneField(Parcel, on_delete=models.CASCADE)

        class Meta:
            app_label = "tests"

    class Visit(models.Model):  # noqa: DJ008  (throwaway model)
        subject = models.CharField(max_length=32)

        class Meta:
            app_label = "tests"

    class Weather(models.Model):  # noqa: DJ008  (throwaway model)
        city = models.CharField(max_length=32)

        class Meta:
            app_label = "tests"

    candidates = [*apps.get_models(), Parcel, ParcelLabel, Visit, Weather]
    covered = citizen_data.covered_models()
    found = citizen_data.uncovered_models(
        candidates, user_model=user_model, covered=covered, exempt=exempt_models()
    )
    assert found == {Parcel, ParcelLabel, Visit}
    # A section for the parcels answers for them; their labels still need one.
    found = citizen_data.uncovered_models(
        candidates, user_model=user_model, covered=covered | {Parcel}, exempt=exempt_models()
    )
    assert found == {ParcelLabel, Visit}


# --- The registry ----------------------------------------------------------------------------


@pytest.fixture
def empty_registry(monkeypatch):
    monkeypatch.setattr(citizen_data, "_sections", {})


def test_a_section_is_one_call_and_names_are_unique(empty_registry) -> None:
    def export(user):
        return []

    citizen_data.register("parcels", export=export, erase=None)
    citizen_data.register("parcels", export=export, erase=None)  # ready() running twice
    with pytest.raises(ValueError, match="parcels"):
        citizen_data.register("parcels", export=lambda user: {}, erase=None)
    assert [s.name for s in citizen_data.sections()] == ["parcels"]


def test_erase_hooks_run_higher_apps_first_and_export_skips_erase_only_sections(
    empty_registry,
) -> None:
    calls = []
    citizen_data.register(
        "profile", export=lambda user: {"id": user}, erase=lambda user: calls.append("profile")
    )
    citizen_data.register("cache", export=None, erase=lambda user: calls.append("cache"))
    citizen_data.register("orders", export=lambda user: [1], erase=None)
    citizen_data.erase("someone")  # type: ignore[arg-type]  # the hooks only pass it on
    assert calls == ["cache", "profile"]
    assert citizen_data.export("someone") == {"profile": {"id": "someone"}, "orders": [1]}  # type: ignore[arg-type]  # the hooks only pass it on


# --- The export through the API ------------------------------------------------------------------


@pytest.fixture
def endpoint(department):
    endpoint, _secret = endpoints.endpoint_create(
        department=department,
        url="http://127.0.0.1:9/events",  # never reached: nudges run after commit
        events=[events.APPLICATION_SUBMITTED],
        actor=None,
    )
    return endpoint


def busy_life(client, integrator_api, scanner_api) -> dict:
    """Apply, have it handled and rated, get messages, have the code scanned."""
    body = submit(client).json()
    for status in ("accepted", "completed"):
        answer = integrator_api.post(
            f"{DEPT}{body['number']}/status/", {"status": status, "note": "办结"}, format="json"
        )
        assert answer.status_code == 200, answer.json()
    rated = client.post(
        f"/api/v1/applications/{body['id']}/rating/",
        {"score": 4, "comment": "很快"},
        format="json",
    )
    assert rated.status_code == 200, rated.json()
    verify(scanner_api, issue(client)["code"])
    return body


@pytest.mark.django_db
def test_the_export_holds_every_section_of_the_citizens_data_and_no_one_elses(
    citizen,
    citizen_api,
    other_citizen,
    other_citizen_api,
    integrator_api,
    scanner_api,
    service,
    endpoint,
    department,
    django_assert_max_num_queries,
) -> None:
    mine = busy_life(citizen_api, integrator_api, scanner_api)
    theirs = busy_life(other_citizen_api, integrator_api, scanner_api)
    recorded_scans()

    with django_assert_max_num_queries(10):  # one per section, and the account
        response = citizen_api.get(EXPORT)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {s.name for s in citizen_data.sections() if s.export is not None}
    assert {"profile", "messages", "applications", "star_code_scans", "audit_trail"} <= set(body)

    assert body["profile"]["id_number"] == citizen.id_number  # unmasked: it is theirs
    assert body["profile"]["subject"] == citizen.subject

    [application] = body["applications"]
    assert application["number"] == mine["number"]
    assert application["form"] == GOOD_FORM
    assert application["service"] == {"code": "sbk-apply", "name": "社会保障卡申领"}
    assert application["department"]["code"] == department.code
    assert [s["status"] for s in application["timeline"]] == ["submitted", "accepted", "completed"]
    assert application["timeline"][-1]["note"] == "办结"
    assert application["rating"]["score"] == 4 and application["rating"]["comment"] == "很快"
    [sent] = application["events_sent"]
    assert sent["type"] == "application.submitted" and sent["department"] == department.code
    assert [d["status"] for d in sent["deliveries"]] == ["pending"]

    kinds = [m["kind"] for m in body["messages"]]
    assert kinds == ["application.submitted", "application.status", "application.status"]
    assert all(mine["number"] in m["data"]["number"] for m in body["messages"])

    [scan] = body["star_code_scans"]
    assert scan["valid"] is True and scan["scanned_at"].endswith("+08:00")

    text = response.content.decode()
    assert theirs["number"] not in text
    assert other_citizen.id_number not in text and "李四" not in text


@pytest.mark.django_db
def test_the_export_takes_as_many_queries_for_many_applications_as_for_one(
    citizen_api, integrator_api, scanner_api, service, endpoint
) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert citizen_api.get(EXPORT).status_code == 200
        return len(captured)

    busy_life(citizen_api, integrator_api, scanner_api)
    recorded_scans()
    one = queries()
    for _ in range(3):
        busy_life(citizen_api, integrator_api, scanner_api)
    recorded_scans()
    assert len(citizen_api.get(EXPORT).json()["applications"]) == 4
    assert queries() == one

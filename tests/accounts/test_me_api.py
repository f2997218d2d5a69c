"""The citizen's own account: profile, export, closing."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.inbox import message_post
from accounts.models import AuditEntry, Message, User
from tests.accounts.factories import StaffFactory
from tests.accounts.helpers import log_in

pytestmark = pytest.mark.django_db

ME = "/api/v1/me/"


def test_profile_masks_phone_name_and_id_number(citizen_api, citizen) -> None:
    response = citizen_api.get(ME)
    assert response.status_code == 200
    body = response.json()
    assert body["phone"] == "138****8000"
    assert body["real_name"] == "张**"
    assert body["id_number"] == f"{citizen.id_number[:6]}********{citizen.id_number[14:]}"
    assert body["identity_level"] == 2
    text = response.content.decode()
    assert citizen.id_number not in text and "13800138000" not in text and "张三丰" not in text
    assert response["Cache-Control"] == "no-store"


def test_citizen_changes_nickname_and_email(citizen_api) -> None:
    response = citizen_api.patch(
        ME, {"nickname": "小张", "email": "zhang@example.org"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["nickname"] == "小张"
    assert citizen_api.get(ME).json()["email"] == "zhang@example.org"


def test_identity_fields_cannot_be_patched(citizen_api, citizen) -> None:
    citizen_api.patch(
        ME, {"identity_level": 9, "phone": "13900000000", "id_number": "x"}, format="json"
    )
    citizen.refresh_from_db()
    assert citizen.identity_level == 2
    assert citizen.phone == "13800138000"


def test_a_bad_email_is_a_field_error(citizen_api) -> None:
    response = citizen_api.patch(ME, {"email": "not-an-email"}, format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["email"]


def test_an_email_longer_than_its_column_is_a_field_error(citizen_api, citizen) -> None:
    """A valid address may run to 320 characters; the column holds 254
    (PostgreSQL refused the row: a 500)."""
    email = "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".org"
    assert len(email) > 254
    response = citizen_api.patch(ME, {"email": email}, format="json")
    assert response.status_code == 400, response.json()
    assert list(response.json()["errors"]) == ["email"]
    citizen.refresh_from_db()
    assert citizen.email != email


def test_a_profile_change_racing_the_close_writes_nothing_back(citizen) -> None:
    """The request read the account before the close committed; its change
    must not put a nickname or an e-mail back on the erased account."""
    from accounts import citizens
    from accounts.errors import AccountsError

    read_before_the_close = User.objects.get(pk=citizen.pk)
    citizens.account_close(user=citizen)
    with pytest.raises(AccountsError) as refused:
        citizens.profile_update(
            user=read_before_the_close, nickname="小张", email="zhang@example.org"
        )
    assert refused.value.error.code == "account_inactive"
    closed = User.objects.get(pk=citizen.pk)
    assert (closed.nickname, closed.email) == ("", "")


def test_export_holds_everything_unmasked(citizen_api, citizen) -> None:
    message_post(user=citizen, kind="test", title="标题", body="正文")
    response = citizen_api.get("/api/v1/me/export/")
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    body = response.json()
    assert body["profile"]["id_number"] == citizen.id_number
    assert body["profile"]["phone"] == "13800138000"
    assert body["profile"]["real_name"] == "张三丰"
    assert [m["title"]["zh-hans"] for m in body["messages"]] == ["标题"]


def test_a_citizen_sees_only_their_own_export(citizen_api, other_citizen) -> None:
    message_post(user=other_citizen, kind="test", title="别人的消息", body="...")
    body = citizen_api.get("/api/v1/me/export/").json()
    assert body["messages"] == []
    assert other_citizen.id_number not in str(body)


def test_closing_erases_personal_data_and_keeps_a_pseudonymous_row(citizen_api, citizen) -> None:
    message_post(user=citizen, kind="test", title="标题", body="正文")
    assert citizen_api.delete(ME).status_code == 204
    closed = User.objects.get(pk=citizen.pk)
    assert closed.phone is None
    assert closed.real_name == "" and closed.id_number == "" and closed.id_number_index is None
    assert not closed.is_active and closed.closed_at is not None
    assert closed.subject == citizen.subject
    assert not Message.objects.filter(user=closed).exists()
    assert AuditEntry.objects.filter(action="account.closed", target_id=str(citizen.pk)).exists()


@pytest.mark.parametrize(
    "powers", [{"is_staff": True}, {"is_superuser": True}], ids=["staff", "superuser"]
)
def test_an_operator_who_logs_in_by_sms_cannot_close_their_account(api, powers) -> None:
    """An operator's account with a phone logs in by SMS code like anyone's,
    but closing it is the superusers' (the admin), not the citizen API's:
    closed, it could never be reinstated."""
    operator = StaffFactory(phone="13600136000", **powers)
    tokens = log_in(api, "13600136000")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")

    response = api.delete(ME)

    assert response.status_code == 403
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["code"] == "account_privileged"
    kept = User.objects.get(pk=operator.pk)
    assert kept.is_active and kept.closed_at is None and kept.phone == "13600136000"
    assert api.get(ME).status_code == 200  # its tokens still work


def test_after_closing_the_phone_opens_a_new_account(api, citizen, citizen_api) -> None:
    citizen_api.delete(ME)
    tokens = log_in(api, "13800138000")
    assert tokens["user"]["id"] != str(citizen.pk)
    assert tokens["user"]["identity_level"] == 1


def test_every_citizen_answer_masks_personal_data(api, citizen, citizen_api) -> None:
    """The full ID number, name and phone appear in no answer but the export."""
    message_post(user=citizen, kind="test", title="标题", body="正文")
    answers = [
        citizen_api.get(ME),
        citizen_api.patch(ME, {"nickname": "n"}, format="json"),
        citizen_api.get("/api/v1/me/messages/"),
        citizen_api.post(
            "/api/v1/me/real-name/",
            {"name": "张三丰", "id_number": citizen.id_number},
            format="json",
        ),
    ]
    api.post("/api/v1/auth/otp/", {"phone": "13800138000"}, format="json")
    from tests.accounts.helpers import last_code_sent_to

    answers.append(
        api.post(
            "/api/v1/auth/token/",
            {"phone": "13800138000", "code": last_code_sent_to("13800138000")},
            format="json",
        )
    )
    for answer in answers:
        text = answer.content.decode()
        assert citizen.id_number not in text
        assert "13800138000" not in text
        assert "张三丰" not in text


def test_closing_forgets_the_stored_answers_to_the_citizens_requests(
    citizen_api, citizen, other_citizen_api
) -> None:
    from accounts.models import IdempotencyRecord
    from tests.services.factories import ServiceFactory

    service = ServiceFactory(identity_level=1)
    for client in (citizen_api, other_citizen_api):
        response = client.post(
            "/api/v1/applications/",
            {"service": service.code, "form": {"reason": "首次申领", "phone": "13800138000"}},
            format="json",
            HTTP_IDEMPOTENCY_KEY="apply-1",
        )
        assert response.status_code == 201
    assert citizen_api.delete(ME).status_code == 204
    assert not IdempotencyRecord.objects.filter(owner=f"user:{citizen.pk}").exists()
    assert IdempotencyRecord.objects.count() == 1  # the other citizen's stays


def test_closing_forgets_the_answers_a_department_kept_about_the_citizen(
    citizen_api, citizen, integrator_api, service
) -> None:
    """A department's status report is answered with the application and
    the applicant's identity, kept 24 h under the department's API key for
    its retries. Once the account is closed, the same report sent again with
    that key finds no answer to repeat: it is looked at again, and refused
    as any report repeated without a key (the application is accepted
    already), naming no erased identity."""
    from tests.services.conftest import submit

    number = submit(citizen_api).json()["number"]
    url = f"/api/v1/dept/applications/{number}/status/"
    accept = {"status": "accepted", "note": "已受理"}
    first = integrator_api.post(url, accept, format="json", HTTP_IDEMPOTENCY_KEY="accept-1")
    assert first.status_code == 200
    assert first.json()["applicant"]["id_number"] == citizen.id_number
    assert citizen_api.delete(ME).status_code == 204

    again = integrator_api.post(url, accept, format="json", HTTP_IDEMPOTENCY_KEY="accept-1")
    text = again.content.decode()
    for erased in (citizen.real_name, citizen.id_number, citizen.phone):
        assert erased not in text
    assert "Idempotent-Replayed" not in again
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_transition"
    assert again.json()["current_status"] == "accepted"
    shown = integrator_api.get(f"/api/v1/dept/applications/{number}/").json()
    assert shown["status"] == "accepted" and shown["applicant"] == {"sub": citizen.subject}


def test_erasing_a_citizens_stored_answers_takes_those_about_them_under_any_key(
    citizen, other_citizen, integrator_key, other_integrator_key
) -> None:
    from accounts.idempotency import idempotency_records_erase
    from accounts.models import IdempotencyRecord

    def kept(owner: str, key: str, concerns: User | None = None) -> None:
        IdempotencyRecord.objects.create(
            owner=owner, key=key, fingerprint="f" * 64, status_code=200, body={}, concerns=concerns
        )

    kept(f"user:{citizen.pk}", "own")
    kept(f"key:{integrator_key.pk}", "report-about-them", concerns=citizen)
    kept(f"key:{other_integrator_key.pk}", "report-about-them", concerns=citizen)
    kept(f"key:{integrator_key.pk}", "report-about-another", concerns=other_citizen)
    kept(f"key:{integrator_key.pk}", "refund")  # about nobody
    kept(f"user:{other_citizen.pk}", "own")

    idempotency_records_erase(citizen)

    assert set(IdempotencyRecord.objects.values_list("owner", "key")) == {
        (f"key:{integrator_key.pk}", "report-about-another"),
        (f"key:{integrator_key.pk}", "refund"),
        (f"user:{other_citizen.pk}", "own"),
    }


def test_export_times_are_shanghai_times(citizen_api) -> None:
    profile = citizen_api.get("/api/v1/me/export/").json()["profile"]
    assert profile["date_joined"].endswith("+08:00")


def test_the_login_codes_sent_to_a_citizen_are_exported_and_go_with_the_account(api) -> None:
    from accounts.models import OtpChallenge
    from tests.accounts.helpers import bearer, log_in

    tokens = log_in(api, "13600136000")
    bearer(api, tokens["access"])
    [code] = api.get("/api/v1/me/export/").json()["login_codes"]
    assert code["close_reason"] == "used" and code["ip"] == "127.0.0.1"
    assert "code" not in code and "code_hash" not in code
    assert api.delete("/api/v1/me/").status_code == 204
    assert not OtpChallenge.objects.filter(phone="13600136000").exists()


def test_the_export_lists_the_audit_trail_about_the_citizen_and_closing_keeps_it(
    new_citizen, other_citizen
) -> None:
    """What the audit trail holds about the citizen (their checks, with their
    address and the bureau's reference; what operators did to the account)
    is in the export; another person's address and name are not. Closing
    keeps the entries: the audit trail is append-only."""
    from accounts import citizens
    from tests.accounts.factories import make_id_number
    from tests.conftest import client_for

    operator = StaffFactory(username="ops-wang", is_superuser=True)
    api = client_for(new_citizen)
    api.defaults["REMOTE_ADDR"] = "198.51.100.23"
    stranger = {"name": "王五", "id_number": make_id_number(999)}  # the sandbox bureau says no
    assert api.post("/api/v1/me/real-name/", stranger, format="json").status_code == 422
    ok = {"name": "王五", "id_number": make_id_number(321)}
    assert api.post("/api/v1/me/real-name/", ok, format="json").status_code == 200
    operator_ip = "203.0.113.77"
    for active in (False, True):
        citizens.user_set_active(user=new_citizen, active=active, actor=operator, ip=operator_ip)
    citizens.pii_reveal(subject=new_citizen, operator=operator, ip=operator_ip)
    citizens.pii_reveal(subject=other_citizen, operator=operator, ip=operator_ip)
    api = client_for(new_citizen)

    with CaptureQueriesContext(connection) as first:
        response = api.get("/api/v1/me/export/")
    for _ in range(3):  # more entries, no more queries
        citizens.pii_reveal(subject=new_citizen, operator=operator, ip=operator_ip)
    with CaptureQueriesContext(connection) as again:
        assert len(api.get("/api/v1/me/export/").json()["audit_trail"]) == 8
    assert len(again) == len(first)

    assert response.status_code == 200
    trail = response.json()["audit_trail"]
    assert [entry["action"] for entry in trail] == [
        "identity.real_name_mismatch",
        "identity.real_name_verified",
        "account.suspended",
        "account.reinstated",
        "user.pii_viewed",
    ]
    mismatch, verified, suspended = trail[:3]
    assert mismatch["by"] == "self" and mismatch["ip"] == "198.51.100.23"
    assert mismatch["data"]["provider_reference"].startswith("SBX")
    assert verified["data"]["provider_reference"].startswith("SBX")
    assert mismatch["at"].endswith("+08:00")
    # What an operator did: when and what, not who or from where.
    assert suspended["by"] == "operator" and suspended["ip"] is None
    text = response.content.decode()
    assert operator_ip not in text and operator.username not in text
    assert str(other_citizen.pk) not in text

    before = AuditEntry.objects.count()
    assert api.delete(ME).status_code == 204
    assert AuditEntry.objects.count() == before + 1  # account.closed, nothing erased

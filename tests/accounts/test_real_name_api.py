"""A citizen verifies their real name to reach identity level 2."""

from __future__ import annotations

import pytest
from rest_framework.throttling import UserRateThrottle

from accounts import citizens, pii
from accounts.identity import (
    BaseIdentityProvider,
    IdentityProviderUnavailable,
    SandboxIdentityProvider,
)
from accounts.models import AuditEntry, User
from tests.accounts.factories import CitizenFactory, make_id_number
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

REAL_NAME = "/api/v1/me/real-name/"
ID = make_id_number(123)  # 430102 19900307 123 + check


@pytest.fixture
def new_api(new_citizen):
    return client_for(new_citizen)


def test_verified_citizen_reaches_level_2_and_sees_only_masked_data(new_api, new_citizen) -> None:
    response = new_api.post(REAL_NAME, {"name": "王小明", "id_number": ID}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["identity_level"] == 2
    assert body["real_name"] == "王**"
    assert body["id_number"] == f"{ID[:6]}********{ID[14:]}"
    assert ID not in response.content.decode()
    assert "王小明" not in response.content.decode()
    new_citizen.refresh_from_db()
    assert new_citizen.real_name == "王小明"
    assert new_citizen.id_number == ID


def test_a_lowercase_x_and_spaces_are_accepted(new_api) -> None:
    number = next(make_id_number(n) for n in range(1000) if make_id_number(n).endswith("X"))
    typed = f" {number[:6]} {number[6:14]} {number[14:].lower()} "
    response = new_api.post(REAL_NAME, {"name": "王小明", "id_number": typed}, format="json")
    assert response.status_code == 200, response.json()


@pytest.mark.parametrize(
    ("number", "why"),
    [
        (ID[:-1] + ("0" if ID[-1] != "0" else "1"), "checksum"),
        ("43010219901307123", "length"),
        ("43010219900230" + "123", "february 30th"),
        ("990102199003071234", "region"),
        ("43010221990307123", "future"),
    ],
)
def test_an_impossible_id_number_is_refused_before_asking_the_bureau(new_api, number, why) -> None:
    from accounts import idnumber

    if len(number) == 17:
        number += idnumber.check_char(number)
    response = new_api.post(REAL_NAME, {"name": "王小明", "id_number": number}, format="json")
    assert response.status_code == 400, why
    assert response.json()["code"] == "id_number_invalid"
    assert "id_number" in response.json()["errors"]


@pytest.mark.parametrize(
    "name",
    # The last two: Yijing hexagram symbols (U+4DC0-U+4DFF) are no characters of a name.
    ["A", "王", "Wang Xiaoming", "王小明1", "王" * 31, "阿·\u4dc0\u4dc1", "\u4dc0\u4dc1"],
)
def test_a_name_that_is_not_a_chinese_name_is_refused(new_api, name) -> None:
    response = new_api.post(REAL_NAME, {"name": name, "id_number": ID}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] in {"name_invalid", "invalid"}


def test_minority_names_with_a_middle_dot_are_accepted(new_api) -> None:
    response = new_api.post(REAL_NAME, {"name": "阿依古丽·买买提", "id_number": ID}, format="json")
    assert response.status_code == 200, response.json()


@pytest.mark.parametrize("name", ["阿·\U00020000三", "\U00020000·\U0002a6d6", "阿·\u3400"])
def test_after_a_middle_dot_come_the_same_characters_as_before_it(new_api, name) -> None:
    """Extension B (and later) ideographs, taken before the dot, are taken after it too."""
    response = new_api.post(REAL_NAME, {"name": name, "id_number": ID}, format="json")
    assert response.status_code == 200, response.json()


def test_the_bureau_says_no_for_a_mismatched_pair(new_api, new_citizen) -> None:
    mismatched = make_id_number(999)
    assert mismatched[14:17] == "999"
    response = new_api.post(REAL_NAME, {"name": "王小明", "id_number": mismatched}, format="json")
    assert response.status_code == 422
    assert response.json()["code"] == "identity_mismatch"
    new_citizen.refresh_from_db()
    assert new_citizen.identity_level == 1
    assert new_citizen.id_number == ""


def test_one_id_number_belongs_to_one_account(new_api, citizen) -> None:
    response = new_api.post(
        REAL_NAME, {"name": "张三丰", "id_number": citizen.id_number}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "id_number_taken"


def test_whether_a_number_is_taken_is_told_only_for_a_confirmed_pair(new_api, citizen) -> None:
    """A number another account holds, with a name the bureau does not
    confirm, is a mismatch like any other: the answer does not tell a
    stranger's number is registered here."""
    number = make_id_number(999)  # the sandbox bureau confirms no name for it
    User.objects.filter(pk=citizen.pk).update(
        id_number=number, id_number_index=pii.blind_index(number, purpose="id_number")
    )
    response = new_api.post(REAL_NAME, {"name": "王小明", "id_number": number}, format="json")
    assert response.status_code == 422, response.json()
    assert response.json()["code"] == "identity_mismatch"


def test_a_closed_account_frees_its_id_number(new_api, citizen, citizen_api) -> None:
    number = citizen.id_number
    assert citizen_api.delete("/api/v1/me/").status_code == 204
    response = new_api.post(REAL_NAME, {"name": "张三丰", "id_number": number}, format="json")
    assert response.status_code == 200, response.json()


def test_one_id_number_in_other_digits_is_still_the_same_number(new_api, citizen) -> None:
    """Full-width digits are read as the number they spell (and then it is
    taken); digits of other scripts are no ID number at all. Neither binds
    one person's number to a second account under another blind index."""
    wide = citizen.id_number.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ"))
    response = new_api.post(REAL_NAME, {"name": "张三丰", "id_number": wide}, format="json")
    assert response.status_code == 409, response.json()
    assert response.json()["code"] == "id_number_taken"
    arabic = citizen.id_number[:-1].translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    response = new_api.post(
        REAL_NAME, {"name": "张三丰", "id_number": arabic + citizen.id_number[-1]}, format="json"
    )
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "id_number_invalid"
    assert User.objects.filter(identity_level=2).count() == 1


def test_verifying_twice_is_a_conflict(citizen_api) -> None:
    response = citizen_api.post(REAL_NAME, {"name": "王小明", "id_number": ID}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "already_verified"


class DownBureau(BaseIdentityProvider):
    def verify(self, *, name: str, id_number: str):
        raise IdentityProviderUnavailable("timeout")


def test_when_the_bureau_is_down_the_citizen_is_told_to_retry(new_api, settings) -> None:
    settings.IDENTITY_PROVIDER = "tests.accounts.test_real_name_api.DownBureau"
    response = new_api.post(REAL_NAME, {"name": "王小明", "id_number": ID}, format="json")
    assert response.status_code == 503
    assert response.json()["code"] == "identity_provider_unavailable"


class SlowBureau(SandboxIdentityProvider):
    """Answers after ``meanwhile`` happened (what the citizen's other device did)."""

    meanwhile = staticmethod(lambda: None)

    def verify(self, *, name: str, id_number: str):
        type(self).meanwhile()
        return super().verify(name=name, id_number=id_number)


def test_an_account_closed_while_the_bureau_answers_keeps_no_id_number(
    new_api, new_citizen, settings, monkeypatch
) -> None:
    """The close committed first: the verification that waited on the
    bureau must not write the name and ID number back onto the closed
    account, where they would hold the number from any new account."""
    settings.IDENTITY_PROVIDER = "tests.accounts.test_real_name_api.SlowBureau"
    monkeypatch.setattr(
        SlowBureau,
        "meanwhile",
        staticmethod(lambda: citizens.account_close(user=User.objects.get(pk=new_citizen.pk))),
    )
    response = new_api.post(REAL_NAME, {"name": "王小明", "id_number": ID}, format="json")
    assert response.status_code == 401, response.json()
    assert response.json()["code"] == "account_inactive"
    closed = User.objects.get(pk=new_citizen.pk)
    assert (closed.real_name, closed.id_number, closed.id_number_index) == ("", "", None)
    assert closed.identity_level == 1
    monkeypatch.setattr(SlowBureau, "meanwhile", staticmethod(lambda: None))
    newcomer = client_for(CitizenFactory(phone="13600136000"))
    answer = newcomer.post(REAL_NAME, {"name": "王小明", "id_number": ID}, format="json")
    assert answer.status_code == 200, answer.json()


def test_attempts_are_throttled_per_citizen(new_api, monkeypatch) -> None:
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"real_name": "2/day"})
    statuses = [
        new_api.post(
            REAL_NAME, {"name": "王小明", "id_number": make_id_number(999)}, format="json"
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [422, 422, 429]


def test_verification_is_audited_without_personal_data(new_api, new_citizen) -> None:
    new_api.post(REAL_NAME, {"name": "王小明", "id_number": ID}, format="json")
    entry = AuditEntry.objects.get(action="identity.real_name_verified")
    assert entry.target_id == str(new_citizen.pk)
    assert entry.actor_kind == "citizen"
    text = str(entry.data) + entry.actor_label
    assert ID not in text and "王小明" not in text and "13700137000" not in text


def test_personal_data_is_encrypted_in_the_database(new_api, new_citizen) -> None:
    from django.db import connection

    new_api.post(REAL_NAME, {"name": "王小明", "id_number": ID}, format="json")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT real_name, id_number, id_number_index FROM accounts_user WHERE id = %s",
            [new_citizen.pk.hex if connection.vendor == "sqlite" else new_citizen.pk],
        )
        real_name, id_number, index = cursor.fetchone()
    assert "王小明" not in real_name and ID not in id_number
    assert real_name.startswith("gAAAA") and id_number.startswith("gAAAA")
    assert ID not in index
    assert User.objects.get(pk=new_citizen.pk).id_number == ID


def test_a_check_takes_its_turn_after_the_same_citizens_check_under_way(
    new_api, new_citizen, monkeypatch
) -> None:
    """The rate is checked for one request of a citizen at a time (a burst
    would otherwise all read the same history and all pass: see the real
    stack's test); one that cannot get its turn is throttled."""
    from django.core.cache import cache

    from config.api import OneCheckAtATime

    monkeypatch.setattr(OneCheckAtATime, "lock_wait_seconds", 0.05)
    under_way = f"throttle_real_name_{new_citizen.pk}:checking"
    cache.add(under_way, 1, timeout=5)
    response = new_api.post(REAL_NAME, {"name": "王小明", "id_number": ID}, format="json")
    assert response.status_code == 429
    assert response.json()["code"] == "throttled"
    assert response["Retry-After"] == "1"
    cache.delete(under_way)
    assert (
        new_api.post(REAL_NAME, {"name": "王小明", "id_number": ID}, format="json").status_code
        == 200
    )

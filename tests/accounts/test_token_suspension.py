"""A suspension ends every session: no refresh token made by a login or a
refresh that raced it lives on to work again after reinstatement."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import UntypedToken

from accounts import citizens, tokens
from accounts.errors import AccountsError
from accounts.models import AuditEntry, User
from accounts.tokens import CitizenRefreshToken
from tests.accounts.helpers import last_code_sent_to, log_in
from tests.concurrency import a_backend_waits_on_a_lock, in_thread, pause_in

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/auth/token/"
REFRESH = "/api/v1/auth/token/refresh/"


def refresh(refresh_token: str) -> Any:
    return APIClient().post(REFRESH, {"refresh": refresh_token}, format="json")


def revoked(refresh_token: str) -> bool:
    """Whether the suspension revoked ``refresh_token``, read from its
    record: shown to the API while the account is suspended, a token the
    suspension missed would be spent by that very look, and the race's
    escapee found only when a later one came."""
    jti = UntypedToken(refresh_token)["jti"]  # type: ignore[arg-type]  # simplejwt annotates the token as Token; it takes the JWT string
    return BlacklistedToken.objects.filter(token__jti=jti).exists()


def suspend(user_id: Any, operator: User) -> None:
    citizens.user_set_active(user=User.objects.get(pk=user_id), active=False, actor=operator)


def reinstate(user_id: Any, operator: User) -> None:
    citizens.user_set_active(user=User.objects.get(pk=user_id), active=True, actor=operator)


def test_a_refresh_token_shown_while_suspended_does_not_work_after_reinstatement(
    citizen, operator
) -> None:
    """A refresh token that outlived the suspension (one a refresh racing it
    made) is spent when it is shown while the account is suspended."""
    suspend(citizen.pk, operator)
    leftover = str(CitizenRefreshToken.for_user(User.objects.get(pk=citizen.pk)))

    while_suspended = refresh(leftover)
    assert while_suspended.status_code == 401
    assert while_suspended.json()["code"] == "account_inactive"

    reinstate(citizen.pk, operator)
    after = refresh(leftover)
    assert after.status_code == 401
    assert after.json()["code"] == "token_invalid"


# --- A close committed after the operator read the account ---------------------------------


def closed_behind_the_operators_back(citizen: User) -> tuple[User, User]:
    """The account as an operator's action read it, and as it is once the
    citizen's close (DELETE /api/v1/me/) has committed after that read."""
    as_the_operator_read_it = User.objects.get(pk=citizen.pk)
    citizens.account_close(user=User.objects.get(pk=citizen.pk))
    closed = User.objects.get(pk=citizen.pk)
    assert closed.closed_at is not None and not closed.is_active
    return as_the_operator_read_it, closed


@pytest.mark.parametrize(
    ("active", "action"), [(True, "account.reinstated"), (False, "account.suspended")]
)
def test_a_suspension_or_reinstatement_landing_after_the_close_leaves_the_account_closed(
    citizen, operator, active: bool, action: str
) -> None:
    """user_set_active checked ``closed_at`` on the caller's copy and then
    wrote unconditionally: a reinstatement reopened the closed account
    (tokens and star-codes vouched for it again), a suspension rewrote the
    deactivation stamp offline scanners page by. Now refused on the row."""
    stale, closed = closed_behind_the_operators_back(citizen)
    with pytest.raises(AccountsError) as refused:
        citizens.user_set_active(user=stale, active=active, actor=operator)
    assert refused.value.code == "account_inactive"
    after = User.objects.get(pk=citizen.pk)
    assert after.is_active is False, "a closed account was made active again"
    assert after.closed_at == closed.closed_at
    assert after.deactivated_at == closed.deactivated_at
    assert not AuditEntry.objects.filter(action=action, target_id=str(citizen.pk)).exists()


@pytest.mark.integration  # PostgreSQL's row locks, two sessions
@pytest.mark.django_db(transaction=True)
def test_a_reinstatement_racing_the_close_leaves_the_account_closed(
    citizen, operator, monkeypatch
) -> None:
    """The same with two sessions: the reinstatement has read the account
    (suspended, open) and is about to write when the citizen's close starts."""
    from tests.concurrency import close_meanwhile

    suspend(citizen.pk, operator)
    paused, release = pause_in(monkeypatch, citizens, "account_check_manageable")
    outcome: list[Any] = []

    def reinstating() -> None:
        try:
            reinstate(citizen.pk, operator)
            outcome.append("reinstated")
        except AccountsError as exc:
            outcome.append(exc.code)

    close_meanwhile(reinstating, paused=paused, release=release, user_id=citizen.pk)
    after = User.objects.get(pk=citizen.pk)
    assert after.closed_at is not None
    assert after.is_active is False, "a closed account was made active again"
    assert outcome in (["account_inactive"], ["reinstated"])


def answer_racing_a_suspension(
    monkeypatch: Any, pause: tuple[Any, str], request: Any, *, user_id: Any, operator: User
) -> Any:
    """Send ``request()`` until it pauses in ``pause`` (owner, name),
    suspend the account on another connection meanwhile, then let the
    request go on; its answer. Both must end without an error (PostgreSQL
    aborting one of two sessions waiting on each other is one)."""
    paused, release = pause_in(monkeypatch, *pause)
    answers: list[Any] = []
    errors: list[BaseException] = []
    stepping = in_thread(lambda: answers.append(request()), errors)
    assert paused.wait(30)
    suspending = in_thread(lambda: suspend(user_id, operator), errors)
    a_backend_waits_on_a_lock(timeout=2)  # the suspension may wait for the step, or not
    release.set()
    stepping.join(60)
    suspending.join(60)
    monkeypatch.undo()
    if errors:
        raise errors[0]
    assert not User.objects.get(pk=user_id).is_active
    (answer,) = answers
    return answer


# Where the racing request stops, holding the account: before it makes the
# pair, and just before the new refresh token's row is written.
PAUSES = [(tokens, "_pair_make"), (CitizenRefreshToken, "for_user")]


@pytest.mark.integration  # PostgreSQL's row locks, two sessions
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("owner", "name"), PAUSES, ids=["before_issue", "at_token_row"])
def test_a_refresh_racing_a_suspension_leaves_no_working_token(
    citizen, operator, monkeypatch, owner, name
) -> None:
    start = log_in(APIClient())["refresh"]
    answer = answer_racing_a_suspension(
        monkeypatch, (owner, name), lambda: refresh(start), user_id=citizen.pk, operator=operator
    )
    assert answer.status_code in (200, 401), answer.json()
    made = [answer.json()["refresh"]] if answer.status_code == 200 else []
    for token in made:
        assert revoked(token)
    reinstate(citizen.pk, operator)
    # The new token first: the spent one, shown again, would end every
    # session of the account (reuse), the new token's too.
    for token in [*made, start]:
        after = refresh(token)
        assert after.status_code == 401, after.json()


@pytest.mark.integration  # PostgreSQL's row locks, two sessions
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("owner", "name"), PAUSES, ids=["before_issue", "at_token_row"])
def test_a_login_racing_a_suspension_leaves_no_working_token(
    citizen, operator, monkeypatch, owner, name
) -> None:
    phone = citizen.phone
    assert APIClient().post("/api/v1/auth/otp/", {"phone": phone}, format="json").status_code == 202
    code = last_code_sent_to(phone)
    answer = answer_racing_a_suspension(
        monkeypatch,
        (owner, name),
        lambda: APIClient().post(LOGIN, {"phone": phone, "code": code}, format="json"),
        user_id=citizen.pk,
        operator=operator,
    )
    assert answer.status_code in (200, 403), answer.json()
    if answer.status_code == 403:
        assert answer.json()["code"] == "account_suspended"
        return
    made = answer.json()["refresh"]
    assert revoked(made)
    reinstate(citizen.pk, operator)
    after = refresh(made)
    assert after.status_code == 401, after.json()

"""The status machine, as a table, over many sequences of moves."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.applications import FINAL, TRANSITIONS, transition_allowed
from services.models import ActorKind, ApplicationStatus

S = ApplicationStatus
ALL = list(S.values)
ACTORS = list(ActorKind.values)


def test_the_design_table_exactly() -> None:
    allowed = {
        (frm, to, actor)
        for frm in ALL
        for to in ALL
        for actor in ACTORS
        if transition_allowed(frm, to, actor)
    }
    assert allowed == {
        ("awaiting_payment", "submitted", "system"),
        ("awaiting_payment", "cancelled", "citizen"),
        ("submitted", "routed", "system"),
        ("submitted", "accepted", "department"),
        ("submitted", "rejected", "department"),
        ("submitted", "cancelled", "citizen"),
        ("routed", "accepted", "department"),
        ("routed", "rejected", "department"),
        ("routed", "cancelled", "citizen"),
        ("accepted", "needs_info", "department"),
        ("accepted", "completed", "department"),
        ("accepted", "rejected", "department"),
        ("needs_info", "accepted", "citizen"),
    }


@pytest.mark.parametrize("final", FINAL)
def test_final_statuses_have_no_way_out(final) -> None:
    assert final not in TRANSITIONS


moves = st.lists(st.tuples(st.sampled_from(ALL), st.sampled_from(ACTORS)), max_size=30)


@settings(max_examples=300)
@given(st.sampled_from([S.AWAITING_PAYMENT, S.SUBMITTED]), moves)
def test_any_sequence_of_attempts_stays_on_the_map(start, attempts) -> None:
    """Whatever anyone tries, an application only ever walks the table, and
    once it ends it stays ended."""
    status, path = str(start), [str(start)]
    for target, actor in attempts:
        if transition_allowed(status, target, actor):
            status = target
            path.append(status)
    for a, b in zip(path, path[1:], strict=False):
        assert b in TRANSITIONS[a]
    for i, step in enumerate(path):
        if step in FINAL:
            assert i == len(path) - 1
    if S.ROUTED in path:
        assert path.index(S.ROUTED) == path.index(S.SUBMITTED) + 1


@pytest.mark.django_db
@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.sampled_from(["accepted", "needs_info", "completed", "rejected", "routed", "cancelled"]),
        max_size=8,
    )
)
def test_the_department_api_refuses_every_move_off_the_table(statuses) -> None:
    """Through the service function, with the database: each refused move is
    409 ``invalid_transition`` and changes nothing."""
    from accounts.api_keys import api_key_create
    from services.applications import application_department_update, application_submit
    from services.errors import ServicesError
    from tests.accounts.factories import CitizenFactory
    from tests.services.conftest import GOOD_FORM
    from tests.services.factories import ServiceFactory

    service = ServiceFactory()
    key, _raw = api_key_create(department=service.department, scope="integrator")
    application = application_submit(
        citizen=CitizenFactory(verified=True), service=service, form=GOOD_FORM
    )
    for target in statuses:
        before = application.status
        if transition_allowed(before, target, ActorKind.DEPARTMENT):
            application = application_department_update(
                application=application, status=target, api_key=key
            )
            assert application.status == target
        else:
            with pytest.raises(ServicesError) as refused:
                application_department_update(application=application, status=target, api_key=key)
            assert refused.value.code == "invalid_transition"
            application.refresh_from_db()
            assert application.status == before

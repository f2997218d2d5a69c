"""A change or a secret rotation that loses the race with a removal does
not bring the removed endpoint back."""

from __future__ import annotations

import pytest

from config.errors import NOT_FOUND
from services.errors import ServicesError
from services.models import Endpoint
from services.routing import endpoints

pytestmark = pytest.mark.django_db

URL = "/api/v1/dept/endpoints/"


def test_a_change_read_before_a_removal_is_refused_and_the_endpoint_stays_removed(
    hook, integrator_key
) -> None:
    # The PATCH read the endpoint; the DELETE committed before it wrote.
    stale = Endpoint.objects.get(pk=hook.pk)
    endpoints.endpoint_delete(endpoint=Endpoint.objects.get(pk=hook.pk), actor=integrator_key)

    with pytest.raises(ServicesError) as refused:
        endpoints.endpoint_update(
            endpoint=stale, actor=integrator_key, is_active=True, description="revived"
        )
    assert refused.value.error is NOT_FOUND

    hook.refresh_from_db()
    assert hook.deleted_at is not None
    assert hook.is_active is False
    assert hook.description != "revived"


def test_a_rotation_read_before_a_removal_is_refused_and_issues_no_secret(
    hook, integrator_key
) -> None:
    stale = Endpoint.objects.get(pk=hook.pk)
    endpoints.endpoint_delete(endpoint=Endpoint.objects.get(pk=hook.pk), actor=integrator_key)
    secret = Endpoint.objects.get(pk=hook.pk).secret

    with pytest.raises(ServicesError) as refused:
        endpoints.endpoint_rotate_secret(endpoint=stale, actor=integrator_key)
    assert refused.value.error is NOT_FOUND
    assert Endpoint.objects.get(pk=hook.pk).secret == secret


def test_removing_an_endpoint_twice_is_refused_the_second_time(hook, integrator_key) -> None:
    stale = Endpoint.objects.get(pk=hook.pk)
    endpoints.endpoint_delete(endpoint=Endpoint.objects.get(pk=hook.pk), actor=integrator_key)
    deleted_at = Endpoint.objects.get(pk=hook.pk).deleted_at

    with pytest.raises(ServicesError) as refused:
        endpoints.endpoint_delete(endpoint=stale, actor=integrator_key)
    assert refused.value.error is NOT_FOUND
    # The first removal's time stands.
    assert Endpoint.objects.get(pk=hook.pk).deleted_at == deleted_at


def test_a_ping_read_before_a_removal_is_refused_and_sends_nothing(hook, integrator_key) -> None:
    from services.models import Delivery

    stale = Endpoint.objects.get(pk=hook.pk)
    endpoints.endpoint_delete(endpoint=Endpoint.objects.get(pk=hook.pk), actor=integrator_key)

    with pytest.raises(ServicesError) as refused:
        endpoints.endpoint_ping(endpoint=stale, actor=integrator_key)
    assert refused.value.error is NOT_FOUND
    assert not Delivery.objects.filter(endpoint=hook).exclude(status="cancelled").exists()


@pytest.mark.integration  # two PostgreSQL sessions
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "change",
    [
        pytest.param(("patch", "endpoint_update", ""), id="patch"),
        pytest.param(("post", "endpoint_rotate_secret", "rotate-secret/"), id="rotate-secret"),
    ],
)
def test_a_change_racing_a_removal_through_the_api_answers_404(
    change, hook, integrator_key, monkeypatch
) -> None:
    """The PATCH (or rotation) has found the endpoint and is about to change
    it when the DELETE, on another connection, commits."""
    from tests.concurrency import in_thread, pause_in
    from tests.conftest import client_with_key

    method, write, suffix = change
    url = f"{URL}{hook.id}/"
    paused, release = pause_in(monkeypatch, endpoints, write)
    answers: list = []
    errors: list[BaseException] = []

    def change_it() -> None:
        client = client_with_key(integrator_key.raw)
        body = {"is_active": True, "description": "revived"} if method == "patch" else None
        answers.append(getattr(client, method)(url + suffix, body, format="json"))

    changing = in_thread(change_it, errors)
    assert paused.wait(30)
    removed = client_with_key(integrator_key.raw).delete(url)
    assert removed.status_code == 204
    secret = Endpoint.objects.get(pk=hook.pk).secret
    release.set()
    changing.join(60)
    if errors:
        raise errors[0]

    (answer,) = answers
    assert answer.status_code == 404, answer.content
    assert answer.json()["code"] == "not_found"
    row = Endpoint.objects.get(pk=hook.pk)
    assert row.deleted_at is not None
    assert row.is_active is False
    assert row.description != "revived"
    assert row.secret == secret

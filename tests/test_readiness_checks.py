"""/readyz tells the orchestrator the truth about each service the web
processes need, and answers in its own shape whatever the service says."""

from __future__ import annotations

import logging

import amqp.exceptions
import pytest
from django.test import override_settings
from kombu import Connection

from config import health

pytestmark = pytest.mark.django_db

REFUSING_BROKER = "amqp://guest:wrong@127.0.0.1:5672//"


@pytest.fixture(autouse=True)
def _nothing_kept(monkeypatch) -> None:
    monkeypatch.setattr(health, "_broker_checked", {})


@pytest.fixture
def broker_refusing(monkeypatch):
    """A RabbitMQ that answers but refuses the connection (what ``error``
    says: a wrong password, a missing vhost)."""
    attempts: list[str] = []

    def refuse(error: Exception):
        def ensure_connection(self, *args, **kwargs):
            attempts.append(self.as_uri())
            raise error

        monkeypatch.setattr(Connection, "ensure_connection", ensure_connection)

    with override_settings(
        CELERY_BROKER_URL=REFUSING_BROKER, CELERY_BROKER_TRANSPORT_OPTIONS={"write_timeout": 5}
    ):
        yield refuse, attempts


@pytest.mark.parametrize(
    "error",
    [
        amqp.exceptions.AccessRefused(
            "(0, 0): (403) ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"
        ),
        amqp.exceptions.NotAllowed("Connection.open: (530) NOT_ALLOWED - vhost nope not found"),
    ],
    ids=["wrong-password", "missing-vhost"],
)
def test_readyz_is_503_when_rabbitmq_refuses_the_login_or_the_vhost(
    api, broker_refusing, error, caplog
) -> None:
    refuse, attempts = broker_refusing
    refuse(error)
    with caplog.at_level(logging.WARNING):
        first, second = api.get("/readyz"), api.get("/readyz")
    for response in (first, second):
        assert response.status_code == 503
        assert response["Content-Type"] == "application/json"
        assert response.json()["status"] == "unavailable"
        assert response.json()["checks"]["broker"] == "unavailable"
        assert response.json()["checks"]["database"] == "ok"
    # Asked once and kept, as the other answers of the broker are.
    assert len(attempts) == 1
    # A warning, not a server error's traceback.
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in caplog.records if r.name == "config.health"] == [
        f"readiness: broker unavailable: {error}"
    ]

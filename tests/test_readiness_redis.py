"""/readyz checks Redis when REDIS_URL is set, whichever service carries
the tasks: the OTP throttles, the cache and the scan buffer live there."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings

from config import health

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _nothing_kept(monkeypatch) -> None:
    monkeypatch.setattr(health, "_broker_checked", {})
    monkeypatch.setattr(health, "_redis_checked", {}, raising=False)


def test_with_redis_unset_readyz_checks_no_redis(api, settings) -> None:
    settings.REDIS_URL = ""
    response = api.get("/readyz")
    assert response.status_code == 200
    assert "redis" not in response.json()["checks"]


def test_readyz_is_503_when_redis_is_down_though_the_broker_answers(api, caplog) -> None:
    """RabbitMQ carries the tasks; Redis (the OTP throttles, the cache, the
    scan buffer) is dead: the process is not ready."""
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"), caplog.at_level(logging.WARNING):
        response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "ok", "redis": "unavailable"},
    }
    assert not [r for r in caplog.records if r.exc_info]


def test_readyz_asks_redis_once_in_a_while_not_on_every_probe(api, monkeypatch) -> None:
    asked: list[str] = []
    monkeypatch.setattr(health, "_ask_redis", lambda url: asked.append(url) or "unavailable")
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        answers = [api.get("/readyz") for _ in range(5)]
        assert [a.status_code for a in answers] == [503] * 5
        assert [a.json()["checks"]["redis"] for a in answers] == ["unavailable"] * 5
        assert asked == ["redis://127.0.0.1:1/0"]
        monkeypatch.setattr(health, "REDIS_CHECK_SECONDS", 0.0)
        api.get("/readyz")
    assert len(asked) == 2


@pytest.mark.integration
def test_readyz_says_redis_answers_on_the_real_stack(api) -> None:
    response = api.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["redis"] == "ok"

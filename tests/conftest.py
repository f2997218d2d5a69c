"""The cast of every story: citizens, departments, their keys, an operator.

Integration tests (``@pytest.mark.integration``) need the real stack and run
when ``DATABASE_URL`` points at PostgreSQL and ``REDIS_URL`` is set (CI's
second pass). Elsewhere they are reported as skipped, never hidden; with the
variables set, a service that does not answer fails the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.cache import cache
from django.utils import translation
from rest_framework.test import APIClient

from accounts import sms
from accounts.api_keys import api_key_create
from accounts.models import ApiKey, ApiKeyScope, Department, User
from accounts.tokens import tokens_issue
from config.pages import catalog_pages
from config.redis_client import _connection as redis_scripts_connection
from services.models import Category, Service
from services.routing import transport
from tests.accounts.factories import CitizenFactory, DepartmentFactory, StaffFactory
from tests.services.factories import CategoryFactory, ServiceFactory


def real_stack() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")) and bool(
        os.environ.get("REDIS_URL")
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    url = os.environ.get("REDIS_URL")
    if url:
        import redis

        try:
            redis.Redis.from_url(url, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            pytest.exit(f"REDIS_URL={url} is set but Redis does not answer: {exc}", returncode=3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if real_stack():
        return
    skip = pytest.mark.skip(
        reason="integration: needs DATABASE_URL=postgres://… and REDIS_URL (CI's second pass)"
    )
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def steady_throttle_clock(monkeypatch) -> float:
    """Fixed-window throttles see one moment, a second into a window of
    every length up to a day: a test's requests cannot straddle two
    windows (where the next window would let one more through)."""
    from config.api import FixedWindowThrottle

    moment = (time.time() // 86400) * 86400 + 1
    monkeypatch.setattr(FixedWindowThrottle, "clock", staticmethod(lambda: moment))
    return moment


@pytest.fixture(autouse=True)
def _fresh_edges() -> Iterator[None]:
    """Throttle counters, the SMS outbox, the public pages and the endpoint
    hosts' lookups kept in this process start empty in every test, in the
    default language (a request in English leaves English active in the
    thread, for code a later test calls outside a request); and
    every test leaves the project's Celery app current (tasks are sent by
    name through it: another app made current would take them to a broker
    nobody answers, silently)."""
    cache.clear()
    if settings.REDIS_URL:
        # Connected, as a web process's is after its first request: before a
        # test stubs the resolver (socket.getaddrinfo) for endpoint hosts.
        redis_scripts_connection().connect()
    sms.outbox.clear()
    catalog_pages.forget()
    transport.lookups_forget()
    translation.deactivate()
    yield
    from celery import current_app

    assert current_app.main == "config", f"the test left Celery app {current_app.main!r} current"


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def client_for(user: User) -> APIClient:
    client = APIClient()
    # As the app holds it: the access token of a login (accounts.tokens.tokens_issue).
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_issue(user=user)['access']}")
    return client


def client_with_key(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.fixture
def citizen(db) -> User:
    """Zhang, real-name verified (identity level 2)."""
    return CitizenFactory(verified=True, phone="13800138000")


@pytest.fixture
def other_citizen(db) -> User:
    return CitizenFactory(verified=True, phone="13900139000", real_name="李四")


@pytest.fixture
def new_citizen(db) -> User:
    """Logged in by phone only (identity level 1)."""
    return CitizenFactory(phone="13700137000")


@pytest.fixture
def citizen_api(citizen: User) -> APIClient:
    return client_for(citizen)


@pytest.fixture
def other_citizen_api(other_citizen: User) -> APIClient:
    return client_for(other_citizen)


@pytest.fixture
def department(db) -> Department:
    return DepartmentFactory(code="hrss", name="长沙市人力资源和社会保障局")


@pytest.fixture
def other_department(db) -> Department:
    return DepartmentFactory(code="gjj", name="长沙住房公积金管理中心")


def _key(department: Department, scope: ApiKeyScope) -> ApiKey:
    key, raw = api_key_create(department=department, scope=scope, name=f"{scope} test key")
    key.raw = raw  # type: ignore[attr-defined]  # the raw key rides on the row for the tests
    return key


@pytest.fixture
def integrator_key(department: Department) -> ApiKey:
    return _key(department, ApiKeyScope.INTEGRATOR)


@pytest.fixture
def other_integrator_key(other_department: Department) -> ApiKey:
    return _key(other_department, ApiKeyScope.INTEGRATOR)


@pytest.fixture
def scanner_key(department: Department) -> ApiKey:
    return _key(department, ApiKeyScope.SCANNER)


@pytest.fixture
def integrator_api(integrator_key: ApiKey) -> APIClient:
    return client_with_key(integrator_key.raw)  # type: ignore[attr-defined]  # set by _key above


@pytest.fixture
def scanner_api(scanner_key: ApiKey) -> APIClient:
    return client_with_key(scanner_key.raw)  # type: ignore[attr-defined]  # set by _key above


@pytest.fixture
def operator(db) -> User:
    """A city operator with every admin permission."""
    return StaffFactory(username="operator", is_superuser=True)


@pytest.fixture
def operator_client(client, operator):
    """The Django test client, logged into the admin as the operator."""
    client.force_login(operator)
    return client


# --- The catalog every story uses -----------------------------------------------------------


@pytest.fixture
def category(db) -> Category:
    return CategoryFactory(code="shebao", name="社保")


@pytest.fixture
def service(department, category) -> Service:
    """A free service of the fixture department (hrss)."""
    return ServiceFactory(
        code="sbk-apply", name="社会保障卡申领", department=department, category=category
    )


@pytest.fixture
def other_service(other_department) -> Service:
    """A service of the other department."""
    return ServiceFactory(department=other_department, code="gjj-withdraw", name="公积金提取")

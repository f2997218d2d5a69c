"""The operator's console in a real browser (Debian's Chromium driven by
Playwright) on the real stack: gunicorn, a Celery worker with beat,
PostgreSQL, Redis and an HTTP server playing the department.

The operator logs in, reads the dashboard, follows the dead letters to the
one an application left, replays it from its page and sees it delivered.
Screenshots of each step are kept in ``var/artefacts/admin-browser/``.
"""

from __future__ import annotations

import httpx
import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import expect, sync_playwright
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import AuditEntry
from services.models import Delivery
from services.routing import endpoints, events
from tests.accounts.factories import (
    STAFF_PASSWORD,
    CitizenFactory,
    DepartmentFactory,
    StaffFactory,
)
from tests.processes import ROOT, wait_for, web_server
from tests.services.department import Answer, DepartmentServer
from tests.services.factories import ServiceFactory
from tests.services.test_routing_real_stack import FAST, FORM, worker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(240),
]

CHROMIUM = "/usr/bin/chromium"
ARTEFACTS = ROOT / "var" / "artefacts" / "admin-browser"
SCREEN = {"width": 1366, "height": 768}  # the operators' screens


@pytest.fixture
def artefacts():
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTEFACTS.glob("*.png"):
        old.unlink()
    return ARTEFACTS


def test_an_operator_replays_a_dead_letter_in_the_browser(tmp_path, artefacts) -> None:
    department = DepartmentFactory(code="hrss", name="长沙市人力资源和社会保障局")
    ServiceFactory(code="sbk-apply", name="社会保障卡申领", department=department)
    citizen = CitizenFactory(verified=True, phone="13800138000")
    # Hashed as the web server (production settings) checks it, not with
    # the tests' fast hasher.
    hasher = PBKDF2PasswordHasher()
    operator = StaffFactory(
        username="operator",
        is_superuser=True,
        password=hasher.encode(STAFF_PASSWORD, hasher.salt(), iterations=1000),
    )
    with DepartmentServer() as server:
        endpoints.endpoint_create(
            department=department,
            url=server.url("/hrss/events"),
            events=[events.APPLICATION_SUBMITTED],
            actor=None,
        )
        # The department's system refuses the first event (a 400 is final:
        # dead-lettered at once), then takes everything.
        server.answer(Answer(400, {"error": "申请表字段与本系统不符"}))
        with web_server(**FAST) as base, worker(tmp_path):
            response = httpx.post(
                f"{base}/api/v1/applications/",
                json={"service": "sbk-apply", "form": FORM},
                headers={"Authorization": f"Bearer {RefreshToken.for_user(citizen).access_token}"},
                timeout=10,
            )
            assert response.status_code == 201, response.text
            wait_for(
                lambda: Delivery.objects.filter(status="failed").exists(),
                timeout=60,
                message="the application's event was not dead-lettered",
            )
            dead = Delivery.objects.get()

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                try:
                    page = browser.new_page(viewport=SCREEN, locale="zh-CN")
                    try:
                        statuses = operator_session(page, base, artefacts)
                    except Exception:
                        page.screenshot(path=str(artefacts / "failed.png"), full_page=True)
                        raise
                finally:
                    browser.close()

        dead.refresh_from_db()
        assert dead.status == "succeeded" and dead.attempt_count == 2
        assert [r.headers["webhook-id"] for r in server.received] == [
            server.received[0].headers["webhook-id"]
        ] * 2  # the same event, twice
    assert statuses == ("失败（死信）", "已送达")
    entry = AuditEntry.objects.get(action="delivery.replayed")
    assert entry.actor_id == str(operator.pk)
    for name in ("01-dashboard", "02-dead-letters", "03-dead-letter", "04-delivered"):
        assert (artefacts / f"{name}.png").stat().st_size > 10_000, name


def operator_session(page, base: str, artefacts) -> tuple[str, str]:
    """What the operator does in the browser; the delivery's status as the
    page shows it before and after the replay."""
    page.goto(f"{base}/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")

    # The dashboard: one dead letter waiting, linked to the list of them.
    dead_letters = page.locator(".dash-figure", has_text="待重放死信")
    expect(dead_letters.locator(".n")).to_have_text("1")
    expect(page.locator(".dash-figure", has_text="今日新办件").locator(".n")).to_have_text("1")
    page.screenshot(path=str(artefacts / "01-dashboard.png"), full_page=True)

    dead_letters.locator("a").click()
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    assert "application.submitted" in rows.first.inner_text()
    page.screenshot(path=str(artefacts / "02-dead-letters.png"), full_page=True)

    rows.first.locator("th a").click()
    status = page.locator(".field-status .readonly")
    before = status.inner_text()
    page.screenshot(path=str(artefacts / "03-dead-letter.png"), full_page=True)

    page.get_by_role("button", name="重新投递").click()
    expect(page.locator(".messagelist")).to_contain_text("已重新投递")

    def delivered() -> bool:
        page.reload()
        return status.inner_text() == "已送达"

    wait_for(delivered, timeout=60, interval=0.5, message="the replay was not delivered")
    page.screenshot(path=str(artefacts / "04-delivered.png"), full_page=True)
    return before, status.inner_text()

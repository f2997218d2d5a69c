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
from django.contrib import admin
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.utils import timezone
from playwright.sync_api import expect, sync_playwright
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.api_keys import api_key_create
from accounts.models import AuditEntry, Message, OtpChallenge
from payments.models import (
    LedgerEntry,
    NotifyLog,
    PaymentOrder,
    ReconciliationMismatch,
    ReconciliationReport,
    Refund,
)
from qr.models import ScanEvent
from services.models import (
    Application,
    Delivery,
    DeliveryAttempt,
    Endpoint,
    OutboxEvent,
    TimelineEntry,
)
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


def artefacts_in(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


@pytest.fixture
def artefacts():
    return artefacts_in(ARTEFACTS)


def operator_with_password():
    """The operator, with a password hashed as the web server (production
    settings) checks it, not with the tests' fast hasher."""
    hasher = PBKDF2PasswordHasher()
    return StaffFactory(
        username="operator",
        is_superuser=True,
        password=hasher.encode(STAFF_PASSWORD, hasher.salt(), iterations=1000),
    )


def log_in(page, base: str) -> None:
    page.goto(f"{base}/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")


def test_an_operator_replays_a_dead_letter_in_the_browser(tmp_path, artefacts) -> None:
    department = DepartmentFactory(code="hrss", name="长沙市人力资源和社会保障局")
    ServiceFactory(code="sbk-apply", name="社会保障卡申领", department=department)
    citizen = CitizenFactory(verified=True, phone="13800138000")
    operator = operator_with_password()
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
    log_in(page, base)

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


def a_day_of_records() -> None:
    """One row of every list, with values as long as real ones."""
    now = timezone.now()
    department = DepartmentFactory(code="hrss", name="长沙市人力资源和社会保障局")
    service = ServiceFactory(
        code="sbk-apply-first-time-or-replacement",
        name="社会保障卡申领（首次申领、补领、换领）",
        department=department,
    )
    citizen = CitizenFactory(verified=True, phone="13800138000")
    application = Application.objects.create(
        number="CS20261207000123",
        service=service,
        department=department,
        applicant=citizen,
        status="accepted",
        form={},
        due_date=now.date(),
    )
    TimelineEntry.objects.create(
        application=application, status="accepted", actor="department", actor_label="市人社局"
    )
    endpoint = Endpoint.objects.create(
        department=department,
        url="https://hrss-approval.changsha.gov.cn/api/v1/integration/my-changsha/events",
        events=[events.APPLICATION_SUBMITTED],
        secret="whsec_test",
        paused_at=now,
        pause_reason="10 consecutive failures, last: 503",
    )
    event = OutboxEvent.objects.create(
        type=events.APPLICATION_SUBMITTED, department=department, application=application, data={}
    )
    delivery = Delivery.objects.create(
        event=event,
        endpoint=endpoint,
        department=department,
        status="failed",
        attempt_count=9,
        last_status_code=503,
    )
    DeliveryAttempt.objects.create(
        delivery=delivery, number=1, started_at=now, duration_ms=10000, error="timeout"
    )
    order = PaymentOrder.objects.create(
        order_no="P20261207A1B2C3D4E5F6A7",
        application=application,
        payer=citizen,
        department=department,
        service=service,
        description=service.name,
        amount_fen=123456,
        channel="unionpay",
        status="partially_refunded",
        paid_fen=123456,
        refunded_fen=23456,
        provider_transaction_id="4200001234202612071234567890",
        expires_at=now,
    )
    LedgerEntry.objects.create(
        order=order,
        kind="charge",
        amount_fen=123456,
        channel="unionpay",
        reference="4200001234202612071234567890",
    )
    Refund.objects.create(
        refund_no="R20261207A1B2C3D4E5F6A7",
        order=order,
        amount_fen=23456,
        status="pending",
        reason="材料费减免，按窗口核定金额退回",
        requested_by="hrss 收费系统对接密钥",
    )
    NotifyLog.objects.create(
        channel="unionpay",
        outcome="applied",
        reason="",
        order_no=order.order_no,
        transaction_id="4200001234202612071234567890",
    )
    report = ReconciliationReport.objects.create(
        date=now.date(), channel="unionpay", statement_lines=12034, ledger_entries=12033
    )
    ReconciliationMismatch.objects.create(
        report=report,
        kind="missing_in_ledger",
        entry_kind="charge",
        order_no=order.order_no,
        reference="4200001234202612071234567890",
        theirs={"amount_fen": 123456, "state": "SUCCESS"},
    )
    ScanEvent.objects.create(
        source="offline",
        scanned_at=now,
        place="芙蓉区政务服务中心一楼 3 号窗口",
        kind="citizen",
        valid=False,
        reason="account_inactive",
        subject="s" * 40,
    )
    Message.objects.create(
        user=citizen,
        kind="application.accepted",
        title={"zh-hans": "您的办件已受理", "en": "Your application was accepted"},
        body={"zh-hans": "办件 CS20261207000123 已受理", "en": "Accepted"},
    )
    OtpChallenge.objects.create(
        phone="13800138000", code_hash="x", ip="2408:8000:1234:5678::1", expires_at=now
    )
    api_key_create(department=department, scope="integrator", name="审批系统对接（生产环境）")


def test_every_operators_list_fits_a_1366_px_screen() -> None:
    """With its filters beside it, no list needs a horizontal scroll bar
    (a cut-off column is the operator's missing figure)."""
    a_day_of_records()
    operator_with_password()
    lists = sorted(
        f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for model in admin.site._registry
        if model._meta.app_label in ("accounts", "services", "payments", "qr")
    )
    folder = artefacts_in(ROOT / "var" / "artefacts" / "admin-lists")
    too_wide = {}
    with web_server() as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page(viewport=SCREEN, locale="zh-CN")
            log_in(page, base)
            for url in lists:
                page.goto(f"{base}{url}")
                expect(page.locator("#changelist")).to_be_visible()
                page.screenshot(path=str(folder / f"{url.strip('/').replace('/', '-')}.png"))
                width = page.evaluate(
                    "() => { const r = document.querySelector('#changelist .results');"
                    " return r ? [r.scrollWidth, r.clientWidth] : [0, 0]; }"
                )
                if width[0] > width[1]:
                    too_wide[url] = width
        finally:
            browser.close()
    assert len(lists) > 20
    assert too_wide == {}

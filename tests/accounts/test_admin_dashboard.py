"""The operator's dashboard (the admin's index): today's and this week's
figures in China time, each linking to the list it counts; figures of
records a staff member may not view are not shown to them; the cost in
queries does not grow with the data."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from accounts import dashboard
from accounts.models import User
from payments.models import LedgerEntry, PaymentOrder, Refund
from qr.models import ScanEvent
from services.models import Application, Delivery, Endpoint, OutboxEvent, Service
from services.workdays import working_days_add
from tests.accounts.factories import CitizenFactory, DepartmentFactory, StaffFactory
from tests.services.factories import ServiceFactory

pytestmark = pytest.mark.django_db

CHINA = dashboard.CHINA
# A Wednesday, 10:30 in Changsha: "today" began at 00:00 (16:00 UTC the day
# before), "this week" on Monday the 23rd.
NOW = dt.datetime(2026, 11, 25, 10, 30, tzinfo=CHINA)
TODAY = NOW.replace(hour=0, minute=30)  # early today, China time (yesterday in UTC)
THIS_WEEK = dt.datetime(2026, 11, 23, 9, 0, tzinfo=CHINA)  # Monday
LAST_WEEK = dt.datetime(2026, 11, 22, 23, 30, tzinfo=CHINA)  # Sunday night
numbers = itertools.count(1)


@pytest.fixture(autouse=True)
def frozen_periods(monkeypatch):
    """The dashboard counts as of NOW (rows are made now, dated by hand)."""
    at = dashboard.Periods.at.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        dashboard.Periods, "at", classmethod(lambda cls, now=None: at(cls, now or NOW))
    )


@pytest.fixture
def world(db):
    hrss = DepartmentFactory(code="hrss", name="市人社局")
    gjj = DepartmentFactory(code="gjj", name="公积金中心")
    return {
        "hrss": hrss,
        "gjj": gjj,
        "sbk": ServiceFactory(code="sbk-apply", department=hrss),
        "tq": ServiceFactory(code="gjj-withdraw", department=gjj),
        "citizen": CitizenFactory(verified=True),
    }


def application(
    service: Service, citizen: User, status: str, at: dt.datetime, **fields
) -> Application:
    return Application.objects.create(
        number=f"CS-T{next(numbers):06d}",
        service=service,
        department=service.department,
        applicant=citizen,
        status=status,
        form={},
        created_at=at,
        **fields,
    )


def endpoint(department, url: str, **fields) -> Endpoint:
    return Endpoint.objects.create(
        department=department,
        url=url,
        events=["application.submitted"],
        secret="whsec_test",
        **fields,
    )


def delivery(target: Endpoint, status: str, at: dt.datetime) -> Delivery:
    event = OutboxEvent.objects.create(
        type="application.submitted", department=target.department, data={}, created_at=at
    )
    return Delivery.objects.create(
        event=event, endpoint=target, department=target.department, status=status, created_at=at
    )


def order(world, amount_fen: int) -> PaymentOrder:
    paid = application(world["sbk"], world["citizen"], "submitted", NOW, fee_fen=amount_fen)
    return PaymentOrder.objects.create(
        order_no=f"P{next(numbers):08d}",
        application=paid,
        payer=world["citizen"],
        department=paid.department,
        service=paid.service,
        description="测试",
        amount_fen=amount_fen,
        channel="wechat",
        status="paid",
        paid_fen=amount_fen,
        expires_at=NOW,
    )


def ledger(paid: PaymentOrder, kind: str, fen: int, at: dt.datetime) -> None:
    LedgerEntry.objects.create(
        order=paid,
        kind=kind,
        amount_fen=fen,
        channel=paid.channel,
        reference=f"R{next(numbers)}",
        at=at,
    )


def scan(at: dt.datetime, *, valid: bool = True) -> None:
    ScanEvent.objects.create(
        source="online", scanned_at=at, valid=valid, reason="" if valid else "expired"
    )


def page(client) -> str:
    response = client.get("/admin/")
    assert response.status_code == 200
    return response.content.decode()


def figure(html: str, label: str) -> tuple[str, str | None]:
    """The value of the figure ``label`` and where it links."""
    match = re.search(
        r'<div class="dash-figure[^"]*">\s*(?:<a href="([^"]*)">)?<span class="n">([^<]*)</span>'
        r'(?:</a>)?\s*<span class="t">' + re.escape(label) + "</span>",
        html,
    )
    assert match, f"no figure {label!r}"
    return match.group(2), unescape(match.group(1)) if match.group(1) else None


def query(url: str | None) -> dict[str, str]:
    assert url
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def listed(client, url: str | None) -> int:
    """How many rows the changelist at ``url`` shows (it must accept the filter)."""
    assert url
    response = client.get(url)
    assert response.status_code == 200, url
    return len(response.context["cl"].result_list)


# --- Applications ------------------------------------------------------------------------


def test_applications_today_and_this_week_in_china_days(operator_client, world) -> None:
    sbk, tq, citizen = world["sbk"], world["tq"], world["citizen"]
    application(sbk, citizen, "submitted", TODAY)  # 00:30 today in Changsha: today
    application(sbk, citizen, "routed", NOW - dt.timedelta(minutes=5))
    application(tq, citizen, "submitted", THIS_WEEK)
    application(tq, citizen, "completed", THIS_WEEK)
    application(sbk, citizen, "submitted", LAST_WEEK)  # before Monday: not this week
    html = page(operator_client)

    today, today_url = figure(html, "今日新办件")
    week, week_url = figure(html, "本周新办件")
    assert (today, week) == ("2", "4")
    assert listed(operator_client, today_url) == 2
    assert listed(operator_client, week_url) == 4
    assert query(today_url)["created_at__gte"].startswith("2026-11-25 00:00:00+08:00")


def test_each_status_bar_links_to_its_filtered_list(operator_client, world) -> None:
    sbk, citizen = world["sbk"], world["citizen"]
    for _ in range(3):
        application(sbk, citizen, "submitted", THIS_WEEK)
    application(sbk, citizen, "submitted", TODAY)
    application(sbk, citizen, "routed", TODAY)
    application(sbk, citizen, "submitted", LAST_WEEK)
    html = page(operator_client)

    bar = re.search(
        r'<a href="([^"]*status__exact=submitted[^"]*)"><g><title>([^<]*)</title>', html
    )
    assert bar, "no bar for submitted applications"
    assert unescape(bar.group(2)) == "已提交：本周 4，今日 1"
    assert listed(operator_client, unescape(bar.group(1))) == 4


def test_departments_this_week_and_their_deadlines(operator_client, world) -> None:
    sbk, tq, citizen = world["sbk"], world["tq"], world["citizen"]
    today = timezone.localdate()
    late = today - dt.timedelta(days=2)
    soon = working_days_add(today, 1)
    later = working_days_add(today, 10)
    for due in (late, late, soon):
        application(sbk, citizen, "accepted", LAST_WEEK, due_date=due)
    application(tq, citizen, "accepted", LAST_WEEK, due_date=soon)
    application(tq, citizen, "accepted", LAST_WEEK, due_date=later)  # on track
    application(tq, citizen, "needs_info", LAST_WEEK, due_date=late)  # clock stopped
    application(tq, citizen, "submitted", THIS_WEEK)
    html = page(operator_client)

    overdue, overdue_url = figure(html, "已超期")
    due_soon, due_soon_url = figure(html, "3 个工作日内到期")
    assert (overdue, due_soon) == ("2", "2")
    assert query(overdue_url) == {"deadline": "overdue"}
    assert listed(operator_client, overdue_url) == 2
    assert listed(operator_client, due_soon_url) == 2
    # Per department: the overdue link of hrss lists hrss's two.
    link = re.search(
        r'<td class="dash-cell u" title="市人社局">市人社局</td>'
        r'<td class="dash-cell bad"><a href="([^"]*)">2</a>',
        html,
    )
    assert link, "no overdue cell for hrss"
    assert query(unescape(link.group(1))) == {
        "deadline": "overdue",
        "department__id__exact": str(world["hrss"].pk),
    }
    assert listed(operator_client, unescape(link.group(1))) == 2
    # This week by department: gjj made one.
    bar = re.search(r'<a href="([^"]*)"><g><title>公积金中心：本周 1，今日 0</title>', html)
    assert bar
    assert listed(operator_client, unescape(bar.group(1))) == 1


# --- Deliveries and endpoints ------------------------------------------------------------------


def test_delivery_success_rate_and_dead_letters_per_endpoint(operator_client, world) -> None:
    good = endpoint(world["hrss"], "https://hrss.example.cn/events")
    flaky = endpoint(world["gjj"], "https://gjj.example.cn/hook")
    endpoint(world["gjj"], "https://gjj.example.cn/old", paused_at=NOW, pause_reason="10 failures")
    endpoint(world["hrss"], "https://hrss.example.cn/gone", is_active=False)
    for _ in range(3):
        delivery(good, "succeeded", THIS_WEEK)
    delivery(flaky, "succeeded", TODAY)
    delivery(flaky, "failed", TODAY)
    delivery(flaky, "failed", LAST_WEEK)  # still a dead letter, not this week's rate
    delivery(flaky, "pending", TODAY)  # not finished: not in the rate
    delivery(good, "failed", LAST_WEEK - dt.timedelta(days=30))
    html = page(operator_client)

    rate, _ = figure(html, "本周送达率")
    assert rate == "80.0 %"  # 4 of 5 finished this week
    dead, dead_url = figure(html, "待重放死信")
    assert dead == "3"
    assert listed(operator_client, dead_url) == 3
    paused, paused_url = figure(html, "熔断暂停的地址")
    assert paused == "1"
    assert listed(operator_client, paused_url) == 1
    disabled, disabled_url = figure(html, "已停用的地址")
    assert disabled == "1"
    assert listed(operator_client, disabled_url) == 1
    # The flaky endpoint's row: 50 % this week, two dead letters, linked.
    row = re.search(
        r'title="公积金中心 · https://gjj.example.cn/hook">.*?</tr>', html, flags=re.DOTALL
    )
    assert row
    assert "50.0 %" in row.group(0)
    link = re.search(r'<a href="([^"]*)">2</a>', row.group(0))
    assert link
    assert query(unescape(link.group(1))) == {
        "endpoint__id__exact": str(flaky.pk),
        "status__exact": "failed",
    }
    assert listed(operator_client, unescape(link.group(1))) == 2


# --- Money and scans ---------------------------------------------------------------------------


def test_payments_and_refunds_today_and_this_week(operator_client, world) -> None:
    paid = order(world, 2000)
    ledger(paid, "charge", 2000, TODAY)
    ledger(order(world, 1550), "charge", 1550, THIS_WEEK)
    ledger(order(world, 99900), "charge", 99900, LAST_WEEK)
    ledger(paid, "refund", 500, TODAY)
    Refund.objects.create(refund_no="RF1", order=paid, amount_fen=300, status="pending")
    html = page(operator_client)

    assert figure(html, "今日收款")[0] == "¥20.00"
    assert figure(html, "本周收款")[0] == "¥35.50"
    assert figure(html, "今日退款")[0] == "¥5.00"
    assert figure(html, "本周退款")[0] == "¥5.00"
    pending, pending_url = figure(html, "退款处理中")
    assert pending == "1"
    assert listed(operator_client, pending_url) == 1
    assert listed(operator_client, figure(html, "本周收款")[1]) == 2
    assert listed(operator_client, figure(html, "今日退款")[1]) == 1


def test_scans_per_hour_over_the_last_day(operator_client) -> None:
    scan(NOW - dt.timedelta(minutes=10))
    scan(NOW - dt.timedelta(minutes=20), valid=False)
    scan(NOW - dt.timedelta(hours=3))
    scan(NOW - dt.timedelta(hours=30))  # older than a day
    html = page(operator_client)

    total, total_url = figure(html, "近 24 小时扫码")
    invalid, invalid_url = figure(html, "其中无效")
    assert (total, invalid) == ("3", "1")
    assert listed(operator_client, total_url) == 3
    assert listed(operator_client, invalid_url) == 1
    # The 10:00 hour (China time) has two scans, one invalid.
    bar = re.search(
        r'<a href="([^"]*)"><g><title>11-25 10:00–11:00 扫码 2 次，无效 1 次</title>', html
    )
    assert bar
    assert listed(operator_client, unescape(bar.group(1))) == 2


# --- Who sees what, and what it costs ----------------------------------------------------------


def staff_with(*perms: str) -> User:
    staff = StaffFactory()
    for perm in perms:
        app_label, codename = perm.split(".")
        staff.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return staff


def test_staff_see_only_the_figures_of_what_they_may_view(client, world) -> None:
    client.force_login(staff_with("payments.view_ledgerentry", "payments.view_refund"))
    html = page(client)
    assert "今日收款" in html
    for other in ("今日新办件", "本周送达率", "近 24 小时扫码", "各部门办件"):
        assert other not in html


def test_staff_without_view_permissions_see_no_figures(client, world) -> None:
    client.force_login(staff_with("services.view_application"))
    html = page(client)
    assert "今日新办件" in html
    assert "各部门办件" in html
    for other in ("本周送达率", "今日收款", "近 24 小时扫码"):
        assert other not in html
    client.force_login(staff_with())
    assert "您的权限不含任何运行数据" in page(client)


def test_the_app_list_puts_the_operators_apps_first(operator_client) -> None:
    html = page(operator_client)
    apps = re.findall(r'class="app-([a-z_]+) module', html)
    assert apps[:4] == ["services", "payments", "qr", "accounts"]
    assert apps.index("token_blacklist") > apps.index("accounts")
    assert apps.index("django_celery_beat") > apps.index("accounts")


def test_the_dashboard_costs_the_same_queries_however_much_data(
    operator_client, world, django_assert_max_num_queries
) -> None:
    def seed(n: int) -> None:
        targets = [endpoint(world["hrss"], f"https://hrss.example.cn/{i}") for i in range(n)]
        for i in range(n):
            application(world["sbk"], world["citizen"], "submitted", THIS_WEEK)
            delivery(targets[i], "failed", TODAY)
            ledger(order(world, 100), "charge", 100, TODAY)
            scan(NOW - dt.timedelta(hours=i % 24))

    seed(2)
    with django_assert_max_num_queries(13) as small:
        page(operator_client)
    seed(30)
    with django_assert_max_num_queries(len(small.captured_queries)):
        page(operator_client)


def test_every_link_of_the_dashboard_opens(operator_client, world) -> None:
    """Each figure, bar and row links to a list that takes its filter (a
    list refuses lookups it does not offer: a link must use one it does)."""
    links = sorted(
        {
            unescape(href)
            for href in re.findall(r'href="(/admin/[^"]+)"', page(operator_client))
            if "?" in href
        }
    )
    assert len(links) > 15
    refused = [
        (url, status) for url in links if (status := operator_client.get(url).status_code) != 200
    ]
    assert refused == []

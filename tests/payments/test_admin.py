"""Operators in the payments admin: read-only orders, refunds asked for with
permission and within what was paid, mismatches resolved with a note and
audited, and the daily settlement."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.utils import timezone

from accounts.models import AuditEntry, User
from payments import reconciliation, selectors
from payments.models import (
    LedgerEntry,
    NotifyLog,
    PaymentOrder,
    ReconciliationMismatch,
    ReconciliationReport,
    Refund,
    SandboxRefund,
    SandboxTrade,
)
from services.models import Service
from tests.accounts.factories import StaffFactory
from tests.payments import test_reconcile as stories
from tests.payments.test_reconcile import FEE, PayOrder, today
from tests.services.factories import ServiceFactory

pytestmark = pytest.mark.django_db

# The props of the reconciliation stories: orders paid through the real flow.
fee_service = stories.fee_service
pay_order = stories.pay_order
refund_settled = stories.refund_settled

ORDERS = "/admin/payments/paymentorder/"
MISMATCHES = "/admin/payments/reconciliationmismatch/"
SETTLEMENT = "/admin/payments/paymentorder/settlement/"


def staff_with(*codenames: str, username: str = "clerk") -> User:
    staff = StaffFactory(username=username)
    staff.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="payments", codename__in=codenames)
    )
    return staff


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def paid(pay_order: PayOrder) -> PaymentOrder:
    return pay_order("wechat")


@pytest.fixture
def lost_report(pay_order: PayOrder) -> ReconciliationReport:
    """A day whose alipay statement shows a payment we never heard of."""
    pay_order("alipay", heard=False)
    (report,) = reconciliation.reconcile(date=today(), channels=["alipay"])
    assert report.mismatches == 1
    return report


# --- Every page answers, none can be saved -----------------------------------------------------


def test_every_payments_page_renders_for_the_operator(
    operator_client, paid, refund_settled, lost_report
) -> None:
    refund = refund_settled(paid, 500)
    NotifyLog.objects.create(channel="wechat", outcome="rejected", reason="bad_signature")
    objects = {
        "paymentorder": paid,
        "ledgerentry": LedgerEntry.objects.first(),
        "refund": refund,
        "notifylog": NotifyLog.objects.first(),
        "reconciliationreport": lost_report,
        "reconciliationmismatch": lost_report.items.get(),
        "sandboxtrade": SandboxTrade.objects.first(),
        "sandboxrefund": SandboxRefund.objects.first(),
    }
    for model, obj in objects.items():
        listing = operator_client.get(f"/admin/payments/{model}/")
        assert listing.status_code == 200, model
        page = operator_client.get(f"/admin/payments/{model}/{obj.pk}/change/")
        assert page.status_code == 200, model
        html = page.content.decode()
        # Read-only: no Save buttons, no delete link; and nothing can be added.
        assert 'name="_save"' not in html and 'name="_continue"' not in html, model
        assert "/delete/" not in html, model
        assert operator_client.get(f"/admin/payments/{model}/add/").status_code == 403, model
    assert operator_client.get(SETTLEMENT).status_code == 200
    assert operator_client.get(f"{ORDERS}{paid.pk}/refund/").status_code == 200


def test_the_order_list_shows_yuan_and_finds_by_application_number(operator_client, paid) -> None:
    html = operator_client.get(ORDERS, {"q": paid.application.number}).content.decode()
    assert paid.order_no in html and "20.00" in html
    detail = operator_client.get(f"{ORDERS}{paid.pk}/change/").content.decode()
    assert "138****8000" in detail and "13800138000" not in detail  # the payer, masked
    by_transaction = operator_client.get(ORDERS, {"q": paid.provider_transaction_id})
    assert paid.order_no in by_transaction.content.decode()
    assert SETTLEMENT in operator_client.get(ORDERS).content.decode()


def test_the_notify_log_links_to_its_order(operator_client, paid) -> None:
    NotifyLog.objects.create(
        channel="wechat", outcome="duplicate", reason="", order_no=paid.order_no
    )
    html = operator_client.get("/admin/payments/notifylog/").content.decode()
    assert f"{ORDERS}?q={paid.order_no}" in html and "重复通知" in html


# --- Refunds from the admin ---------------------------------------------------------------------


def test_the_refund_action_leads_to_a_form_with_the_refundable_remainder(
    operator_client, paid
) -> None:
    response = operator_client.post(
        ORDERS, {"action": "refund_selected", "_selected_action": [str(paid.pk)]}
    )
    assert response.status_code == 302
    assert response["Location"] == f"{ORDERS}{paid.pk}/refund/"
    form = operator_client.get(response["Location"])
    assert form.context["form"].initial["amount_fen"] == FEE
    # The change page offers the same form as an object tool.
    assert (
        f"{ORDERS}{paid.pk}/refund/"
        in operator_client.get(f"{ORDERS}{paid.pk}/change/").content.decode()
    )


def test_an_operator_refunds_part_of_an_order(
    operator_client, operator, paid, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            f"{ORDERS}{paid.pk}/refund/",
            {"amount_fen": "500", "reason": "多收工本费", "reserved_fen": "0"},
            REMOTE_ADDR="10.3.4.5",
        )
    assert response.status_code == 302 and response["Location"] == f"{ORDERS}{paid.pk}/change/"
    refund = Refund.objects.get(order=paid)
    assert (refund.amount_fen, refund.reason, refund.requested_by) == (
        500,
        "多收工本费",
        "operator",
    )
    entry = AuditEntry.objects.get(action="payment.refund_requested")
    assert entry.actor_id == str(operator.pk) and entry.actor_kind == "operator"
    assert entry.ip == "10.3.4.5"
    assert any(refund.refund_no in m for m in messages_of(response))
    # What is left to refund is what the form offers next.
    again = operator_client.get(f"{ORDERS}{paid.pk}/refund/")
    assert again.context["form"].initial["amount_fen"] == FEE - 500


def test_the_refund_form_sent_twice_refunds_once(operator_client, paid) -> None:
    page = operator_client.get(f"{ORDERS}{paid.pk}/refund/")
    fields = {**page.context["form"].initial, "amount_fen": "500", "reason": "多收工本费"}
    assert 'type="hidden" name="reserved_fen"' in page.content.decode()

    first = operator_client.post(f"{ORDERS}{paid.pk}/refund/", fields)
    again = operator_client.post(f"{ORDERS}{paid.pk}/refund/", fields)  # a double click

    assert first.status_code == 302
    assert again.status_code == 200
    assert any("refund_not_allowed" in message for message in messages_of(again))
    assert list(Refund.objects.filter(order=paid).values_list("amount_fen", flat=True)) == [500]
    # The page shown again knows of the first refund and leaves the amount
    # empty: one more click sends nothing; an amount typed again refunds.
    page = again.content.decode()
    shown = re.search(r'name="reserved_fen" value="(\d+)"', page)
    assert shown is not None and shown.group(1) == "500"
    assert re.search(r'name="amount_fen"[^>]*value="', page) is None
    clicked = {"reserved_fen": shown.group(1), "amount_fen": "", "reason": "多收工本费"}
    assert operator_client.post(f"{ORDERS}{paid.pk}/refund/", clicked).status_code == 200
    assert Refund.objects.filter(order=paid).count() == 1
    typed = {**clicked, "amount_fen": "500", "reason": "再退"}
    assert operator_client.post(f"{ORDERS}{paid.pk}/refund/", typed).status_code == 302
    assert Refund.objects.filter(order=paid).count() == 2


def test_a_refund_form_without_what_it_was_shown_refunds_nothing(operator_client, paid) -> None:
    """The form carries what was refunded when it was shown (the guard
    against sending it twice): a post without it is not a refund."""
    response = operator_client.post(
        f"{ORDERS}{paid.pk}/refund/", {"amount_fen": "500", "reason": "多收工本费"}
    )
    assert response.status_code == 200
    assert not Refund.objects.exists()
    # Shown afresh, with its guard: sent as shown, it refunds.
    shown = re.search(r'name="reserved_fen" value="(\d+)"', response.content.decode())
    assert shown is not None and shown.group(1) == "0"
    again = {"reserved_fen": shown.group(1), "amount_fen": "500", "reason": "多收工本费"}
    assert operator_client.post(f"{ORDERS}{paid.pk}/refund/", again).status_code == 302
    assert Refund.objects.count() == 1


def test_a_refund_above_what_is_left_is_refused_with_a_message(operator_client, paid) -> None:
    response = operator_client.post(
        f"{ORDERS}{paid.pk}/refund/",
        {"amount_fen": str(FEE + 1), "reason": "多退", "reserved_fen": "0"},
    )
    assert response.status_code == 200
    assert not Refund.objects.exists()
    (message,) = messages_of(response)
    assert "refund_exceeds_paid" in message and str(FEE) in message
    assert not AuditEntry.objects.filter(action="payment.refund_requested").exists()


def test_an_unpaid_order_cannot_be_refunded(operator_client, pay_order) -> None:
    pending = pay_order("alipay", heard=False)
    response = operator_client.post(
        f"{ORDERS}{pending.pk}/refund/",
        {"amount_fen": "100", "reason": "测试", "reserved_fen": "0"},
    )
    assert "refund_not_allowed" in messages_of(response)[0]
    assert not Refund.objects.exists()
    assert (
        f"{ORDERS}{pending.pk}/refund/"
        not in operator_client.get(f"{ORDERS}{pending.pk}/change/").content.decode()
    )


def test_staff_without_the_refund_permission_cannot_refund(client, paid) -> None:
    viewer = staff_with("view_paymentorder", "view_refund", "view_ledgerentry")
    client.force_login(viewer)
    listing = client.get(ORDERS)
    assert listing.status_code == 200
    assert "refund_selected" not in listing.content.decode()
    page = client.get(f"{ORDERS}{paid.pk}/change/")
    assert page.status_code == 200 and f"{ORDERS}{paid.pk}/refund/" not in page.content.decode()
    assert client.get(f"{ORDERS}{paid.pk}/refund/").status_code == 403
    assert (
        client.post(f"{ORDERS}{paid.pk}/refund/", {"amount_fen": "100", "reason": "x"}).status_code
        == 403
    )
    client.post(ORDERS, {"action": "refund_selected", "_selected_action": [str(paid.pk)]})
    assert not Refund.objects.exists()


def test_staff_with_the_refund_permission_may_refund(client, paid) -> None:
    cashier = staff_with("view_paymentorder", "add_refund", username="cashier")
    client.force_login(cashier)
    response = client.post(
        f"{ORDERS}{paid.pk}/refund/", {"amount_fen": "100", "reason": "退差额", "reserved_fen": "0"}
    )
    assert response.status_code == 302
    assert Refund.objects.get().requested_by == "cashier"


# --- Mismatches ---------------------------------------------------------------------------------


def test_marking_mismatches_resolved_asks_for_a_note_and_is_audited(
    operator_client, operator, lost_report
) -> None:
    item = lost_report.items.get()
    asked = operator_client.post(
        MISMATCHES, {"action": "resolve", "_selected_action": [str(item.pk)]}
    )
    assert asked.status_code == 200
    assert 'name="note"' in asked.content.decode() and item.order_no in asked.content.decode()
    item.refresh_from_db()
    assert item.resolved_at is None

    without_note = operator_client.post(
        MISMATCHES, {"action": "resolve", "apply": "1", "_selected_action": [str(item.pk)]}
    )
    assert without_note.status_code == 200
    item.refresh_from_db()
    assert item.resolved_at is None

    done = operator_client.post(
        MISMATCHES,
        {
            "action": "resolve",
            "apply": "1",
            "note": "通知丢失，已补记",
            "_selected_action": [str(item.pk)],
        },
        REMOTE_ADDR="10.3.4.6",
    )
    assert done.status_code == 302
    item.refresh_from_db()
    assert item.resolved_at is not None
    assert (item.resolved_by, item.resolution_note) == ("operator", "通知丢失，已补记")
    entry = AuditEntry.objects.get(action="payment.reconciliation_mismatch_resolved")
    assert entry.actor_id == str(operator.pk) and entry.target_id == str(item.pk)
    assert entry.ip == "10.3.4.6"
    resolved = operator_client.get(MISMATCHES, {"resolved": "yes"}).content.decode()
    assert item.order_no in resolved
    assert item.order_no not in operator_client.get(MISMATCHES, {"resolved": "no"}).content.decode()


def test_staff_who_may_only_look_cannot_resolve_mismatches(client, lost_report) -> None:
    client.force_login(staff_with("view_reconciliationmismatch", "view_reconciliationreport"))
    item = lost_report.items.get()
    listing = client.get(MISMATCHES)
    assert listing.status_code == 200 and 'value="resolve"' not in listing.content.decode()
    client.post(
        MISMATCHES,
        {"action": "resolve", "apply": "1", "note": "x", "_selected_action": [str(item.pk)]},
    )
    item.refresh_from_db()
    assert item.resolved_at is None
    assert not AuditEntry.objects.filter(action="payment.reconciliation_mismatch_resolved").exists()
    report = client.get(f"/admin/payments/reconciliationreport/{lost_report.pk}/change/")
    assert report.status_code == 200 and item.reference in report.content.decode()


def test_staff_with_the_change_permission_resolve_mismatches(client, lost_report) -> None:
    client.force_login(staff_with("view_reconciliationmismatch", "change_reconciliationmismatch"))
    item = lost_report.items.get()
    client.post(
        MISMATCHES,
        {"action": "resolve", "apply": "1", "note": "已核实", "_selected_action": [str(item.pk)]},
    )
    assert ReconciliationMismatch.objects.get().resolution_note == "已核实"


def test_an_operator_resolves_a_mismatch_from_its_page(
    operator_client, operator, lost_report
) -> None:
    item = lost_report.items.get()
    page = f"{MISMATCHES}{item.pk}/change/"
    resolve = f"{MISMATCHES}{item.pk}/resolve/"
    html = operator_client.get(page).content.decode()
    assert f'href="{resolve}"' in html and 'name="_save"' not in html
    asked = operator_client.get(resolve).content.decode()
    assert 'name="note"' in asked and item.order_no in asked
    assert operator_client.post(resolve, {"note": "  "}).status_code == 200  # a note is needed
    item.refresh_from_db()
    assert item.resolved_at is None

    done = operator_client.post(resolve, {"note": "渠道延迟入账，次日已到"})
    assert done.status_code == 302 and done.url == page
    item.refresh_from_db()
    assert (item.resolved_by, item.resolution_note) == ("operator", "渠道延迟入账，次日已到")
    entry = AuditEntry.objects.get(action="payment.reconciliation_mismatch_resolved")
    assert entry.actor_id == str(operator.pk) and entry.target_id == str(item.pk)
    assert f'href="{resolve}"' not in operator_client.get(page).content.decode()
    again = operator_client.post(resolve, {"note": "再次处理"})
    assert again.status_code == 302
    item.refresh_from_db()
    assert item.resolution_note == "渠道延迟入账，次日已到"  # the first resolution stands


def test_staff_who_may_only_look_get_no_resolve_button(client, lost_report) -> None:
    client.force_login(staff_with("view_reconciliationmismatch"))
    item = lost_report.items.get()
    resolve = f"{MISMATCHES}{item.pk}/resolve/"
    assert resolve not in client.get(f"{MISMATCHES}{item.pk}/change/").content.decode()
    assert client.get(resolve).status_code == 403
    assert client.post(resolve, {"note": "x"}).status_code == 403
    item.refresh_from_db()
    assert item.resolved_at is None


# --- Daily settlement ---------------------------------------------------------------------------


@pytest.fixture
def other_fee_service(other_department, category) -> Service:
    return ServiceFactory(
        code="gjj-cert",
        name="公积金缴存证明",
        department=other_department,
        category=category,
        fee_fen=800,
    )


def test_the_settlement_sums_the_ledger_per_day_and_channel(
    operator_client, pay_order, refund_settled, other_fee_service, department
) -> None:
    wechat = pay_order("wechat")
    pay_order("wechat")
    alipay = pay_order("alipay")
    refund_settled(alipay, 350)
    pay_order("wechat", service=other_fee_service)
    # Yesterday (China time), late in the evening: its own row.
    yesterday = today() - dt.timedelta(days=1)
    LedgerEntry.objects.create(
        order=wechat,
        kind="refund",
        amount_fen=120,
        channel="wechat",
        reference="RYESTERDAY",
        at=dt.datetime.combine(yesterday, dt.time(23, 50), tzinfo=selectors.CHINA),
    )
    # Long ago: outside the range.
    LedgerEntry.objects.create(
        order=wechat,
        kind="charge",
        amount_fen=99_999,
        channel="wechat",
        reference="OLD",
        at=timezone.now() - dt.timedelta(days=40),
    )

    response = operator_client.get(SETTLEMENT)
    assert response.status_code == 200
    rows = {(r["date"], r["channel"]): r for r in response.context["rows"]}
    assert set(rows) == {(yesterday, "wechat"), (today(), "wechat"), (today(), "alipay")}
    wechat_today = rows[(today(), "wechat")]
    assert (wechat_today["paid_fen"], wechat_today["paid_count"]) == (2 * FEE + 800, 3)
    assert (wechat_today["refunded_fen"], wechat_today["net"]) == (0, "48.00")
    alipay_today = rows[(today(), "alipay")]
    assert (alipay_today["paid"], alipay_today["refunded"], alipay_today["net"]) == (
        "20.00",
        "3.50",
        "16.50",
    )
    assert alipay_today["refunded_count"] == 1
    assert rows[(yesterday, "wechat")]["net"] == "-1.20"
    totals = response.context["totals"]
    assert (totals["paid"], totals["refunded"], totals["net"]) == ("68.00", "4.70", "63.30")
    assert "63.30" in response.content.decode()

    hrss = operator_client.get(
        SETTLEMENT,
        {
            "date_from": today().isoformat(),
            "date_to": today().isoformat(),
            "department": department.pk,
            "channel": "wechat",
        },
    )
    (row,) = hrss.context["rows"]
    assert (row["channel"], row["paid_fen"], row["paid_count"]) == ("wechat", 2 * FEE, 2)


def test_a_backwards_range_is_refused_on_the_form(operator_client) -> None:
    response = operator_client.get(
        SETTLEMENT, {"date_from": today().isoformat(), "date_to": "2020-01-01"}
    )
    assert response.status_code == 200 and response.context["rows"] == []
    assert "起始日期不能晚于截止日期" in response.content.decode()


@pytest.mark.parametrize("date", ["0001-01-01", "9999-12-31"])
def test_the_calendars_first_and_last_days_are_refused_on_the_form(operator_client, date) -> None:
    response = operator_client.get(SETTLEMENT, {"date_from": date, "date_to": date})
    assert response.status_code == 200 and response.context["rows"] == []
    assert response.context["form"].errors.keys() == {"date_from", "date_to"}


def test_the_settlement_needs_the_ledger_view_permission(client) -> None:
    client.force_login(staff_with("view_paymentorder"))
    assert client.get(SETTLEMENT).status_code == 403

"""Reconciliation: each channel's statement of a day against our ledger,
mismatches stored for the operators, and the ``reconcile`` command."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import AuditEntry, User
from payments import orders, reconciliation, refunds, selectors
from payments.models import (
    LedgerEntry,
    MismatchKind,
    PaymentOrder,
    ReconciliationMismatch,
    ReconciliationReport,
    Refund,
    SandboxRefund,
)
from payments.providers import provider_for
from payments.providers.base import ProviderError, StatementLine
from payments.sandbox import books, notify
from payments.sandbox.alipay import AlipaySandbox
from payments.sandbox.wechat import WechatSandbox
from services import applications
from services.models import Service
from tests.accounts.factories import StaffFactory
from tests.services.factories import ServiceFactory

pytestmark = pytest.mark.django_db

CHANNELS = ("wechat", "alipay", "unionpay")
FEE = 2000
FORM = {"reason": "首次申领", "phone": "13800138000"}

PayOrder = Callable[..., PaymentOrder]


# --- The props: orders paid through the real flow ------------------------------------------------


@pytest.fixture
def fee_service(department, category) -> Service:
    """居民身份证换领, 20.00 yuan, of the fixture department (hrss)."""
    return ServiceFactory(
        code="id-card-renew",
        name="居民身份证换领",
        department=department,
        category=category,
        fee_fen=FEE,
    )


@pytest.fixture
def pay_order(citizen, fee_service, django_capture_on_commit_callbacks) -> PayOrder:
    """The citizen applies, opens an order and pays it in the sandbox
    wallet; with ``heard`` the channel's callback reaches us (in process),
    without it the callback is lost and only the channel knows."""

    def paying(
        channel: str = "wechat", *, service: Service | None = None, heard: bool = True
    ) -> PaymentOrder:
        application = applications.application_submit(
            citizen=citizen, service=service or fee_service, form=dict(FORM)
        )
        order, _ = orders.order_create(
            citizen=citizen, application_id=application.pk, channel=channel
        )
        with django_capture_on_commit_callbacks(execute=heard):
            notify.payment_pay(channel=channel, order_no=order.order_no, succeed=True)
        order.refresh_from_db()
        assert order.status == ("paid" if heard else "pending"), order.status
        return order

    return paying


@pytest.fixture
def refund_settled(django_capture_on_commit_callbacks) -> Callable[[PaymentOrder, int], Refund]:
    """A refund asked for, sent to the channel and settled there and here."""

    def refunding(order: PaymentOrder, amount_fen: int) -> Refund:
        with django_capture_on_commit_callbacks(execute=True):
            refund = orders.refund_request(
                order=order,
                amount_fen=amount_fen,
                reason="办件撤回",
                actor=None,
            )
        refund.refresh_from_db()
        if refund.status == "pending":
            refunds.refund_check(refund)
            refund.refresh_from_db()
        assert refund.status == "succeeded", refund.status
        return refund

    return refunding


def today() -> dt.date:
    return selectors.china_today()


def report_of(channel: str, date: dt.date | None = None) -> ReconciliationReport:
    return ReconciliationReport.objects.get(channel=channel, date=date or today())


def kinds(report: ReconciliationReport) -> list[tuple[str, str]]:
    return sorted(report.items.values_list("kind", "reference"))


def statement_says(monkeypatch, channel: str, lines: list[StatementLine]) -> None:
    """The channel's statement, as given (for what the sandbox cannot produce)."""
    monkeypatch.setattr(
        provider_for(channel), "statement_download", lambda *, date: list(lines), raising=False
    )


# --- A clean day ----------------------------------------------------------------------------


def test_a_clean_day_has_no_mismatches_on_any_channel(pay_order, refund_settled) -> None:
    paid = {channel: pay_order(channel) for channel in CHANNELS}
    refund_settled(paid["alipay"], 500)

    reports = reconciliation.reconcile(date=today())

    assert sorted(r.channel for r in reports) == sorted(CHANNELS)
    for report in reports:
        assert report.mismatches == 0 and not report.items.exists(), kinds(report)
    alipay = report_of("alipay")
    assert (alipay.statement_lines, alipay.ledger_entries, alipay.matched) == (2, 2, 2)
    wechat = report_of("wechat")
    assert (wechat.statement_lines, wechat.ledger_entries, wechat.matched) == (1, 1, 1)


def test_a_day_without_any_trade_is_clean_too() -> None:
    reports = reconciliation.reconcile(date=today() - dt.timedelta(days=3))
    assert len(reports) == 3
    assert all((r.statement_lines, r.matched, r.mismatches) == (0, 0, 0) for r in reports)


def test_only_the_channels_asked_for_are_reconciled(pay_order) -> None:
    pay_order("unionpay")
    reports = reconciliation.reconcile(date=today(), channels=["unionpay"])
    assert [r.channel for r in reports] == ["unionpay"]
    assert ReconciliationReport.objects.count() == 1
    assert reports[0].matched == 1


# --- Each kind of difference ----------------------------------------------------------------


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_payment_whose_callback_never_came_is_missing_in_our_ledger(pay_order, channel) -> None:
    order = pay_order(channel, heard=False)
    trade = books.trade_get(
        channel=channel,
        merchant_id=provider_for(channel).credentials.merchant_id,
        order_no=order.order_no,
    )
    assert trade is not None

    (report,) = reconciliation.reconcile(date=today(), channels=[channel])

    (item,) = report.items.all()
    assert item.kind == MismatchKind.MISSING_IN_LEDGER
    assert (item.entry_kind, item.order_no, item.reference) == (
        "charge",
        order.order_no,
        trade.transaction_id,
    )
    assert item.ours is None and item.theirs["amount_fen"] == FEE
    assert (report.statement_lines, report.ledger_entries, report.matched) == (1, 0, 0)
    assert report.mismatches == 1


def test_a_ledger_entry_the_channel_does_not_know_is_missing_in_the_statement(pay_order) -> None:
    order = pay_order("wechat")
    LedgerEntry.objects.create(
        order=order,
        kind="refund",
        amount_fen=300,
        channel="wechat",
        reference="RNEVERSENT0001",
        at=timezone.now(),
    )

    (report,) = reconciliation.reconcile(date=today(), channels=["wechat"])

    (item,) = report.items.all()
    assert (item.kind, item.entry_kind, item.reference) == (
        MismatchKind.MISSING_IN_STATEMENT,
        "refund",
        "RNEVERSENT0001",
    )
    assert item.order_no == order.order_no
    assert item.ours["amount_fen"] == 300 and item.theirs is None
    assert (report.statement_lines, report.ledger_entries, report.matched) == (1, 2, 1)


@pytest.mark.parametrize("channel", CHANNELS)
def test_an_amount_that_differs_is_reported_with_both_sides(pay_order, channel) -> None:
    order = pay_order(channel)
    LedgerEntry.objects.filter(order=order).update(amount_fen=FEE - 1)

    (report,) = reconciliation.reconcile(date=today(), channels=[channel])

    (item,) = report.items.all()
    assert item.kind == MismatchKind.AMOUNT_DIFFERS
    assert (item.ours["amount_fen"], item.theirs["amount_fen"]) == (FEE - 1, FEE)
    assert item.reference == order.provider_transaction_id
    assert report.matched == 0 and report.mismatches == 1


def test_a_line_the_channel_did_not_settle_is_a_status_difference(pay_order, monkeypatch) -> None:
    order = pay_order("alipay")
    entry = LedgerEntry.objects.get(order=order)
    statement_says(
        monkeypatch,
        "alipay",
        [
            StatementLine("charge", order.order_no, entry.reference, FEE, "TRADE_CLOSED", entry.at),
            StatementLine("refund", order.order_no, "RGHOST", 100, "REFUND_FAIL", entry.at),
        ],
    )

    (report,) = reconciliation.reconcile(date=today(), channels=["alipay"])

    assert kinds(report) == sorted(
        [(MismatchKind.STATUS_DIFFERS, "RGHOST"), (MismatchKind.STATUS_DIFFERS, entry.reference)]
    )
    charge = report.items.get(reference=entry.reference)
    assert charge.theirs["state"] == "TRADE_CLOSED" and charge.ours["amount_fen"] == FEE
    assert report.matched == 0


def test_the_day_is_the_china_day(pay_order, monkeypatch) -> None:
    order = pay_order("unionpay")
    day = dt.date(2025, 1, 1)
    china = selectors.CHINA
    late = dt.datetime(2025, 1, 1, 23, 59, 30, tzinfo=china)  # 15:59:30 UTC
    early = dt.datetime(2025, 1, 2, 0, 0, 10, tzinfo=china)  # still 1 January in UTC
    for reference, at in (("RLATE", late), ("REARLY", early)):
        LedgerEntry.objects.create(
            order=order, kind="refund", amount_fen=1, channel="unionpay", reference=reference, at=at
        )
    statement_says(monkeypatch, "unionpay", [])

    (report,) = reconciliation.reconcile(date=day, channels=["unionpay"])
    assert kinds(report) == [(MismatchKind.MISSING_IN_STATEMENT, "RLATE")]
    (report,) = reconciliation.reconcile(date=day + dt.timedelta(days=1), channels=["unionpay"])
    assert kinds(report) == [(MismatchKind.MISSING_IN_STATEMENT, "REARLY")]


@pytest.mark.parametrize("channel", ["wechat", "unionpay"])
def test_a_refund_settled_before_midnight_and_heard_of_after_is_on_the_channels_day(
    pay_order, channel, django_capture_on_commit_callbacks, settings
) -> None:
    settings.PAYMENTS_SANDBOX_REFUND_SECONDS = 3600
    order = pay_order(channel)
    with django_capture_on_commit_callbacks(execute=True):
        refund = orders.refund_request(order=order, amount_fen=500, reason="", actor=None)
    refund.refresh_from_db()
    assert refund.status == "pending"  # these channels settle later
    # The channel settled it a second before midnight; we ask after it.
    before_midnight = dt.datetime.combine(today(), dt.time.min, tzinfo=selectors.CHINA)
    before_midnight -= dt.timedelta(seconds=1)
    SandboxRefund.objects.filter(refund_no=refund.refund_no).update(settles_at=before_midnight)
    refunds.refund_check(refund)

    entry = LedgerEntry.objects.get(kind="refund", reference=refund.refund_no)
    assert entry.at == before_midnight
    (report,) = reconciliation.reconcile(date=today() - dt.timedelta(days=1), channels=[channel])
    assert kinds(report) == [] and (report.statement_lines, report.matched) == (1, 1)
    (report,) = reconciliation.reconcile(date=today(), channels=[channel])
    assert kinds(report) == [] and (report.statement_lines, report.matched) == (1, 1)


def test_a_channel_that_cannot_be_reached_does_not_stop_the_others(pay_order, monkeypatch) -> None:
    pay_order("alipay")

    def unreachable(*, date: dt.date) -> list[StatementLine]:
        raise ProviderError("bill service down", code="SYSTEM_ERROR")

    monkeypatch.setattr(provider_for("wechat"), "statement_download", unreachable, raising=False)
    failed: list[str] = []

    class Watch(reconciliation.ReconcileProgress):
        def channel_failed(self, channel: str, error: Exception) -> None:
            failed.append(channel)

    reports = reconciliation.reconcile(date=today(), progress=Watch())

    assert sorted(r.channel for r in reports) == ["alipay", "unionpay"]
    assert failed == ["wechat"]
    assert not ReconciliationReport.objects.filter(channel="wechat").exists()
    assert report_of("alipay").matched == 1


# --- Running a day again --------------------------------------------------------------------


def test_running_again_keeps_resolved_mismatches_and_renews_open_ones(pay_order) -> None:
    order = pay_order("wechat")
    lost = pay_order("wechat", heard=False)
    LedgerEntry.objects.create(
        order=order,
        kind="refund",
        amount_fen=300,
        channel="wechat",
        reference="RGHOST1",
        at=timezone.now(),
    )
    (report,) = reconciliation.reconcile(date=today(), channels=["wechat"])
    assert report.mismatches == 2
    ghost = report.items.get(reference="RGHOST1")
    missing = report.items.get(kind=MismatchKind.MISSING_IN_LEDGER)
    clerk = StaffFactory(username="finance.li")
    reconciliation.mismatch_resolve(mismatch=ghost, actor=clerk, note="测试数据，已核销")

    (again,) = reconciliation.reconcile(date=today(), channels=["wechat"])

    assert again.pk == report.pk and ReconciliationReport.objects.count() == 1
    assert again.mismatches == 2
    kept = again.items.get(reference="RGHOST1")
    assert kept.pk == ghost.pk
    assert (kept.resolved_by, kept.resolution_note) == ("finance.li", "测试数据，已核销")
    assert kept.resolved_at is not None
    renewed = again.items.get(kind=MismatchKind.MISSING_IN_LEDGER)
    assert renewed.pk != missing.pk and renewed.resolved_at is None
    assert renewed.order_no == lost.order_no

    # The ghost entry is put right: its resolved mismatch has nothing left to show.
    LedgerEntry.objects.filter(reference="RGHOST1").delete()
    (third,) = reconciliation.reconcile(date=today(), channels=["wechat"])
    assert kinds(third) == [(MismatchKind.MISSING_IN_LEDGER, renewed.reference)]
    assert third.mismatches == 1


def test_resolving_a_mismatch_is_audited_and_happens_once(pay_order) -> None:
    pay_order("alipay", heard=False)
    (report,) = reconciliation.reconcile(date=today(), channels=["alipay"])
    (item,) = report.items.all()
    clerk: User = StaffFactory(username="finance.wang")

    resolved = reconciliation.mismatch_resolve(mismatch=item, actor=clerk, note="  补记通知  ")
    again = reconciliation.mismatch_resolve(mismatch=item, actor=clerk, note="第二次")

    assert resolved.resolution_note == "补记通知" and resolved.resolved_by == "finance.wang"
    assert again.resolution_note == "补记通知"
    entry = AuditEntry.objects.get(action="payment.reconciliation_mismatch_resolved")
    assert entry.actor_id == str(clerk.pk) and entry.target_id == str(item.pk)
    assert entry.data["order_no"] == item.order_no
    assert AuditEntry.objects.filter(action="payment.reconciled").count() == 1


# --- The command --------------------------------------------------------------------------------


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("reconcile", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_prints_the_mismatches_and_stores_them(pay_order) -> None:
    pay_order("wechat")
    lost = pay_order("unionpay", heard=False)

    out, err = run("--date", today().isoformat())

    assert "missing_in_ledger" in out and lost.order_no in out
    assert "20.00" in out  # their amount, in yuan
    assert "wechat: 1 statement line(s), 1 ledger entry, 1 matched, 0 mismatch(es)" in out
    assert "unionpay: 1 statement line(s), 0 ledger entries, 0 matched, 1 mismatch(es)" in out
    assert ReconciliationReport.objects.count() == 3
    assert ReconciliationMismatch.objects.get().order_no == lost.order_no
    # The progress bar went to stderr, which is no terminal here.
    assert "unionpay" in err and "100%" in err


def test_the_command_reconciles_yesterday_by_default(capsys) -> None:
    # No stdout/stderr given: tqdm writes to the process's stderr (captured, no TTY).
    call_command("reconcile", "--channel", "alipay", "--channel", "wechat")
    yesterday = today() - dt.timedelta(days=1)
    assert set(ReconciliationReport.objects.values_list("date", "channel")) == {
        (yesterday, "alipay"),
        (yesterday, "wechat"),
    }
    assert "no mismatches" in capsys.readouterr().out


def test_the_command_can_run_without_a_progress_bar() -> None:
    out, err = run("--date", today().isoformat(), "--channel", "alipay", "--no-progress")
    assert "alipay: 0 statement line(s)" in out
    assert "%" not in err


@pytest.mark.parametrize("value", ["2025-13-01", "20250101", "yesterday", "2025/01/01"])
def test_a_bad_date_is_refused_with_a_clear_message(value) -> None:
    with pytest.raises(CommandError, match="use YYYY-MM-DD"):
        run("--date", value)
    assert not ReconciliationReport.objects.exists()


def test_the_calendars_first_day_is_refused_not_a_crash() -> None:
    with pytest.raises(CommandError, match="no statement exists"):
        run("--date", "0001-01-01")
    assert not ReconciliationReport.objects.exists()


def test_a_day_to_come_is_refused() -> None:
    with pytest.raises(CommandError, match="still to come"):
        run("--date", (today() + dt.timedelta(days=1)).isoformat())


def test_the_command_fails_after_reconciling_the_reachable_channels(monkeypatch) -> None:
    def unreachable(*, date: dt.date) -> list[StatementLine]:
        raise ProviderError("bill service down")

    monkeypatch.setattr(provider_for("alipay"), "statement_download", unreachable, raising=False)
    with pytest.raises(CommandError, match="alipay: not reconciled"):
        run("--date", today().isoformat())
    assert set(ReconciliationReport.objects.values_list("channel", flat=True)) == {
        "wechat",
        "unionpay",
    }


def test_the_daily_task_reconciles_yesterday(citizen, fee_service) -> None:
    from payments import tasks
    from payments.models import ReconciliationReport

    assert tasks.reconcile_yesterday() == 0
    yesterday = selectors.china_today() - dt.timedelta(days=1)
    assert set(ReconciliationReport.objects.values_list("date", "channel")) == {
        (yesterday, "wechat"),
        (yesterday, "alipay"),
        (yesterday, "unionpay"),
    }


# --- Statements that are not what they should be -----------------------------------------


@pytest.mark.parametrize("amount", ["Infinity", "9E+999999"])
def test_a_bill_amount_that_is_no_amount_fails_that_channel_only(
    pay_order, monkeypatch, amount
) -> None:
    pay_order("wechat")
    pay_order("alipay")
    original = WechatSandbox.trade_bill_text

    def odd(trades, refunds):
        return original(trades, refunds).replace("`0.60%,`20.00", f"`0.60%,`{amount}", 1)

    monkeypatch.setattr(WechatSandbox, "trade_bill_text", staticmethod(odd))
    # WeChat's bill is unreadable (the command fails, exit 1); Alipay and
    # UnionPay are reconciled all the same.
    with pytest.raises(CommandError):
        run("--date", today().isoformat(), "--no-progress")
    assert ReconciliationReport.objects.filter(channel="alipay").exists()


def test_a_short_row_in_an_alipay_bill_fails_that_channel_only(pay_order, monkeypatch) -> None:
    pay_order("alipay")
    pay_order("unionpay")
    original = AlipaySandbox._bill_zip

    def short(self, date):
        import io
        import zipfile

        with zipfile.ZipFile(io.BytesIO(original(self, date))) as bundle:
            files = {i.filename: bundle.read(i) for i in bundle.infolist()}
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as bundle:
            for name, content in files.items():
                text = content.decode("gbk")
                if text.startswith("#支付宝业务明细查询"):
                    lines = text.splitlines()
                    at = next(
                        i
                        for i, row in enumerate(lines)
                        if "交易" in row and not row.startswith("#") and "支付宝交易号" not in row
                    )
                    lines.insert(at + 1, "2088,short,row")  # a truncated row
                    text = "\r\n".join(lines)
                bundle.writestr(name, text.encode("gbk"))
        return out.getvalue()

    monkeypatch.setattr(AlipaySandbox, "_bill_zip", short)
    with pytest.raises(CommandError):
        run("--date", today().isoformat(), "--no-progress")
    assert ReconciliationReport.objects.filter(channel="unionpay").exists()


def test_a_resolved_difference_that_changed_is_open_again(pay_order) -> None:
    order = pay_order("wechat")
    LedgerEntry.objects.filter(order=order).update(amount_fen=FEE - 1)  # off by 1 fen
    (report,) = reconciliation.reconcile(date=today(), channels=["wechat"])
    (item,) = report.items.all()
    reconciliation.mismatch_resolve(mismatch=item, actor=StaffFactory(), note="1 分舍入差，已核销")
    # Later the difference is a different one: 19.99 yuan missing.
    LedgerEntry.objects.filter(order=order).update(amount_fen=1)
    (again,) = reconciliation.reconcile(date=today(), channels=["wechat"])
    (item,) = again.items.all()
    assert item.kind == MismatchKind.AMOUNT_DIFFERS
    # The stored difference should be the one found now, and open.
    assert item.ours["amount_fen"] == 1, item.ours
    assert item.resolved_at is None


def test_a_charge_listed_more_than_once_is_said_so(pay_order, monkeypatch) -> None:
    order = pay_order("alipay")
    entry = LedgerEntry.objects.get(order=order)
    line = StatementLine("charge", order.order_no, entry.reference, FEE, "paid", entry.at)
    statement_says(monkeypatch, "alipay", [line, line, line])
    (report,) = reconciliation.reconcile(date=today(), channels=["alipay"])
    # The channel lists the charge three times; we booked it once: one
    # difference that says so, not "missing in our ledger".
    (item,) = report.items.all()
    assert (report.statement_lines, report.matched, report.mismatches) == (3, 1, 1)
    assert item.kind == MismatchKind.LISTED_MORE_THAN_ONCE
    assert item.theirs["times"] == 3 and item.ours["amount_fen"] == FEE


@pytest.mark.integration  # PostgreSQL's bound on one statement's parameters
def test_a_rerun_lets_go_of_any_number_of_resolved_mismatches() -> None:
    """Resolved mismatches that no longer apply go at a rerun: 70,000 of
    them were one DELETE … IN of 70,000 parameters, which PostgreSQL
    refuses when it binds them (over 65,535)."""
    from payments.models import MismatchKind, ReconciliationMismatch, ReconciliationReport

    day = dt.date(2026, 12, 1)
    report = ReconciliationReport.objects.create(date=day, channel="wechat")
    ReconciliationMismatch.objects.bulk_create(
        ReconciliationMismatch(
            report=report,
            kind=MismatchKind.choices[0][0],
            entry_kind="charge",
            order_no=f"CS{n:014d}",
            reference=f"420000{n:022d}",
            resolved_at=timezone.now(),
            resolved_by="op",
        )
        for n in range(70_000)
    )
    reconciliation._store(date=day, channel="wechat", lines=0, entries=0, matched=0, found=[])
    assert not ReconciliationMismatch.objects.filter(report=report).exists()

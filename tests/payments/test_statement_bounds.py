"""``python manage.py reconcile`` meets a UnionPay settlement file that
unpacks far beyond any day's statement (a decompression bomb, or a broken
answer): refused unread, the channel not reconciled as when its statement
cannot be read, the operator told why; the other channels go on."""

from __future__ import annotations

import base64
import io
import tracemalloc
import zipfile
import zlib

import pytest
from django.core.management import CommandError, call_command

from payments import selectors
from payments.models import ReconciliationReport
from payments.providers import provider_for
from payments.sandbox.unionpay import UnionpaySandbox
from tests.payments.conftest import open_order

pytestmark = pytest.mark.django_db

INFLATED = 64 << 20  # a real bomb inflates to gigabytes


def answered_with(monkeypatch, file_content: bytes) -> None:
    """UnionPay's file answer carries ``file_content`` (already deflated)."""
    original = UnionpaySandbox._file

    def file(self, fields):
        try:
            answer = original(self, fields)
        except Exception:  # noqa: BLE001  (a day without a file: 98)
            answer = {"respCode": "00", "respMsg": "成功", "fileType": "00"}
        tracemalloc.reset_peak()  # what making the bomb took is not what reading it takes
        return {**answer, "fileContent": base64.b64encode(file_content).decode("ascii")}

    monkeypatch.setattr(UnionpaySandbox, "_file", file)


def reconcile_today(*channels: str, stderr: io.StringIO | None = None) -> None:
    """``manage.py reconcile`` for today, for ``channels``."""
    chosen = [arg for channel in channels for arg in ("--channel", channel)]
    call_command(
        "reconcile",
        "--date",
        selectors.china_today().isoformat(),
        *chosen,
        stdout=io.StringIO(),
        stderr=stderr or io.StringIO(),
    )


def deflated_bomb() -> bytes:
    """The answer's own deflate inflating to INFLATED bytes."""
    inflater = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    packed = b"".join(inflater.compress(chunk) for _ in range(INFLATED // len(chunk)))
    return packed + inflater.flush()


def zipped_bomb() -> bytes:
    """A zip, deflated as UnionPay sends it, whose settlement file inflates
    to INFLATED bytes."""
    merchant = provider_for("unionpay").credentials.merchant_id
    name = f"INN{selectors.china_today():%y%m%d}88ZM_{merchant}"
    archive = io.BytesIO()
    zeros = b"\0" * INFLATED
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr(name, zeros)
    del zeros
    return zlib.compress(archive.getvalue())


@pytest.mark.parametrize("bomb", [deflated_bomb, zipped_bomb], ids=["deflated", "zipped"])
def test_a_statement_that_unpacks_beyond_any_days_is_refused_unread(monkeypatch, bomb) -> None:
    from payments.providers import unionpay

    answered_with(monkeypatch, bomb())
    # The bound, made small for the test, as the bomb is.
    monkeypatch.setattr(unionpay, "STATEMENT_MAX_BYTES", INFLATED // 16, raising=False)
    err = io.StringIO()

    tracemalloc.start()
    try:
        with pytest.raises(CommandError, match="unionpay: not reconciled"):
            reconcile_today("unionpay", "wechat", stderr=err)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < INFLATED // 4
    assert "unionpay: statement not downloaded:" in err.getvalue()
    assert "larger than a statement can be" in err.getvalue()
    assert list(ReconciliationReport.objects.values_list("channel", flat=True)) == ["wechat"]


def test_the_bound_is_on_what_the_statement_unpacks_to(
    monkeypatch, citizen_api, awaiting, pay
) -> None:
    """The bound made small for the test: the day's genuine file, past it,
    is refused all the same (it would take gigabytes otherwise)."""
    from payments.providers import unionpay

    pay(open_order(citizen_api, awaiting, "unionpay"))
    monkeypatch.setattr(unionpay, "STATEMENT_MAX_BYTES", 100, raising=False)
    err = io.StringIO()

    with pytest.raises(CommandError, match="unionpay: not reconciled"):
        reconcile_today("unionpay", stderr=err)

    assert "larger than a statement can be" in err.getvalue()
    assert not ReconciliationReport.objects.exists()

    monkeypatch.undo()
    reconcile_today("unionpay")
    report = ReconciliationReport.objects.get(channel="unionpay")
    assert (report.statement_lines, report.matched) == (1, 1)

"""The sandbox UnionPay gateway (银联全渠道, spec 5.1.0): the remote side of
:class:`payments.providers.unionpay.UnionpayProvider`, written on its own
from the spec so that each side checks the other.

It answers appTransReq.do (consume → ``tn``), queryTrans.do, backTransReq.do
(refund) and fileTransReq.do (settlement file), and builds the back-end
notice (后台通知) of a paid or failed trade. Requests are URL-encoded forms;
answers are raw ``k=v&k=v`` text, as the real gateway writes them. All of
them are signed with signMethod 01 (SHA-256 hex digest of the sorted
fields, signed SHA256withRSA).

Where the real gateway sends ``signPubKeyCert`` (its signing certificate,
chained to UnionPay's root), this one sends only ``certId``: the merchant
has the platform's public key configured directly.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import io
import re
import urllib.parse
import zipfile
import zlib
import zoneinfo
from collections.abc import Callable, Mapping

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from django.utils import timezone

from payments.models import SandboxRefund, SandboxTrade, SandboxTradeState
from payments.sandbox import books, keys
from payments.sandbox.channels import SandboxChannel

CHINA = zoneinfo.ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y%m%d%H%M%S"
SUCCESS_MESSAGE = "成功[0000000]"

# The neutral refusals of the books, as UnionPay's respCodes.
REFUSALS: dict[str, tuple[str, str]] = {
    "order_no_used": ("12", "重复交易"),
    "refund_no_used": ("12", "重复交易"),
    "not_found": ("34", "查无此交易"),
    "trade_paid": ("12", "重复交易"),
    "trade_closed": ("35", "原交易不存在或状态不正确"),
    "not_paid": ("35", "原交易不存在或状态不正确"),
    "refund_exceeds": ("36", "与原交易信息不符[退货金额超限]"),
}
# What a failed payment says (PAYERROR in the books).
PAY_FAILED = ("01", "交易失败。详情请咨询95516")

# The settlement file's columns (name, width), one space apart, modelled on
# the INN…ZM file's fixed-width lines.
STATEMENT_COLUMNS: tuple[tuple[str, int], ...] = (
    ("txnType", 2),
    ("orderId", 40),
    ("queryId", 40),
    ("origOrderId", 40),
    ("origQryId", 40),
    ("txnAmt", 12),
    ("settleTime", 14),
)

_ORDER_ID = re.compile(r"[0-9A-Za-z]{8,40}")
_AMOUNT = re.compile(r"[1-9][0-9]{0,11}")
_TIME = re.compile(r"[0-9]{14}")


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


def _china_time(at: dt.datetime, fmt: str = TIME_FORMAT) -> str:
    return timezone.localtime(at, CHINA).strftime(fmt)


def _digest(fields: Mapping[str, str]) -> bytes:
    joined = "&".join(f"{key}={fields[key]}" for key in sorted(fields) if key != "signature")
    return hashlib.sha256(joined.encode("utf-8")).hexdigest().encode("ascii")


def _signed(fields: dict[str, str]) -> dict[str, str]:
    fields = {**fields, "certId": keys.serial("unionpay.platform")}
    signature = keys.private_key("unionpay.platform").sign(
        _digest(fields), padding.PKCS1v15(), hashes.SHA256()
    )
    fields["signature"] = base64.b64encode(signature).decode("ascii")
    return fields


def _refusal(refusal: books.SandboxRefusal) -> _Refused:
    code, message = REFUSALS.get(refusal.code, ("99", "通用错误"))
    return _Refused(code, message)


def _require(fields: Mapping[str, str], **expected: str) -> None:
    for name, value in expected.items():
        if fields.get(name) != value:
            raise _Refused("10", f"报文格式错误[{name}]")


def _tn(trade: SandboxTrade) -> str:
    # 21 digits, stable for one trade, so a merchant retrying gets the same.
    return f"{_china_time(trade.created_at)}{trade.pk % 10**7:07d}"


def _trace_no(reference: str) -> str:
    return f"{int(hashlib.sha256(reference.encode()).hexdigest(), 16) % 10**6:06d}"


class UnionpaySandbox(SandboxChannel):
    """The UnionPay gateway as our provider meets it.

    It keeps its trades and refunds in :mod:`payments.sandbox.books` and
    answers like the 5.1.0 gateway: every answer signed with the platform
    key and carrying its ``certId``; ``respCode`` 00 for success, 10/11
    for a malformed or badly signed request, 12 for a reused order
    number, 34 for a transaction it does not have, 35/36 for a refund of
    an unpaid order or above what was paid, 98 for a day without a file.

    It differs from the real gateway where our books are simpler: a query
    finds a transaction by ``orderId`` alone (the real one needs the
    original ``txnTime`` too); the settlement day is the China calendar
    day (UnionPay's cuts at 23:00); refunds send no notice. Like the real
    one it has no call that closes an unpaid app order: the trade lapses at
    the ``payTimeout`` it was opened with (``books.trade_pay`` closes it).

    :attr:`notify_schedule` is modelled on UnionPay's integration guide for
    back-end notices (后台通知): a notice not answered with HTTP 200 is sent
    again several times at growing intervals, and the merchant must query
    (queryTrans) when none arrives. We could not check the guide's exact
    figures offline, so ours double from one minute: 1, 2, 4, 8 and 16
    minutes after the previous try, five re-sends in all.
    """

    identifier = "unionpay"
    notify_schedule = (60.0, 120.0, 240.0, 480.0, 960.0)

    def handle(self, request: httpx.Request) -> httpx.Response:
        route = self._routes().get(request.url.path)
        if request.method != "POST" or route is None:
            return httpx.Response(404, text="Not Found")
        try:
            fields = self._read(request)
        except _Refused as refused:
            # Too broken to echo: the answer says only why.
            return self._answer({"respCode": refused.code, "respMsg": refused.message})
        echo = {
            name: fields[name]
            for name in (
                "version",
                "encoding",
                "signMethod",
                "txnType",
                "txnSubType",
                "bizType",
                "accessType",
                "merId",
                "orderId",
                "txnTime",
            )
            if name in fields
        }
        try:
            answer = route(fields)
        except _Refused as refused:
            answer = {"respCode": refused.code, "respMsg": refused.message}
        return self._answer({**echo, **answer})

    def _routes(self) -> dict[str, Callable[[dict[str, str]], dict[str, str]]]:
        return {
            "/gateway/api/appTransReq.do": self._consume,
            "/gateway/api/queryTrans.do": self._query,
            "/gateway/api/backTransReq.do": self._refund,
            "/gateway/api/fileTransReq.do": self._file,
        }

    @staticmethod
    def _answer(fields: dict[str, str]) -> httpx.Response:
        # The gateway writes its answer raw, not URL-encoded.
        text = "&".join(f"{key}={value}" for key, value in _signed(fields).items())
        return httpx.Response(
            200, content=text.encode("utf-8"), headers={"Content-Type": "text/plain;charset=UTF-8"}
        )

    def _read(self, request: httpx.Request) -> dict[str, str]:
        """The request's fields, once it is a well-formed form from our
        merchant, signed with the merchant's key."""
        try:
            pairs = urllib.parse.parse_qsl(
                request.content.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=True,
                max_num_fields=200,
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Refused("10", "报文格式错误") from exc
        fields = dict(pairs)
        if len(fields) != len(pairs):
            raise _Refused("10", "报文格式错误[重复字段]")
        _require(fields, version="5.1.0", encoding="UTF-8", signMethod="01")
        for name in ("certId", "signature", "txnType", "merId", "accessType", "txnTime"):
            if not fields.get(name):
                raise _Refused("13", f"报文交易要素缺失[{name}]")
        if fields["certId"] != keys.serial("unionpay.merchant"):
            raise _Refused("11", "验证签名失败[certId]")
        try:
            signature = base64.b64decode(fields["signature"], validate=True)
            keys.private_key("unionpay.merchant").public_key().verify(
                signature, _digest(fields), padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, binascii.Error, ValueError) as exc:
            raise _Refused("11", "验证签名失败") from exc
        if fields["merId"] != self.merchant_id or fields["accessType"] != self.app_id:
            raise _Refused("31", "商户状态不正确")
        if not _TIME.fullmatch(fields["txnTime"]):
            raise _Refused("10", "报文格式错误[txnTime]")
        return fields

    # --- consume -----------------------------------------------------------------------

    def _consume(self, fields: dict[str, str]) -> dict[str, str]:
        _require(fields, txnType="01", txnSubType="01", bizType="000201", currencyCode="156")
        order_id = fields.get("orderId", "")
        amount = fields.get("txnAmt", "")
        if not _ORDER_ID.fullmatch(order_id) or not _AMOUNT.fullmatch(amount):
            raise _Refused("10", "报文格式错误[orderId/txnAmt]")
        if not fields.get("backUrl"):
            raise _Refused("13", "报文交易要素缺失[backUrl]")
        now = timezone.now()
        expires_at = now + dt.timedelta(days=1)
        if fields.get("payTimeout"):
            try:
                expires_at = dt.datetime.strptime(fields["payTimeout"], TIME_FORMAT).replace(
                    tzinfo=CHINA
                )
            except ValueError as exc:
                raise _Refused("10", "报文格式错误[payTimeout]") from exc
        try:
            trade = books.trade_open(
                channel=self.identifier,
                merchant_id=fields["merId"],
                app_id=fields["accessType"],
                order_no=order_id,
                amount_fen=int(amount),
                description=fields.get("orderDesc", ""),
                notify_url=fields["backUrl"],
                expires_at=expires_at,
            )
        except books.SandboxRefusal as refusal:
            raise _refusal(refusal) from refusal
        return {"respCode": "00", "respMsg": SUCCESS_MESSAGE, "tn": _tn(trade)}

    # --- query -------------------------------------------------------------------------

    def _query(self, fields: dict[str, str]) -> dict[str, str]:
        _require(fields, txnType="00", txnSubType="00")
        order_id = fields.get("orderId", "")
        trade = books.trade_get(
            channel=self.identifier, merchant_id=self.merchant_id, order_no=order_id
        )
        if trade is not None:
            return self._trade_status(trade)
        row = (
            SandboxRefund.objects.filter(
                trade__channel=self.identifier,
                trade__merchant_id=self.merchant_id,
                refund_no=order_id,
            )
            .select_related("trade")
            .first()
        )
        refund = books.refund_get(trade=row.trade, refund_no=order_id) if row else None
        if refund is None:
            raise _Refused("34", "查无此交易")
        settled = refund.state == "SUCCESS"
        original = ("00", SUCCESS_MESSAGE) if settled else ("05", "交易已受理，请稍后查询交易结果")
        if refund.state not in ("SUCCESS", "PROCESSING"):
            original = ("01", "交易失败")
        at = refund.succeeded_at or refund.created_at
        answer = {
            "respCode": "00",
            "respMsg": SUCCESS_MESSAGE,
            "origRespCode": original[0],
            "origRespMsg": original[1],
            "queryId": refund.refund_id,
            "origQryId": refund.trade.transaction_id,
            "txnAmt": str(refund.amount_fen),
            "currencyCode": "156",
            "txnTime": _china_time(refund.created_at),
        }
        if settled:
            answer.update(
                {
                    "settleAmt": str(refund.amount_fen),
                    "settleCurrencyCode": "156",
                    "settleDate": _china_time(at, "%m%d"),
                    "traceNo": _trace_no(refund.refund_id),
                    "traceTime": _china_time(at, "%m%d%H%M%S"),
                }
            )
        return answer

    def _trade_status(self, trade: SandboxTrade) -> dict[str, str]:
        # An app order whose tn was never paid is no transaction at all to
        # UnionPay: 34, the same as an order number it never saw.
        if trade.state in (SandboxTradeState.NOTPAY, SandboxTradeState.CLOSED):
            raise _Refused("34", "查无此交易")
        answer = {
            "respCode": "00",
            "respMsg": SUCCESS_MESSAGE,
            "queryId": trade.transaction_id,
            "txnAmt": str(trade.amount_fen),
            "currencyCode": "156",
            # The original order's time, as the merchant sent it.
            "txnTime": _china_time(trade.created_at),
        }
        if trade.state == SandboxTradeState.SUCCESS and trade.paid_at is not None:
            answer.update(
                {
                    "origRespCode": "00",
                    "origRespMsg": SUCCESS_MESSAGE,
                    "settleAmt": str(trade.amount_fen),
                    "settleCurrencyCode": "156",
                    "settleDate": _china_time(trade.paid_at, "%m%d"),
                    "traceNo": _trace_no(trade.transaction_id),
                    "traceTime": _china_time(trade.paid_at, "%m%d%H%M%S"),
                    "accNo": "6216***********0018",
                }
            )
        else:
            answer.update({"origRespCode": PAY_FAILED[0], "origRespMsg": PAY_FAILED[1]})
        return answer

    # --- refund ------------------------------------------------------------------------

    def _refund(self, fields: dict[str, str]) -> dict[str, str]:
        _require(fields, txnType="04", txnSubType="00", bizType="000201")
        refund_no = fields.get("orderId", "")
        amount = fields.get("txnAmt", "")
        if not _ORDER_ID.fullmatch(refund_no) or not _AMOUNT.fullmatch(amount):
            raise _Refused("10", "报文格式错误[orderId/txnAmt]")
        if not fields.get("backUrl") or not fields.get("origQryId"):
            raise _Refused("13", "报文交易要素缺失[backUrl/origQryId]")
        trade = SandboxTrade.objects.filter(
            channel=self.identifier,
            merchant_id=self.merchant_id,
            transaction_id=fields["origQryId"],
        ).first()
        if trade is None:
            raise _Refused("35", "原交易不存在或状态不正确")
        try:
            refund = books.refund_open(trade=trade, refund_no=refund_no, amount_fen=int(amount))
        except books.SandboxRefusal as refusal:
            raise _refusal(refusal) from refusal
        # Accepted, not done: the refund settles later (查询交易 tells).
        return {
            "respCode": "00",
            "respMsg": SUCCESS_MESSAGE,
            "queryId": refund.refund_id,
            "origQryId": trade.transaction_id,
            "txnAmt": str(refund.amount_fen),
        }

    # --- settlement file ---------------------------------------------------------------

    def _file(self, fields: dict[str, str]) -> dict[str, str]:
        _require(fields, txnType="76", txnSubType="01", fileType="00")
        date = self._settle_date(fields.get("settleDate", ""))
        trades, refunds = books.statement(
            channel=self.identifier, merchant_id=self.merchant_id, date=date
        )
        if not trades and not refunds:
            raise _Refused("98", "文件不存在")
        lines = [
            self._line(
                txnType="01",
                orderId=trade.order_no,
                queryId=trade.transaction_id,
                txnAmt=trade.amount_fen,
                at=trade.paid_at,
            )
            for trade in trades
        ] + [
            self._line(
                txnType="04",
                orderId=refund.refund_no,
                queryId=refund.refund_id,
                origOrderId=refund.trade.order_no,
                origQryId=refund.trade.transaction_id,
                txnAmt=refund.amount_fen,
                at=refund.succeeded_at,
            )
            for refund in refunds
        ]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr(
                f"INN{date:%y%m%d}88ZM_{self.merchant_id}", "".join(f"{x}\r\n" for x in lines)
            )
        return {
            "respCode": "00",
            "respMsg": SUCCESS_MESSAGE,
            "settleDate": fields["settleDate"],
            "fileType": "00",
            "fileName": f"{self.merchant_id}_{date:%Y%m%d}.zip",
            # As the SDKs expect it: the zip, deflated again, in base64.
            "fileContent": base64.b64encode(zlib.compress(buffer.getvalue())).decode("ascii"),
        }

    @staticmethod
    def _settle_date(value: str) -> dt.date:
        """MMDD names the latest such day that is not in the future."""
        if not re.fullmatch(r"[0-9]{4}", value):
            raise _Refused("10", "报文格式错误[settleDate]")
        today = timezone.localdate(timezone=CHINA)
        for year in range(today.year, today.year - 5, -1):
            try:
                date = dt.date(year, int(value[:2]), int(value[2:]))
            except ValueError:
                continue
            if date <= today:
                return date
        raise _Refused("10", "报文格式错误[settleDate]")

    @staticmethod
    def _line(*, txnAmt: int, at: dt.datetime | None, **values: str) -> str:
        values["txnAmt"] = f"{txnAmt:012d}"
        values["settleTime"] = _china_time(at or timezone.now())
        return " ".join(values.get(name, "").ljust(width) for name, width in STATEMENT_COLUMNS)

    # --- back-end notice ---------------------------------------------------------------

    def payment_notify(self, trade: SandboxTrade) -> tuple[dict[str, str], bytes] | None:
        """The back-end notice (后台通知) of a paid or failed trade, posted
        as a form to its ``backUrl``; none for a trade still open."""
        if trade.state == SandboxTradeState.SUCCESS:
            code, message = "00", SUCCESS_MESSAGE
        elif trade.state == SandboxTradeState.PAYERROR:
            code, message = PAY_FAILED
        else:
            return None
        at = trade.paid_at or trade.notify_due_at or timezone.now()
        fields = {
            "version": "5.1.0",
            "encoding": "UTF-8",
            "signMethod": "01",
            "txnType": "01",
            "txnSubType": "01",
            "bizType": "000201",
            "channelType": "08",
            "accessType": trade.app_id,
            "merId": trade.merchant_id,
            "orderId": trade.order_no,
            "txnTime": _china_time(trade.created_at),
            "txnAmt": str(trade.amount_fen),
            "currencyCode": "156",
            "queryId": trade.transaction_id,
            "respCode": code,
            "respMsg": message,
            "traceNo": _trace_no(trade.transaction_id),
            "traceTime": _china_time(at, "%m%d%H%M%S"),
            "accNo": "6216***********0018",
        }
        if code == "00":
            fields.update(
                {
                    "settleAmt": str(trade.amount_fen),
                    "settleCurrencyCode": "156",
                    "settleDate": _china_time(at, "%m%d"),
                }
            )
        body = urllib.parse.urlencode(_signed(fields)).encode("utf-8")
        return {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}, body

    def notify_acknowledged(self, response: httpx.Response) -> bool:
        """UnionPay looks at the status only: 200 stops the re-sending."""
        return response.status_code == 200

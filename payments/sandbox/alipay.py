"""The sandbox of Alipay (支付宝开放平台): its gateway, its callbacks, its bills.

It speaks Alipay's OpenAPI as the real gateway does: one ``/gateway.do``
taking the common parameters (``app_id``, ``method``, ``sign_type=RSA2`` …)
and a JSON ``biz_content`` from the query string or a form body, checking the
merchant's SHA256withRSA signature over the sorted parameters, and answering
``{"<method>_response": {...}, "sign": "..."}`` signed with the platform key
over the exact text of the response node. Bills come as a zip of GBK CSV
files from a short-lived download URL on the sandbox host.

This module signs and verifies on its own and never imports the merchant's
side (:mod:`payments.providers.alipay`): a round trip between the two is a
test of both, and the merchant SDK tests check it against a third party.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import re
import secrets
import time
import zipfile
from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from payments.models import SandboxRefund, SandboxTrade, SandboxTradeState
from payments.sandbox import books, keys
from payments.sandbox.channels import SandboxChannel

T = SandboxTradeState
CHANNEL = "alipay"
# Alipay writes every time in China time, whatever the merchant's zone.
CHINA = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# How long a bill download URL works (Alipay's last 30 seconds).
BILL_URL_SECONDS = 30
# A precreated trade with neither time_expire nor timeout_express.
DEFAULT_TIMEOUT = dt.timedelta(hours=2)
MAX_AMOUNT_FEN = 100_000_000 * 100  # Alipay's ceiling: 100,000,000.00 yuan

MESSAGES = {
    "10000": "Success",
    "20000": "Service Currently Unavailable",
    "40001": "Missing Required Arguments",
    "40002": "Invalid Arguments",
    "40004": "Business Failed",
}

# The books' neutral refusals in Alipay's words, per method where Alipay
# words the same refusal differently (closing a paid trade is a status
# error, precreating one is "already paid").
REFUSALS: dict[str, tuple[str, str]] = {
    "order_no_used": ("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改"),
    "not_found": ("ACQ.TRADE_NOT_EXIST", "交易不存在"),
    "trade_paid": ("ACQ.TRADE_HAS_SUCCESS", "交易已被支付"),
    "trade_closed": ("ACQ.TRADE_HAS_CLOSE", "交易已经关闭"),
    "not_paid": ("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
    "refund_exceeds": ("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限"),
    "refund_no_used": ("ACQ.DISCORDANT_REPEAT_REQUEST", "不一致的请求"),
}
CLOSE_REFUSALS = {"trade_paid": ("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")}

_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,9})(\.[0-9]{1,2})?")
_TIMEOUT = re.compile(r"([1-9][0-9]*)([mhd])")


class AlipayError(Exception):
    """An answer other than success: Alipay's ``code`` and ``sub_code``."""

    def __init__(self, code: str, sub_code: str, sub_msg: str) -> None:
        super().__init__(f"{code} {sub_code}: {sub_msg}")
        self.code = code
        self.sub_code = sub_code
        self.sub_msg = sub_msg


def _invalid(sub_code: str, sub_msg: str) -> AlipayError:
    return AlipayError("40002", sub_code, sub_msg)


def _business(sub_code: str, sub_msg: str) -> AlipayError:
    return AlipayError("40004", sub_code, sub_msg)


def _refused(refusal: books.SandboxRefusal, table: dict[str, tuple[str, str]]) -> AlipayError:
    sub_code, sub_msg = table.get(refusal.code) or REFUSALS.get(
        refusal.code, ("ACQ.SYSTEM_ERROR", refusal.message)
    )
    return _business(sub_code, sub_msg)


def _yuan(fen: int) -> str:
    return f"{Decimal(fen) / 100:.2f}"


def _fen(value: object, field: str) -> int:
    """Alipay accepts amounts with up to two decimals ("20", "20.5", "20.50")."""
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        raise _business("ACQ.INVALID_PARAMETER", f"参数无效: {field}")
    fen = int(Decimal(value) * 100)
    if not 0 < fen <= MAX_AMOUNT_FEN:
        raise _business("ACQ.INVALID_PARAMETER", f"金额超出范围: {field}")
    return fen


def _china(moment: dt.datetime | None) -> str:
    return moment.astimezone(CHINA).strftime(TIME_FORMAT) if moment else ""


def _required(biz: dict[str, Any], *fields: str) -> list[str]:
    values = []
    for field in fields:
        value = biz.get(field)
        if not isinstance(value, str) or not value:
            raise _business("ACQ.INVALID_PARAMETER", f"参数无效: {field}")
        values.append(value)
    return values


def _content(params: dict[str, str], *, exclude: tuple[str, ...]) -> str:
    """Alipay's string to sign: sorted by key, empty values skipped, raw values."""
    return "&".join(
        f"{key}={value}" for key, value in sorted(params.items()) if key not in exclude and value
    )


def _numbered(seed: str, prefix: str, digits: int) -> str:
    """A stable number made from ``seed`` (buyer ids, notify ids)."""
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    return f"{prefix}{number % 10**digits:0{digits}d}"


class AlipaySandbox(SandboxChannel):
    """Alipay's OpenAPI gateway, trade notifies and trade bills, over the
    sandbox's books.

    Trades are opened by ``alipay.trade.precreate`` (a QR code the citizen
    scans), queried, closed and refunded through the gateway; refunds are
    synchronous as at Alipay (``fund_change: "Y"``), so they settle at once
    whatever ``PAYMENTS_SANDBOX_REFUND_SECONDS`` says. The trade notify
    (``trade_status_sync``) is form-encoded and signed like the real one,
    and only a 200 answer whose body is ``success`` stops Alipay's retries.
    """

    identifier: ClassVar[str] = CHANNEL
    # Alipay's documented retries: 4m, 10m, 10m, 1h, 2h, 6h, 15h.
    notify_schedule: ClassVar[tuple[float, ...]] = (240, 600, 600, 3600, 7200, 21600, 54000)

    def __init__(self) -> None:
        super().__init__()
        self.base_url: str = settings.PAYMENTS_CHANNELS[CHANNEL]["sandbox_base_url"].rstrip("/")
        self.methods: dict[str, Callable[[dict[str, str], dict[str, Any]], dict[str, Any]]] = {
            "alipay.trade.precreate": self._precreate,
            "alipay.trade.query": self._query,
            "alipay.trade.close": self._close,
            "alipay.trade.refund": self._refund,
            "alipay.trade.fastpay.refund.query": self._refund_query,
            "alipay.data.dataservice.bill.downloadurl.query": self._bill_url,
        }

    # --- signing ---------------------------------------------------------------------------

    @staticmethod
    def _sign(content: str) -> str:
        signature = keys.private_key("alipay.platform").sign(
            content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
        )
        return base64.b64encode(signature).decode("ascii")

    @staticmethod
    def _merchant_signed(content: bytes, sign: str) -> bool:
        try:
            signature = base64.b64decode(sign, validate=True)
            keys.private_key("alipay.merchant").public_key().verify(
                signature, content, padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    def _answer(self, key: str, node: dict[str, Any]) -> httpx.Response:
        # The merchant verifies the sign over these exact characters, so the
        # node is written once and the body put together around it.
        text = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
        body = f'{{"{key}":{text},"sign":"{self._sign(text)}"}}'
        return httpx.Response(
            200,
            content=body.encode("utf-8"),
            headers={"Content-Type": "text/html;charset=utf-8"},
        )

    def _error(self, key: str, error: AlipayError) -> httpx.Response:
        return self._answer(
            key,
            {
                "code": error.code,
                "msg": MESSAGES.get(error.code, "Business Failed"),
                "sub_code": error.sub_code,
                "sub_msg": error.sub_msg,
            },
        )

    # --- the gateway -----------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one call of Alipay's gateway or one bill download."""
        path = request.url.path
        if path == "/gateway.do" and request.method in ("GET", "POST"):
            return self._gateway(request)
        if path == "/downloadBillFile.resource" and request.method == "GET":
            return self._bill_file(request)
        return httpx.Response(404, text="Not Found")

    @staticmethod
    def _params(request: httpx.Request) -> tuple[dict[str, str], str]:
        """The request's parameters from its query string and its form body,
        decoded in the charset the request names (Alipay reads both)."""
        query = request.url.query
        body = b""
        if request.method == "POST":
            content_type = request.headers.get("Content-Type", "")
            if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
                raise _invalid("isv.invalid-parameter", "请求须为表单")
            body = request.read()
        raw = [query, body]
        # latin-1 never fails: this first pass only looks for the charset.
        sniffed = dict(parse_qsl(b"&".join(p for p in raw if p).decode("latin-1")))
        charset = sniffed.get("charset", "utf-8").lower()
        if charset not in ("utf-8", "gbk", "gb2312"):
            raise _invalid("isv.invalid-charset", "字符集错误")
        params: dict[str, str] = {}
        for part in raw:
            try:
                pairs = parse_qsl(
                    part.decode("ascii"),
                    keep_blank_values=True,
                    encoding=charset,
                    errors="strict",
                )
            except (UnicodeDecodeError, ValueError) as exc:
                raise _invalid("isv.invalid-parameter", "参数编码错误") from exc
            for key, value in pairs:
                if key in params:
                    raise _invalid("isv.invalid-parameter", f"参数重复: {key}")
                params[key] = value
        return params, charset

    def _gateway(self, request: httpx.Request) -> httpx.Response:
        try:
            params, charset = self._params(request)
        except AlipayError as error:
            return self._error("error_response", error)
        method = params.get("method", "")
        if not method:
            return self._error(
                "error_response", AlipayError("40001", "isv.missing-method", "缺少方法名参数")
            )
        handler = self.methods.get(method)
        if handler is None:
            return self._error("error_response", _invalid("isv.invalid-method", "不存在的方法名"))
        key = method.replace(".", "_") + "_response"
        try:
            self._authenticate(params, charset=charset)
            biz = self._biz(params)
            node = handler(params, biz)
        except AlipayError as error:
            return self._error(key, error)
        return self._answer(key, {"code": "10000", "msg": "Success", **node})

    def _authenticate(self, params: dict[str, str], *, charset: str) -> None:
        """The gateway's checks of the common parameters, in its order."""
        for field, sub_code in (
            ("app_id", "isv.missing-app-id"),
            ("sign", "isv.missing-signature"),
            ("sign_type", "isv.missing-signature-type"),
            ("timestamp", "isv.missing-timestamp"),
            ("version", "isv.missing-version"),
        ):
            if not params.get(field):
                raise AlipayError("40001", sub_code, f"缺少参数: {field}")
        if params["app_id"] != self.app_id:
            raise _invalid("isv.invalid-app-id", "无效的AppID参数")
        if params["sign_type"] != "RSA2":
            raise _invalid("isv.invalid-signature-type", "无效的签名类型")
        if params.get("format", "JSON").upper() != "JSON":
            raise _invalid("isv.invalid-format", "无效的数据格式")
        try:
            dt.datetime.strptime(params["timestamp"], TIME_FORMAT)
        except ValueError as exc:
            raise _invalid("isv.invalid-timestamp", "非法的时间戳参数") from exc
        if params["version"] != "1.0":
            raise _invalid("isv.invalid-parameter", "版本号错误")
        # The request's sign covers sign_type (a notify's does not).
        content = _content(params, exclude=("sign",))
        try:
            encoded = content.encode(charset)
        except UnicodeEncodeError as exc:
            raise _invalid("isv.invalid-parameter", "参数编码错误") from exc
        if not self._merchant_signed(encoded, params["sign"]):
            raise _invalid(
                "isv.invalid-signature",
                f"验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为：{content}",
            )

    @staticmethod
    def _biz(params: dict[str, str]) -> dict[str, Any]:
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except json.JSONDecodeError as exc:
            raise _invalid("isv.invalid-parameter", "biz_content 不是合法的 JSON") from exc
        if not isinstance(biz, dict):
            raise _invalid("isv.invalid-parameter", "biz_content 不是 JSON 对象")
        return biz

    # --- trades ----------------------------------------------------------------------------

    def _trade(self, biz: dict[str, Any]) -> SandboxTrade:
        order_no = biz.get("out_trade_no")
        trade_no = biz.get("trade_no")
        if not order_no and not trade_no:
            raise _business("ACQ.INVALID_PARAMETER", "参数无效: out_trade_no")
        trade = None
        if order_no:
            trade = books.trade_get(
                channel=CHANNEL, merchant_id=self.merchant_id, order_no=order_no
            )
        elif isinstance(trade_no, str):
            trade = SandboxTrade.objects.filter(
                channel=CHANNEL, merchant_id=self.merchant_id, transaction_id=trade_no
            ).first()
        if trade is None:
            raise _refused(books.SandboxRefusal("not_found"), {})
        if trade.state == T.NOTPAY and timezone.now() >= trade.expires_at:
            trade = books.trade_close(trade)  # Alipay closes an unpaid trade at its expiry
        return trade

    def _buyer(self, trade: SandboxTrade) -> dict[str, str]:
        return {
            "buyer_user_id": _numbered(trade.transaction_id, "2088", 12),
            "buyer_logon_id": "cit***@sandbox.invalid",
        }

    @staticmethod
    def _refunded_fen(trade: SandboxTrade) -> int:
        total = trade.refunds.filter(state="SUCCESS").aggregate(total=Sum("amount_fen"))["total"]
        return int(total or 0)

    def _trade_status(self, trade: SandboxTrade) -> str:
        if trade.state == T.NOTPAY:
            return "WAIT_BUYER_PAY"
        if trade.state == T.SUCCESS:
            # A trade refunded in full is closed at Alipay.
            return (
                "TRADE_CLOSED" if self._refunded_fen(trade) >= trade.amount_fen else "TRADE_SUCCESS"
            )
        return "TRADE_CLOSED"  # closed unpaid, or the payment failed

    def _expires_at(self, biz: dict[str, Any]) -> dt.datetime:
        time_expire = biz.get("time_expire")
        if time_expire:
            try:
                naive = dt.datetime.strptime(str(time_expire), TIME_FORMAT)
            except ValueError as exc:
                raise _business("ACQ.INVALID_PARAMETER", "参数无效: time_expire") from exc
            return naive.replace(tzinfo=CHINA)
        timeout = biz.get("timeout_express")
        if timeout:
            match = _TIMEOUT.fullmatch(str(timeout))
            if match is None:
                raise _business("ACQ.INVALID_PARAMETER", "参数无效: timeout_express")
            unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
            return timezone.now() + dt.timedelta(**{unit: int(match.group(1))})
        return timezone.now() + DEFAULT_TIMEOUT

    def _precreate(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        order_no, amount, subject = _required(biz, "out_trade_no", "total_amount", "subject")
        if len(order_no) > 64:
            raise _business("ACQ.INVALID_PARAMETER", "参数无效: out_trade_no")
        try:
            trade = books.trade_open(
                channel=CHANNEL,
                merchant_id=self.merchant_id,
                app_id=params["app_id"],
                order_no=order_no,
                amount_fen=_fen(amount, "total_amount"),
                description=subject,
                notify_url=params.get("notify_url", ""),
                expires_at=self._expires_at(biz),
            )
        except books.SandboxRefusal as refusal:
            raise _refused(refusal, {}) from refusal
        if trade.state == T.SUCCESS:
            raise _refused(books.SandboxRefusal("trade_paid"), {})
        if trade.state in (T.CLOSED, T.PAYERROR):
            raise _refused(books.SandboxRefusal("trade_closed"), {})
        # The same trade gives the same code, so a merchant's retry shows the
        # citizen the QR code already on screen.
        code = hashlib.sha256(trade.transaction_id.encode()).hexdigest()[:22]
        return {"out_trade_no": order_no, "qr_code": f"{self.base_url}/qr/bax{code}"}

    def _query(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        trade = self._trade(biz)
        status = self._trade_status(trade)
        paid = trade.state == T.SUCCESS
        node: dict[str, Any] = {
            "trade_no": trade.transaction_id,
            "out_trade_no": trade.order_no,
            "trade_status": status,
            "total_amount": _yuan(trade.amount_fen),
            "buyer_pay_amount": _yuan(trade.amount_fen if paid else 0),
            "receipt_amount": _yuan(trade.amount_fen if paid else 0),
            "invoice_amount": _yuan(trade.amount_fen if paid else 0),
            "point_amount": "0.00",
        }
        if paid:
            node["send_pay_date"] = _china(trade.paid_at)
            node["fund_bill_list"] = [
                {"amount": _yuan(trade.amount_fen), "fund_channel": "ALIPAYACCOUNT"}
            ]
        if trade.state != T.NOTPAY:
            node.update(self._buyer(trade))
        return node

    def _close(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        trade = self._trade(biz)
        if trade.state in (T.CLOSED, T.PAYERROR):
            # Closing a closed trade is a status error at Alipay, not a no-op.
            raise _refused(books.SandboxRefusal("not_paid"), {})
        try:
            trade = books.trade_close(trade)
        except books.SandboxRefusal as refusal:
            raise _refused(refusal, CLOSE_REFUSALS) from refusal
        return {"trade_no": trade.transaction_id, "out_trade_no": trade.order_no}

    # --- refunds ---------------------------------------------------------------------------

    def _refund(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        (amount,) = _required(biz, "refund_amount")
        trade = self._trade(biz)
        # Without out_request_no Alipay takes the refund as the trade's one
        # full-amount refund, numbered by the trade.
        refund_no = str(biz.get("out_request_no") or trade.order_no)
        amount_fen = _fen(amount, "refund_amount")
        try:
            existing = trade.refunds.filter(refund_no=refund_no).exists()
            refund = books.refund_open(trade=trade, refund_no=refund_no, amount_fen=amount_fen)
        except books.SandboxRefusal as refusal:
            raise _refused(refusal, {}) from refusal
        refund = self._settle(trade, refund)
        return {
            "trade_no": trade.transaction_id,
            "out_trade_no": trade.order_no,
            # A repeated request moves no money a second time.
            "fund_change": "N" if existing else "Y",
            "refund_fee": _yuan(self._refunded_fen(trade)),
            "gmt_refund_pay": _china(refund.succeeded_at),
            "send_back_fee": _yuan(refund.amount_fen),
            **self._buyer(trade),
        }

    @staticmethod
    def _settle(trade: SandboxTrade, refund: SandboxRefund) -> SandboxRefund:
        """Alipay refunds synchronously: the refund's settle time becomes
        now, and the books settle it as they settle every refund."""
        SandboxRefund.objects.filter(pk=refund.pk, state="PROCESSING").update(
            settles_at=timezone.now()
        )
        settled = books.refund_get(trade=trade, refund_no=refund.refund_no)
        assert settled is not None  # opened just above
        return settled

    def _refund_query(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        trade = self._trade(biz)
        refund_no = str(biz.get("out_request_no") or trade.order_no)
        refund = books.refund_get(trade=trade, refund_no=refund_no)
        node: dict[str, Any] = {"trade_no": trade.transaction_id, "out_trade_no": trade.order_no}
        # Alipay answers an unknown refund with success and no refund fields.
        if refund is None:
            return node
        if refund.state == "PROCESSING":
            refund = self._settle(trade, refund)
        node.update(
            {
                "out_request_no": refund.refund_no,
                "total_amount": _yuan(trade.amount_fen),
                "refund_amount": _yuan(refund.amount_fen),
                "refund_status": "REFUND_SUCCESS",
                "gmt_refund_pay": _china(refund.succeeded_at),
            }
        )
        return node

    # --- bills -----------------------------------------------------------------------------

    def _bill_token(self, query: dict[str, str]) -> str:
        content = _content(query, exclude=("token",)).encode()
        return hmac.new(keys.secret("alipay.bill"), content, hashlib.sha256).hexdigest()

    def _bill_url(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        bill_type, bill_date = _required(biz, "bill_type", "bill_date")
        if bill_type != "trade":
            raise _business("isp.bill_type_not_support", "账单类型不支持")
        # Daily bills only ("yyyy-MM-dd"); Alipay's monthly "yyyy-MM" is not kept here.
        try:
            date = dt.datetime.strptime(bill_date, "%Y-%m-%d").date()
        except ValueError as exc:
            raise _invalid("isv.invalid-parameter", "参数无效: bill_date") from exc
        if date > timezone.now().astimezone(CHINA).date():
            raise _business("isp.bill_not_exist", "账单不存在")
        stamp = date.strftime("%Y%m%d")
        query = {
            "bizType": "trade",
            "userId": f"{self.merchant_id}0156",
            "fileType": "csv.zip",
            "bizDates": stamp,
            "downloadFileName": f"{self.merchant_id}0156_{stamp}.csv.zip",
            "fileId": f"/trade/{self.merchant_id}0156/{stamp}.csv.zip",
            "timestamp": str(int(time.time() * 1000)),
        }
        query["token"] = self._bill_token(query)
        return {
            "bill_download_url": f"{self.base_url}/downloadBillFile.resource?{urlencode(query)}"
        }

    def _bill_file(self, request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        token = query.get("token", "")
        fresh = (
            query.get("timestamp", "").isdigit()
            and time.time() * 1000 - int(query["timestamp"]) <= BILL_URL_SECONDS * 1000
        )
        if not (hmac.compare_digest(token, self._bill_token(query)) and fresh):
            return httpx.Response(403, text="Forbidden")
        date = dt.datetime.strptime(query["bizDates"], "%Y%m%d").date()
        return httpx.Response(
            200,
            content=self._bill_zip(date),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f"attachment; filename={query['downloadFileName']}",
            },
        )

    def _bill_zip(self, date: dt.date) -> bytes:
        """The day's trade bill as Alipay ships it: a zip of the business
        detail CSV and its summary, GBK, values followed by a tab (Alipay's
        guard against spreadsheets turning numbers into numbers)."""
        trades, refunds = books.statement(channel=CHANNEL, merchant_id=self.merchant_id, date=date)
        start = dt.datetime.combine(date, dt.time.min)
        account = f"{self.merchant_id}0156"
        exported = timezone.now().astimezone(CHINA).strftime("%Y年%m月%d日 %H:%M:%S")
        period = (
            f"#起始日期：[{start:%Y年%m月%d日 %H:%M:%S}]   "
            f"终止日期：[{start + dt.timedelta(days=1):%Y年%m月%d日 %H:%M:%S}]"
        )
        header = (
            "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,"
            "操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,"
            "支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,"
            "卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
        )

        def row(
            trade: SandboxTrade,
            kind: str,
            created: dt.datetime | None,
            done: dt.datetime | None,
            received: str,
            refund_no: str,
        ) -> str:
            cells = [
                trade.transaction_id,
                trade.order_no,
                kind,
                trade.description.replace(",", "，"),
                _china(created),
                _china(done),
                "",
                "",
                "",
                "",
                "cit***@sandbox.invalid",
                _yuan(trade.amount_fen),
                received,
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                "",
                "0.00",
                "0.00",
                refund_no,
                "0.00",
                "0.00",
                "",
            ]
            return ",".join(f"{cell}\t" for cell in cells)

        rows = [
            row(t, "交易", t.created_at, t.paid_at, _yuan(t.amount_fen), "") for t in trades
        ] + [
            row(
                r.trade,
                "退款",
                r.created_at,
                r.succeeded_at,
                f"-{_yuan(r.amount_fen)}",
                r.refund_no,
            )
            for r in refunds
        ]
        charged = sum(t.amount_fen for t in trades)
        refunded = sum(r.amount_fen for r in refunds)
        detail = [
            "#支付宝业务明细查询",
            f"#账号：[{account}]",
            period,
            "#-----------------------------------------业务明细列表----------------------------------------",
            header,
            *rows,
            "#-----------------------------------------业务明细列表结束------------------------------------",
            f"#交易合计：{len(trades)}笔，商家实收：{_yuan(charged)}元，商家优惠：0.00元",
            f"#退款合计：{len(refunds)}笔，商家实收：-{_yuan(refunded)}元，商家优惠：0.00元",
            f"#导出时间：[{exported}]",
        ]
        summary = [
            "#支付宝业务汇总查询",
            f"#账号：[{account}]",
            period,
            "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,"
            "支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）",
            f"合计,,{len(trades)},{len(refunds)},{_yuan(charged)},{_yuan(charged - refunded)},"
            f"0.00,0.00,0.00,0.00,0.00,{_yuan(charged - refunded)}",
            "#-----------------------------------------账务汇总列表结束------------------------------------",
            f"#导出时间：[{exported}]",
        ]
        stamp = date.strftime("%Y%m%d")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, lines in (("业务明细", detail), ("业务明细(汇总)", summary)):
                archive.writestr(
                    f"{account}_{stamp}_{name}.csv", "\r\n".join(lines).encode("gbk") + b"\r\n"
                )
        return buffer.getvalue()

    # --- notifies --------------------------------------------------------------------------

    def payment_notify(self, trade: SandboxTrade) -> tuple[dict[str, str], bytes] | None:
        """The ``trade_status_sync`` notify: TRADE_SUCCESS for a paid trade,
        TRADE_CLOSED for a failed or closed one, none for one still open."""
        if trade.state == T.NOTPAY:
            return None
        now = timezone.now()
        paid = trade.state == T.SUCCESS
        params = {
            "notify_time": _china(now),
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(16) + _numbered(trade.transaction_id, "", 6),
            "app_id": trade.app_id,
            "auth_app_id": trade.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "sign_type": "RSA2",
            "trade_no": trade.transaction_id,
            "out_trade_no": trade.order_no,
            "buyer_id": _numbered(trade.transaction_id, "2088", 12),
            "buyer_logon_id": "cit***@sandbox.invalid",
            "seller_id": trade.merchant_id,
            "trade_status": "TRADE_SUCCESS" if paid else "TRADE_CLOSED",
            "total_amount": _yuan(trade.amount_fen),
            "subject": trade.description,
            "gmt_create": _china(trade.created_at),
        }
        if paid:
            amount = _yuan(trade.amount_fen)
            params.update(
                {
                    "receipt_amount": amount,
                    "buyer_pay_amount": amount,
                    "invoice_amount": amount,
                    "point_amount": "0.00",
                    "gmt_payment": _china(trade.paid_at),
                    "fund_bill_list": json.dumps(
                        [{"amount": amount, "fundChannel": "ALIPAYACCOUNT"}],
                        separators=(",", ":"),
                    ),
                }
            )
        else:
            params["gmt_close"] = _china(trade.closed_at or now)
        # A notify's sign covers neither sign nor sign_type.
        params["sign"] = self._sign(_content(params, exclude=("sign", "sign_type")))
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        return headers, urlencode(params).encode("ascii")

    def notify_acknowledged(self, response: httpx.Response) -> bool:
        """Alipay stops only on HTTP 200 with the body ``success``."""
        return response.status_code == 200 and response.text.strip() == "success"

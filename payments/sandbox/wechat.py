"""The sandbox of WeChat Pay API v3 (微信支付 APIv3): its API, its callbacks, its bills.

It speaks the real wire format: it checks each request's ``Authorization:
WECHATPAY2-SHA256-RSA2048 mchid=…,nonce_str=…,signature=…,timestamp=…,
serial_no=…`` (SHA256withRSA by the merchant's key over ``METHOD\\nURL\\n
TIMESTAMP\\nNONCE\\nBODY\\n``), answers JSON with its errors as
``{"code", "message"}`` and HTTP statuses, and signs every answer with the
platform key over ``TIMESTAMP\\nNONCE\\nBODY\\n`` (headers ``Wechatpay-*``).
Payment callbacks carry the transaction AES-256-GCM encrypted with the API v3
key. Trade bills come from a download URL on the sandbox host that works for
30 seconds, in WeChat's backtick-prefixed text with a SHA1 to check.

This module signs and verifies on its own and never imports the merchant's
side (:mod:`payments.providers.wechat`): a round trip between the two is a
test of both, and the wechatpayv3 SDK tests check it against a third party.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import hashlib
import hmac
import json
import re
import secrets
import string
import uuid
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.utils import timezone

from payments.models import SandboxRefund, SandboxTrade, SandboxTradeState
from payments.sandbox import books, keys
from payments.sandbox.channels import SandboxChannel

T = SandboxTradeState
CHANNEL = "wechat"
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
# WeChat Pay writes every time in China time.
CHINA = ZoneInfo("Asia/Shanghai")
# WeChat refuses a request whose signature timestamp is five minutes off.
CLOCK_SKEW_SECONDS = 300
# How long a bill download URL works (WeChat's last 30 seconds).
BILL_URL_SECONDS = 30
# A Native order without time_expire can be paid for two hours.
DEFAULT_EXPIRY = dt.timedelta(hours=2)
# WeChat's fee on an ordinary merchant's payments, shown on the bill.
FEE_RATE = Decimal("0.006")
ALPHANUMERIC = string.ascii_letters + string.digits

_ORDER_NO = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
_BILL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_AUTH_FIELD = re.compile(r'(\w+)="([^"]*)"')

TRADE_STATE_DESC = {
    "SUCCESS": "支付成功",
    "REFUND": "转入退款",
    "NOTPAY": "订单未支付",
    "CLOSED": "订单已关闭",
    "PAYERROR": "支付失败，请重新下单支付",
}

# The books' neutral refusals in WeChat's words: HTTP status, code, message.
REFUSALS: dict[str, tuple[int, str, str]] = {
    "order_no_used": (403, "OUT_TRADE_NO_USED", "商户订单号重复"),
    "not_found": (404, "ORDER_NOT_EXIST", "订单不存在"),
    "trade_paid": (403, "ORDERPAID", "该订单已支付"),
    "trade_closed": (400, "ORDER_CLOSED", "订单已关闭"),
    "not_paid": (400, "INVALID_REQUEST", "订单未支付，不能退款"),
    "refund_exceeds": (400, "INVALID_REQUEST", "申请退款金额超过订单可退金额"),
    "refund_no_used": (400, "INVALID_REQUEST", "退款单号重复，请求参数与首次请求不一致"),
}
# Where one API words the same refusal its own way.
CLOSE_REFUSALS = {"trade_paid": (400, "ORDERPAID", "订单已支付，不能关闭")}
REFUND_REFUSALS = {"not_found": (404, "RESOURCE_NOT_EXISTS", "订单不存在")}

BILL_COLUMNS = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
    "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,"
    "费率备注"
)
BILL_SUMMARY = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)


# An API handler: (request, mchid, **path parameters) -> answer.
Handler = Callable[..., httpx.Response]


class WechatError(Exception):
    """An answer other than success: WeChat's HTTP status, ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _param_error(message: str) -> WechatError:
    return WechatError(400, "PARAM_ERROR", message)


def _refused(refusal: books.SandboxRefusal, table: dict[str, tuple[int, str, str]]) -> WechatError:
    status, code, message = table.get(refusal.code) or REFUSALS.get(
        refusal.code, (500, "SYSTEM_ERROR", refusal.message)
    )
    return WechatError(status, code, message)


def _rfc3339(moment: dt.datetime) -> str:
    return timezone.localtime(moment, CHINA).isoformat(timespec="seconds")


def _bill_time(moment: dt.datetime) -> str:
    return timezone.localtime(moment, CHINA).strftime("%Y-%m-%d %H:%M:%S")


def _yuan(fen: int) -> str:
    return f"{Decimal(fen) / 100:.2f}"


def _fee_fen(fen: int) -> int:
    return int((Decimal(fen) * FEE_RATE).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHANUMERIC) for _ in range(length))


def _string(data: dict[str, Any], key: str, *, required: bool = True, limit: int = 0) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise _param_error(f"缺少参数或参数类型错误: {key}")
    if limit and len(value) > limit:
        raise _param_error(f"参数长度超过限制: {key}")
    return value


def _amount(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _param_error(f"金额参数错误: {key}")
    return value


def _openid(trade: SandboxTrade) -> str:
    """A stable stand-in for the payer's openid (28 characters like WeChat's)."""
    digest = hashlib.sha256(f"{trade.app_id}:{trade.transaction_id}".encode()).digest()
    return "o" + base64.urlsafe_b64encode(digest).decode()[:27]


class WechatSandbox(SandboxChannel):
    """WeChat Pay API v3 for a directly connected merchant, Native payment,
    over the sandbox's books.

    Serves ``POST /v3/pay/transactions/native``, ``GET
    /v3/pay/transactions/out-trade-no/{no}?mchid=``, ``POST
    …/out-trade-no/{no}/close``, ``POST /v3/refund/domestic/refunds``, ``GET
    /v3/refund/domestic/refunds/{no}``, ``GET /v3/bill/tradebill`` and the
    bill download it points to. It checks every request's signature with the
    merchant's public key (``wechat.merchant``) and signs every answer with
    ``wechat.platform``, whose id (``Wechatpay-Serial``) is
    :func:`payments.sandbox.keys.serial` of it. Refunds settle
    ``PAYMENTS_SANDBOX_REFUND_SECONDS`` after they are asked for (WeChat's
    are asynchronous too). It calls back on a successful payment only, with
    the transaction encrypted under ``wechat.apiv3``; a 200 or 204 stops its
    retries.
    """

    identifier: ClassVar[str] = CHANNEL
    # WeChat's documented retries of an unacknowledged callback:
    # 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h.
    notify_schedule: ClassVar[tuple[float, ...]] = (
        15,
        15,
        30,
        180,
        600,
        1200,
        1800,
        1800,
        1800,
        3600,
        10800,
        10800,
        10800,
        21600,
        21600,
    )

    def __init__(self) -> None:
        super().__init__()
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(r"/v3/pay/transactions/native"), self._native),
            ("GET", re.compile(r"/v3/pay/transactions/out-trade-no/(?P<no>[^/]+)"), self._query),
            (
                "POST",
                re.compile(r"/v3/pay/transactions/out-trade-no/(?P<no>[^/]+)/close"),
                self._close,
            ),
            ("POST", re.compile(r"/v3/refund/domestic/refunds"), self._refund),
            ("GET", re.compile(r"/v3/refund/domestic/refunds/(?P<no>[^/]+)"), self._refund_query),
            ("GET", re.compile(r"/v3/bill/tradebill"), self._trade_bill),
            ("GET", re.compile(r"/v3/billdownload/file"), self._bill_file),
        ]

    # --- signing ---------------------------------------------------------------------------

    @staticmethod
    def signed_headers(body: bytes) -> dict[str, str]:
        """The platform's signature headers over ``body``, stamped now."""
        timestamp = str(int(timezone.now().timestamp()))
        nonce = _random(32)
        message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
        signature = keys.private_key("wechat.platform").sign(
            message, padding.PKCS1v15(), hashes.SHA256()
        )
        return {
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": base64.b64encode(signature).decode("ascii"),
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Serial": keys.serial("wechat.platform"),
            "Wechatpay-Signature-Type": SIGNATURE_TYPE,
        }

    def _answer(self, status: int, payload: dict[str, Any] | None = None) -> httpx.Response:
        body = _dumps(payload) if payload is not None else b""
        headers = {"Request-ID": str(uuid.uuid4()), **self.signed_headers(body)}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        return httpx.Response(status, headers=headers, content=body)

    def _authenticate(self, request: httpx.Request) -> str:
        """The merchant's signature on ``request``; returns its mchid."""
        scheme, _, rest = request.headers.get("Authorization", "").partition(" ")
        fields = dict(_AUTH_FIELD.findall(rest))
        if scheme != SIGNATURE_TYPE or not all(
            fields.get(k) for k in ("mchid", "nonce_str", "signature", "timestamp", "serial_no")
        ):
            raise WechatError(401, "SIGN_ERROR", "Authorization 缺失或格式错误")
        if fields["mchid"] != self.merchant_id:
            raise WechatError(400, "MCH_NOT_EXISTS", "商户号不存在")
        if fields["serial_no"] != keys.serial("wechat.merchant"):
            raise WechatError(401, "SIGN_ERROR", "商户证书序列号有误")
        timestamp = fields["timestamp"]
        if (
            not timestamp.isdigit()
            or abs(int(timezone.now().timestamp()) - int(timestamp)) > CLOCK_SKEW_SECONDS
        ):
            raise WechatError(401, "SIGN_ERROR", "请求时间戳与当前时间相差超过 5 分钟")
        message = (
            (
                f"{request.method}\n{request.url.raw_path.decode('ascii')}\n"
                f"{timestamp}\n{fields['nonce_str']}\n"
            ).encode()
            + request.content
            + b"\n"
        )
        try:
            keys.private_key("wechat.merchant").public_key().verify(
                base64.b64decode(fields["signature"], validate=True),
                message,
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, binascii.Error) as exc:
            raise WechatError(401, "SIGN_ERROR", "签名错误") from exc
        # In platform-public-key mode the merchant names the key it expects
        # the answer to be signed with.
        serial = request.headers.get("Wechatpay-Serial")
        if serial is not None and serial != keys.serial("wechat.platform"):
            raise _param_error("Wechatpay-Serial 无效")
        return fields["mchid"]

    # --- the API -----------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one call of WeChat Pay's API, or one bill download."""
        path = request.url.path
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if request.method != method:
                break
            try:
                mchid = self._authenticate(request)
                return handler(request, mchid, **match.groupdict())
            except WechatError as error:
                return self._answer(error.status, {"code": error.code, "message": error.message})
        return self._answer(404, {"code": "NOT_FOUND", "message": "请求的资源不存在"})

    @staticmethod
    def _body(request: httpx.Request) -> dict[str, Any]:
        try:
            body = json.loads(request.content)
        except ValueError as exc:
            raise _param_error("请求体不是合法的 JSON") from exc
        if not isinstance(body, dict):
            raise _param_error("请求体不是 JSON 对象")
        return body

    @staticmethod
    def _same_merchant(given: str, mchid: str) -> None:
        if given != mchid:
            raise _param_error("mchid 与请求头中的商户号不一致")

    def _trade(self, mchid: str, order_no: str) -> SandboxTrade:
        trade = books.trade_get(channel=CHANNEL, merchant_id=mchid, order_no=order_no)
        if trade is None:
            raise _refused(books.SandboxRefusal("not_found"), {})
        return trade

    def _native(self, request: httpx.Request, mchid: str) -> httpx.Response:
        body = self._body(request)
        self._same_merchant(_string(body, "mchid"), mchid)
        if _string(body, "appid") != self.app_id:
            raise WechatError(400, "APPID_MCHID_NOT_MATCH", "appid 和 mch_id 不匹配")
        order_no = _string(body, "out_trade_no")
        if not _ORDER_NO.fullmatch(order_no):
            raise _param_error("out_trade_no 须为 6-32 位数字、字母或 _-|*")
        description = _string(body, "description", limit=127)
        notify_url = _string(body, "notify_url", limit=255)
        if not notify_url.startswith(("https://", "http://")):
            raise _param_error("notify_url 格式错误")
        amount = body.get("amount")
        if not isinstance(amount, dict):
            raise _param_error("缺少参数: amount")
        if amount.get("currency", "CNY") != "CNY":
            raise _param_error("currency 仅支持 CNY")
        time_expire = _string(body, "time_expire", required=False)
        if time_expire:
            try:
                expires_at = dt.datetime.fromisoformat(time_expire)
            except ValueError as exc:
                raise _param_error("time_expire 须为 RFC 3339 格式") from exc
            if expires_at.tzinfo is None:
                raise _param_error("time_expire 须带时区")
        else:
            expires_at = timezone.now() + DEFAULT_EXPIRY
        try:
            trade = books.trade_open(
                channel=CHANNEL,
                merchant_id=mchid,
                app_id=self.app_id,
                order_no=order_no,
                amount_fen=_amount(amount, "total"),
                description=description,
                notify_url=notify_url,
                expires_at=expires_at,
            )
        except books.SandboxRefusal as refusal:
            raise _refused(refusal, {}) from refusal
        if trade.state == T.SUCCESS:
            raise _refused(books.SandboxRefusal("trade_paid"), {})
        if trade.state == T.CLOSED:
            raise _refused(books.SandboxRefusal("trade_closed"), {})
        # The same trade gives the same code, as WeChat's does for two hours,
        # so a merchant's retry shows the QR code already on screen.
        digest = hashlib.sha256(trade.transaction_id.encode()).digest()
        code = "".join(ALPHANUMERIC[b % len(ALPHANUMERIC)] for b in digest[:9])
        return self._answer(200, {"code_url": f"weixin://wxpay/bizpayurl?pr={code}"})

    def _query(self, request: httpx.Request, mchid: str, no: str) -> httpx.Response:
        self._same_merchant(request.url.params.get("mchid", ""), mchid)
        return self._answer(200, self.transaction(self._trade(mchid, no)))

    def _close(self, request: httpx.Request, mchid: str, no: str) -> httpx.Response:
        self._same_merchant(_string(self._body(request), "mchid"), mchid)
        try:
            books.trade_close(self._trade(mchid, no))
        except books.SandboxRefusal as refusal:
            raise _refused(refusal, CLOSE_REFUSALS) from refusal
        return self._answer(204)

    def transaction(self, trade: SandboxTrade, *, state: str = "") -> dict[str, Any]:
        """The trade as WeChat's transaction object (the query's answer and
        the callback's plaintext)."""
        if not state:
            state = str(trade.state)
            # WeChat shows a paid trade with a refund as REFUND (转入退款).
            if state == T.SUCCESS and trade.refunds.exists():
                state = "REFUND"
        data: dict[str, Any] = {
            "appid": trade.app_id,
            "mchid": trade.merchant_id,
            "out_trade_no": trade.order_no,
            "trade_state": state,
            "trade_state_desc": TRADE_STATE_DESC.get(state, state),
            "attach": "",
            "amount": {"total": trade.amount_fen, "currency": "CNY", "payer_currency": "CNY"},
        }
        # A trade nobody tried to pay has no transaction at WeChat yet.
        if state in ("SUCCESS", "REFUND", "PAYERROR"):
            data.update(
                transaction_id=trade.transaction_id,
                trade_type="NATIVE",
                bank_type="OTHERS",
                payer={"openid": _openid(trade)},
            )
        if state in ("SUCCESS", "REFUND") and trade.paid_at is not None:
            data["success_time"] = _rfc3339(trade.paid_at)
            data["amount"]["payer_total"] = trade.amount_fen
        return data

    # --- refunds -----------------------------------------------------------------------------

    def _refund(self, request: httpx.Request, mchid: str) -> httpx.Response:
        body = self._body(request)
        refund_no = _string(body, "out_refund_no")
        if not _REFUND_NO.fullmatch(refund_no):
            raise _param_error("out_refund_no 格式错误")
        _string(body, "reason", required=False, limit=80)
        amount = body.get("amount")
        if not isinstance(amount, dict):
            raise _param_error("缺少参数: amount")
        if amount.get("currency", "CNY") != "CNY":
            raise _param_error("currency 仅支持 CNY")
        refund_fen, total_fen = _amount(amount, "refund"), _amount(amount, "total")
        transaction_id = _string(body, "transaction_id", required=False)
        trade: SandboxTrade | None
        if transaction_id:
            trade = SandboxTrade.objects.filter(
                channel=CHANNEL, merchant_id=mchid, transaction_id=transaction_id
            ).first()
        else:
            order_no = _string(body, "out_trade_no")
            trade = books.trade_get(channel=CHANNEL, merchant_id=mchid, order_no=order_no)
        if trade is None:
            raise _refused(books.SandboxRefusal("not_found"), REFUND_REFUSALS)
        if total_fen != trade.amount_fen:
            raise WechatError(400, "INVALID_REQUEST", "订单金额 total 与原订单金额不一致")
        try:
            refund = books.refund_open(trade=trade, refund_no=refund_no, amount_fen=refund_fen)
        except books.SandboxRefusal as refusal:
            raise _refused(refusal, REFUND_REFUSALS) from refusal
        # One whose time has already come (no delay configured) has settled.
        settled = books.refund_get(trade=trade, refund_no=refund.refund_no) or refund
        return self._answer(200, self._refund_object(settled))

    def _refund_query(self, request: httpx.Request, mchid: str, no: str) -> httpx.Response:
        found = (
            SandboxRefund.objects.filter(
                trade__channel=CHANNEL, trade__merchant_id=mchid, refund_no=no
            )
            .select_related("trade")
            .first()
        )
        refund = found and books.refund_get(trade=found.trade, refund_no=no)
        if not refund:
            raise WechatError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return self._answer(200, self._refund_object(refund))

    @staticmethod
    def _refund_object(refund: SandboxRefund) -> dict[str, Any]:
        trade = refund.trade
        data: dict[str, Any] = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.refund_no,
            "transaction_id": trade.transaction_id,
            "out_trade_no": trade.order_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": _rfc3339(refund.created_at),
            "status": refund.state,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": trade.amount_fen,
                "refund": refund.amount_fen,
                "from": [],
                "payer_total": trade.amount_fen,
                "payer_refund": refund.amount_fen,
                "settlement_refund": refund.amount_fen,
                "settlement_total": trade.amount_fen,
                "discount_refund": 0,
                "currency": "CNY",
                "refund_fee": 0,
            },
            "promotion_detail": [],
        }
        if refund.succeeded_at is not None:
            data["success_time"] = _rfc3339(refund.succeeded_at)
        return data

    # --- bills -------------------------------------------------------------------------------

    @staticmethod
    def _bill_token(claims: dict[str, str]) -> str:
        payload = base64.urlsafe_b64encode(_dumps(claims)).decode().rstrip("=")
        mac = hmac.new(keys.secret("wechat.bill"), payload.encode(), hashlib.sha256).hexdigest()
        return f"{payload}.{mac}"

    @staticmethod
    def _bill_claims(token: str) -> dict[str, str]:
        payload, _, mac = token.partition(".")
        expected = hmac.new(keys.secret("wechat.bill"), payload.encode(), hashlib.sha256)
        if not hmac.compare_digest(expected.hexdigest(), mac):
            raise WechatError(400, "INVALID_REQUEST", "下载链接无效")
        claims: dict[str, str] = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
        return claims

    def _trade_bill(self, request: httpx.Request, mchid: str) -> httpx.Response:
        params = request.url.params
        bill_date = params.get("bill_date", "")
        try:
            date = dt.date.fromisoformat(bill_date) if _BILL_DATE.fullmatch(bill_date) else None
        except ValueError:
            date = None
        if date is None:
            raise _param_error("bill_date 须为 YYYY-MM-DD")
        # Unlike WeChat, whose bill of a day is ready the next morning, the
        # sandbox gives today's bill so far: tests and demos reconcile today.
        now = timezone.now()
        if date > timezone.localtime(now, CHINA).date():
            raise _param_error("bill_date 不能是未来的日期")
        bill_type = params.get("bill_type", "ALL")
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            raise _param_error("bill_type 取值错误")
        tar_type = params.get("tar_type", "")
        if tar_type not in ("", "GZIP"):
            raise _param_error("tar_type 取值错误")
        claims = {
            "mchid": mchid,
            "date": date.isoformat(),
            "type": bill_type,
            "tar": tar_type,
            # The bill is what was settled up to this moment, so the file
            # fetched later matches the hash given now.
            "asof": now.isoformat(),
        }
        content = self._bill_content(claims)
        if content is None:
            raise WechatError(400, "NO_STATEMENT_EXIST", "No statement exist")
        url = request.url.copy_with(
            raw_path=f"/v3/billdownload/file?token={self._bill_token(claims)}".encode()
        )
        return self._answer(
            200,
            {
                "download_url": str(url),
                "hash_type": "SHA1",
                "hash_value": hashlib.sha1(content).hexdigest(),
            },
        )

    def _bill_file(self, request: httpx.Request, mchid: str) -> httpx.Response:
        claims = self._bill_claims(request.url.params.get("token", ""))
        if claims["mchid"] != mchid:
            raise WechatError(403, "NO_AUTH", "无权下载该账单")
        age = timezone.now() - dt.datetime.fromisoformat(claims["asof"])
        if age > dt.timedelta(seconds=BILL_URL_SECONDS):
            raise WechatError(400, "INVALID_REQUEST", "下载链接已过期")
        content = self._bill_content(claims) or b""
        # The file itself is not signed: its SHA1 came in a signed answer.
        return httpx.Response(
            200,
            headers={"Content-Type": "application/octet-stream", "Request-ID": str(uuid.uuid4())},
            content=content,
        )

    def _bill_content(self, claims: dict[str, str]) -> bytes | None:
        """The bill the claims describe, or None for a day without trades."""
        asof = dt.datetime.fromisoformat(claims["asof"])
        trades, refunds = books.statement(
            channel=CHANNEL, merchant_id=claims["mchid"], date=dt.date.fromisoformat(claims["date"])
        )
        trades = sorted(
            (t for t in trades if t.paid_at is not None and t.paid_at <= asof),
            key=lambda t: (t.paid_at, t.pk),
        )
        refunds = sorted(
            (r for r in refunds if r.succeeded_at is not None and r.succeeded_at <= asof),
            key=lambda r: (r.succeeded_at, r.pk),
        )
        if claims["type"] == "SUCCESS":
            refunds = []
        elif claims["type"] == "REFUND":
            trades = []
        if not trades and not refunds:
            return None
        text = self.trade_bill_text(trades, refunds)
        content = text.encode("utf-8")
        # mtime=0: the same bill compresses to the same bytes, and hash.
        return gzip.compress(content, mtime=0) if claims["tar"] == "GZIP" else content

    @staticmethod
    def trade_bill_text(trades: list[SandboxTrade], refunds: list[SandboxRefund]) -> str:
        """WeChat's trade bill: the Chinese column names, one line per
        payment or refund with every field behind a backtick, the summary."""

        def line(fields: list[str]) -> str:
            # A backtick or line break inside a field would end it early.
            return ",".join("`" + re.sub(r"[`\r\n]", " ", f) for f in fields)

        rows = []
        settled = fees = refunded = 0
        for trade in trades:
            assert trade.paid_at is not None  # filtered by the caller
            fee = _fee_fen(trade.amount_fen)
            settled, fees = settled + trade.amount_fen, fees + fee
            rows.append(
                line(
                    [
                        _bill_time(trade.paid_at),
                        trade.app_id,
                        trade.merchant_id,
                        "0",
                        "",
                        trade.transaction_id,
                        trade.order_no,
                        _openid(trade),
                        "NATIVE",
                        "SUCCESS",
                        "OTHERS",
                        "CNY",
                        _yuan(trade.amount_fen),
                        "0.00",
                        "0",
                        "0",
                        "0.00",
                        "0.00",
                        "",
                        "",
                        trade.description,
                        "",
                        _yuan(fee),
                        "0.60%",
                        _yuan(trade.amount_fen),
                        "0.00",
                        "",
                    ]
                )
            )
        for refund in refunds:
            assert refund.succeeded_at is not None  # filtered by the caller
            trade = refund.trade
            fee = -_fee_fen(refund.amount_fen)  # the fee goes back with the money
            refunded, fees = refunded + refund.amount_fen, fees + fee
            rows.append(
                line(
                    [
                        _bill_time(refund.succeeded_at),
                        trade.app_id,
                        trade.merchant_id,
                        "0",
                        "",
                        trade.transaction_id,
                        trade.order_no,
                        _openid(trade),
                        "NATIVE",
                        "REFUND",
                        "OTHERS",
                        "CNY",
                        "0.00",
                        "0.00",
                        refund.refund_id,
                        refund.refund_no,
                        _yuan(refund.amount_fen),
                        "0.00",
                        "ORIGINAL",
                        "SUCCESS",
                        trade.description,
                        "",
                        _yuan(fee),
                        "0.60%",
                        "0.00",
                        _yuan(refund.amount_fen),
                        "",
                    ]
                )
            )
        summary = line(
            [
                str(len(rows)),
                _yuan(settled),
                _yuan(refunded),
                "0.00",
                _yuan(fees),
                _yuan(settled),
                _yuan(refunded),
            ]
        )
        return "\r\n".join([BILL_COLUMNS, *rows, BILL_SUMMARY, summary]) + "\r\n"

    # --- callbacks ---------------------------------------------------------------------------

    def payment_notify(self, trade: SandboxTrade) -> tuple[dict[str, str], bytes] | None:
        """``TRANSACTION.SUCCESS``: the transaction, AES-256-GCM encrypted
        with the API v3 key, in a body signed by the platform key. None for
        any other outcome: WeChat calls back on success only."""
        if trade.state != T.SUCCESS:
            return None
        nonce = _random(12)
        associated_data = "transaction"
        plaintext = _dumps(self.transaction(trade, state="SUCCESS"))
        # AESGCM appends the 16-byte tag to the ciphertext, as WeChat sends it.
        sealed = AESGCM(keys.secret("wechat.apiv3")).encrypt(
            nonce.encode(), plaintext, associated_data.encode()
        )
        body = _dumps(
            {
                "id": str(uuid.uuid4()),
                "create_time": _rfc3339(timezone.now()),
                "resource_type": "encrypt-resource",
                "event_type": "TRANSACTION.SUCCESS",
                "summary": "支付成功",
                "resource": {
                    "original_type": "transaction",
                    "algorithm": "AEAD_AES_256_GCM",
                    "ciphertext": base64.b64encode(sealed).decode("ascii"),
                    "associated_data": associated_data,
                    "nonce": nonce,
                },
            }
        )
        headers = {"Content-Type": "application/json", **self.signed_headers(body)}
        return headers, body

    def notify_acknowledged(self, response: httpx.Response) -> bool:
        # 200 or 204 is "received"; the body does not matter.
        return response.status_code in (200, 204)

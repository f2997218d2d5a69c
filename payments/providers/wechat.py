"""WeChat Pay API v3 (微信支付 APIv3, 直连商户, Native 支付): the merchant's side.

Every request carries ``Authorization: WECHATPAY2-SHA256-RSA2048 …``, a
SHA256withRSA signature with the merchant's key over the method, the URL
as sent, a timestamp, a nonce and the body. Every answer and every callback
is signed by WeChat Pay's platform key over ``timestamp\\nnonce\\nbody\\n``
(headers ``Wechatpay-*``); we check it with the platform public key named by
``Wechatpay-Serial``. Callback resources are AES-256-GCM encrypted with the
API v3 key. Amounts on the wire are fen already; the daily trade bill speaks
yuan with two decimals.

This module signs and verifies on its own and never imports the sandbox
(:mod:`payments.sandbox.wechat`): a round trip between the two is a test of
both, and the wechatpayv3 SDK tests check both against a third party.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.utils import timezone

from payments.providers.base import (
    STATEMENT_SECONDS,
    BasePaymentProvider,
    NotifyRejected,
    NotifyReply,
    PaymentResult,
    ProviderError,
    RefundResult,
    RefundState,
    StatementLine,
    TradeState,
    answer_read,
    channel_reference,
    channel_time,
    unreached,
    unreached_status,
)

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
# WeChat Pay writes every time in China time, whatever our own zone.
CHINA = ZoneInfo("Asia/Shanghai")
# Refusals WeChat Pay means as "later": the merchant's balance is short of a
# refund (top up, then ask again with the same refund number).
TRY_AGAIN_CODES = frozenset({"NOT_ENOUGH"})
# WeChat Pay refuses a request signed more than five minutes off its clock
# and asks merchants to do the same with its answers and callbacks.
CLOCK_SKEW_SECONDS = 300
# Unix seconds as ASCII digits (str.isdigit() also takes "²" and 5000-digit numbers).
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# WeChat's own limits on the fields we fill from our data.
DESCRIPTION_MAX = 127
REFUND_REASON_MAX = 80

TRADE_STATES: dict[str, TradeState] = {
    "SUCCESS": "paid",
    # REFUND: paid, then (partly) refunded; the refunds are ours to track.
    "REFUND": "paid",
    "NOTPAY": "pending",
    "USERPAYING": "pending",
    "CLOSED": "closed",
    "REVOKED": "closed",
    "PAYERROR": "failed",
}
REFUND_STATES: dict[str, RefundState] = {
    "PROCESSING": "pending",
    "SUCCESS": "succeeded",
    # ABNORMAL: the money could not reach the payer's account; it needs an
    # operator (WeChat's abnormal-refund API or its merchant portal), who
    # completes this same refund, which then turns SUCCESS. Until then it
    # is pending: its amount stays reserved, and the query finds it settled.
    "ABNORMAL": "pending",
    "CLOSED": "failed",
}
REFUND_FAILURES = {"ABNORMAL": "退款异常 (ABNORMAL)", "CLOSED": "退款关闭 (CLOSED)"}

# The columns of the trade bill we read, by their Chinese names (WeChat has
# added columns over the years; their names are what stays).
BILL_TIME = "交易时间"
BILL_TRANSACTION_ID = "微信订单号"
BILL_ORDER_NO = "商户订单号"
BILL_TRADE_STATE = "交易状态"
BILL_REFUND_NO = "商户退款单号"
BILL_REFUND_AMOUNT = "退款金额"
BILL_REFUND_STATE = "退款状态"
BILL_ORDER_AMOUNT = "订单金额"
BILL_SUMMARY = "总交易单数"
# What a trade bill may hold: far above a city's day (a line is some 300
# bytes: this is some 900,000 payments and refunds), well below what would
# exhaust a worker. Past it the bill is refused unread, as an unreadable one.
BILL_MAX_BYTES = 256 << 20


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _rfc3339(value: dt.datetime) -> str:
    return timezone.localtime(value, CHINA).isoformat(timespec="seconds")


def _now_seconds() -> int:
    return int(timezone.now().timestamp())


def _platform_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def _text(data: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    return value


def _fen(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    # bool is an int to Python, never an amount to WeChat.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} is not an amount in fen")
    return value


def _object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not an object")
    return value


def _time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"time without offset: {value!r}")
    return channel_time(parsed)


def read_transaction(data: object) -> PaymentResult:
    """Our view of WeChat's transaction object (a query answer or a
    decrypted callback resource). Raises ValueError when it is not one."""
    transaction = _object(data, "transaction")
    raw_state = _text(transaction, "trade_state")
    state = TRADE_STATES.get(raw_state)
    if state is None:
        raise ValueError(f"unknown trade_state {raw_state!r}")
    amount = _object(transaction.get("amount", {}), "amount")
    # An unpaid trade may come without its amount; a paid one never does.
    amount_fen = _fen(amount, "total") if state == "paid" or "total" in amount else 0
    success_time = _text(transaction, "success_time", required=False)
    return PaymentResult(
        order_no=_text(transaction, "out_trade_no"),
        state=state,
        transaction_id=channel_reference(
            _text(transaction, "transaction_id", required=state == "paid"), "transaction_id"
        ),
        amount_fen=amount_fen,
        merchant_id=_text(transaction, "mchid"),
        app_id=_text(transaction, "appid"),
        paid_at=_time(success_time) if success_time else None,
        raw_state=raw_state,
    )


def read_refund(data: object) -> RefundResult:
    """Our view of WeChat's refund object. Raises ValueError."""
    refund = _object(data, "refund")
    raw_state = _text(refund, "status")
    state = REFUND_STATES.get(raw_state)
    if state is None:
        raise ValueError(f"unknown refund status {raw_state!r}")
    return RefundResult(
        refund_no=_text(refund, "out_refund_no"),
        state=state,
        refund_id=channel_reference(_text(refund, "refund_id"), "refund_id"),
        amount_fen=_fen(_object(refund.get("amount"), "amount"), "refund"),
        failure_reason=REFUND_FAILURES.get(raw_state, ""),
        succeeded_at=_refund_time(refund) if state == "succeeded" else None,
    )


def _refund_time(refund: Mapping[str, Any]) -> dt.datetime | None:
    """A refund's ``success_time`` (when the money went back), if it reads
    as a time: it dates the refund, it does not decide it."""
    try:
        success_time = _text(refund, "success_time", required=False)
        return _time(success_time) if success_time else None
    except ValueError:
        return None


# The bill's SHA1 as WeChat gives it (compare_digest takes ASCII text only).
_SHA1_HEX = re.compile(r"[0-9a-fA-F]{40}")
_BILL_YUAN = re.compile(r"\d{1,12}(?:\.\d{1,2})?")


def _bill_fen(value: str) -> int:
    """A bill's amount in yuan as fen: digits with up to two decimals (no
    sign, exponent, infinity or NaN: :class:`ValueError`)."""
    if not _BILL_YUAN.fullmatch(value):
        raise ValueError(f"not an amount in yuan: {value!r}")
    return int(Decimal(value) * 100)


def _bill_fields(line: str) -> list[str]:
    # Every field starts with a backtick (so spreadsheets keep long numbers
    # as text); splitting on ",`" keeps a comma inside a product name whole.
    if not line.startswith("`"):
        raise ValueError(f"bill line without backticks: {line[:40]!r}")
    return line[1:].split(",`")


def read_trade_bill(content: bytes) -> list[StatementLine]:
    """The lines of WeChat's trade bill (``bill_type=ALL``): a header of
    Chinese column names, one line per payment or refund, then the summary
    (``总交易单数,…`` and its values). Raises ValueError."""
    text = content.decode("utf-8-sig")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("empty bill")
    columns = {name.strip(): index for index, name in enumerate(lines[0].split(","))}
    summary_at = next((i for i, line in enumerate(lines) if line.startswith(BILL_SUMMARY)), None)
    if summary_at is None or summary_at + 1 >= len(lines):
        raise ValueError("bill without its summary (truncated?)")
    rows = [_bill_fields(line) for line in lines[1:summary_at]]
    declared = int(_bill_fields(lines[summary_at + 1])[0])
    if declared != len(rows):
        raise ValueError(f"bill lists {len(rows)} lines, its summary says {declared}")

    def field(row: list[str], name: str) -> str:
        return row[columns[name]].strip()

    statement = []
    for row in rows:
        if len(row) < len(columns):
            raise ValueError(f"bill line with {len(row)} of {len(columns)} fields")
        at = channel_time(
            timezone.make_aware(
                dt.datetime.strptime(field(row, BILL_TIME), "%Y-%m-%d %H:%M:%S"), CHINA
            )
        )
        trade_state = field(row, BILL_TRADE_STATE)
        if trade_state == "REFUND":
            refund_state = field(row, BILL_REFUND_STATE)
            statement.append(
                StatementLine(
                    kind="refund",
                    order_no=field(row, BILL_ORDER_NO),
                    reference=field(row, BILL_REFUND_NO),
                    amount_fen=_bill_fen(field(row, BILL_REFUND_AMOUNT)),
                    state="succeeded" if refund_state == "SUCCESS" else refund_state,
                    at=at,
                )
            )
        else:
            statement.append(
                StatementLine(
                    kind="charge",
                    order_no=field(row, BILL_ORDER_NO),
                    reference=field(row, BILL_TRANSACTION_ID),
                    amount_fen=_bill_fen(field(row, BILL_ORDER_AMOUNT)),
                    state="paid" if trade_state == "SUCCESS" else trade_state,
                    at=at,
                )
            )
    return statement


def _normalised(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names folded to ``wechatpay-timestamp`` form, whether they
    come as sent, lower-cased, or as Django's ``HTTP_WECHATPAY_TIMESTAMP``."""
    folded = {}
    for name, value in headers.items():
        key = name.lower().replace("_", "-")
        if key.startswith("http-"):
            key = key[len("http-") :]
        folded[key] = value
    return folded


class WechatPayProvider(BasePaymentProvider):
    """WeChat Pay API v3 for a directly connected merchant (直连商户),
    Native payment: the citizen scans ``code_url`` with WeChat.

    Built with the merchant's :class:`~payments.providers.base.Credentials`:
    ``merchant_id`` is the mchid, ``app_id`` the appid bound to it,
    ``merchant_private_key``/``merchant_serial`` sign our requests,
    ``platform_public_key``/``platform_serial`` (WeChat's "platform public
    key" and its id) check WeChat's answers and callbacks, and
    ``api_v3_key`` decrypts the callbacks' resources.

    Every call raises :class:`~payments.providers.base.ProviderError` with
    WeChat's error ``code`` (``ORDERPAID``, ``INVALID_REQUEST`` …); it is
    ``retryable`` for network failures, 408, 429 and 5xx, ``NOT_ENOUGH`` (a
    refund beyond the merchant's balance), and for answers (signed refusals
    too) whose signature does not hold (every call here is idempotent, and
    a call that did reach WeChat must be asked again, not forgotten). Of
    these, network failures, 408, 429 and 5xx are ``unreachable`` too: the
    others are WeChat's word on the one call.
    """

    identifier = "wechat"
    verbose_name = "微信支付"
    # A refund number WeChat Pay never took: 404 RESOURCE_NOT_EXISTS.
    refund_unknown_codes = frozenset({"RESOURCE_NOT_EXISTS"})

    # --- WeChat Pay's API -------------------------------------------------------------------

    def checkout_create(
        self,
        *,
        order_no: str,
        amount_fen: int,
        description: str,
        expires_at: dt.datetime,
        notify_url: str,
    ) -> dict[str, str]:
        # WeChat answers the same order number with the same amount as the
        # same order (the code_url it gave), another amount with
        # OUT_TRADE_NO_USED: that is our idempotency.
        answer = self._json(
            self._call(
                "POST",
                "/v3/pay/transactions/native",
                {
                    "appid": self.credentials.app_id,
                    "mchid": self.credentials.merchant_id,
                    "description": description[:DESCRIPTION_MAX],
                    "out_trade_no": order_no,
                    "time_expire": _rfc3339(expires_at),
                    "notify_url": notify_url,
                    "amount": {"total": amount_fen, "currency": "CNY"},
                },
            )
        )
        code_url = answer.get("code_url")
        if not isinstance(code_url, str) or not code_url.startswith("weixin://"):
            raise ProviderError("WeChat Pay answered without a code_url", code="BAD_ANSWER")
        return {"code_url": code_url}

    def order_query(self, *, order_no: str) -> PaymentResult:
        answer = self._json(
            self._call(
                "GET",
                f"/v3/pay/transactions/out-trade-no/{quote(order_no, safe='')}",
                params={"mchid": self.credentials.merchant_id},
            )
        )
        try:
            result = read_transaction(answer)
        except ValueError as exc:
            raise ProviderError(f"unreadable transaction: {exc}", code="BAD_ANSWER") from exc
        if result.order_no != order_no or result.merchant_id != self.credentials.merchant_id:
            raise ProviderError(
                f"WeChat Pay answered for {result.merchant_id}/{result.order_no}",
                retryable=False,
                code="BAD_ANSWER",
            )
        return result

    def order_close(self, *, order_no: str) -> None:
        try:
            self._call(
                "POST",
                f"/v3/pay/transactions/out-trade-no/{quote(order_no, safe='')}/close",
                {"mchid": self.credentials.merchant_id},
            )
        except ProviderError as exc:
            # Never opened there: nothing to close, which is what we wanted.
            if exc.code != "ORDER_NOT_EXIST":
                raise

    def refund_create(
        self, *, order_no: str, refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundResult:
        payload: dict[str, Any] = {
            "out_trade_no": order_no,
            "out_refund_no": refund_no,
            "amount": {"refund": amount_fen, "total": total_fen, "currency": "CNY"},
        }
        if reason:
            payload["reason"] = reason[:REFUND_REASON_MAX]
        return self._refund(self._call("POST", "/v3/refund/domestic/refunds", payload), refund_no)

    def refund_query(self, *, order_no: str, refund_no: str) -> RefundResult:
        response = self._call("GET", f"/v3/refund/domestic/refunds/{quote(refund_no, safe='')}")
        answered_order = self._json(response).get("out_trade_no")
        if answered_order != order_no:
            raise ProviderError(
                f"refund {refund_no} belongs to {answered_order!r}, not {order_no}",
                retryable=False,
                code="BAD_ANSWER",
            )
        return self._refund(response, refund_no)

    def statement_download(self, *, date: dt.date) -> list[StatementLine]:
        try:
            response = self._call(
                "GET",
                "/v3/bill/tradebill",
                params={"bill_date": date.isoformat(), "bill_type": "ALL"},
            )
        except ProviderError as exc:
            # WeChat makes no bill for a day without a single trade.
            if exc.code == "NO_STATEMENT_EXIST":
                return []
            raise
        answer = self._json(response)
        url, hash_type, hash_value = (
            answer.get(k) for k in ("download_url", "hash_type", "hash_value")
        )
        if (
            not (isinstance(url, str) and isinstance(hash_value, str))
            or hash_type != "SHA1"
            or not _SHA1_HEX.fullmatch(hash_value)
        ):
            raise ProviderError(f"unexpected bill answer: {answer}"[:500], code="BAD_ANSWER")
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL as exc:
            raise ProviderError(f"bill download URL {url[:200]!r}", code="BAD_ANSWER") from exc
        # The download is signed like any call: never send it to another host.
        if host != self.http.base_url.host:
            raise ProviderError(f"bill download outside WeChat Pay: {url}", retryable=False)
        # The file is not signed; its SHA1 came in the signed answer above.
        content = self._call("GET", url, signed_answer=False, bill=True).content
        if not hmac.compare_digest(hashlib.sha1(content).hexdigest(), hash_value.lower()):
            raise ProviderError(f"bill of {date} does not match its SHA1", code="BILL_HASH")
        try:
            return read_trade_bill(content)
        except (ValueError, KeyError, IndexError, InvalidOperation) as exc:
            raise ProviderError(f"unreadable bill of {date}: {exc}", code="BAD_BILL") from exc

    # --- Callbacks ----------------------------------------------------------------------------

    def notify_parse(self, *, headers: Mapping[str, str], body: bytes) -> PaymentResult:
        folded = _normalised(headers)
        try:
            timestamp = folded["wechatpay-timestamp"]
            nonce = folded["wechatpay-nonce"]
            signature = folded["wechatpay-signature"]
            serial = folded["wechatpay-serial"]
        except KeyError as exc:
            raise NotifyRejected("malformed", f"missing header {exc.args[0]}") from exc
        signature_type = folded.get("wechatpay-signature-type", SIGNATURE_TYPE)
        if signature_type != SIGNATURE_TYPE:
            raise NotifyRejected("malformed", f"signature type {signature_type}")
        if serial != self.credentials.platform_serial:
            raise NotifyRejected("unknown_key", f"Wechatpay-Serial {serial}")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise NotifyRejected("malformed", f"timestamp {timestamp[:20]!r}")
        # A callback replayed later (or signed with a clock far off) is
        # refused here; a genuine one comes again on WeChat's schedule.
        if abs(_now_seconds() - int(timestamp)) > CLOCK_SKEW_SECONDS:
            raise NotifyRejected("stale_timestamp", f"timestamp {timestamp}")
        if not self._platform_signed(timestamp, nonce, body, signature):
            raise NotifyRejected("bad_signature")

        try:
            notification = _object(json.loads(body), "notification")
            if notification.get("resource_type") != "encrypt-resource":
                raise ValueError(f"resource_type {notification.get('resource_type')!r}")
            resource = _object(notification.get("resource"), "resource")
            if resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise ValueError(f"algorithm {resource.get('algorithm')!r}")
            ciphertext = _text(resource, "ciphertext")
            resource_nonce = _text(resource, "nonce")
            associated_data = _text(resource, "associated_data", required=False)
        except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors; "[[[[…" too deep
            raise NotifyRejected("malformed", str(exc)) from exc

        try:
            plaintext = AESGCM(self.credentials.api_v3_key).decrypt(
                resource_nonce.encode(),
                base64.b64decode(ciphertext, validate=True),
                associated_data.encode(),
            )
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise NotifyRejected("decrypt_failed", type(exc).__name__) from exc

        try:
            result = read_transaction(json.loads(plaintext))
        except (ValueError, RecursionError) as exc:  # as the body's
            raise NotifyRejected("malformed", f"resource: {exc}") from exc
        if (
            result.merchant_id != self.credentials.merchant_id
            or result.app_id != self.credentials.app_id
        ):
            raise NotifyRejected("wrong_merchant", f"{result.merchant_id}/{result.app_id}")
        return result

    def notify_reply(self, *, accepted: bool, message: str = "") -> NotifyReply:
        # WeChat takes 200 or 204 without a body as "received"; anything
        # else, with {"code": "FAIL", "message": …}, as "send it again".
        if accepted:
            return NotifyReply(status=204)
        return NotifyReply(
            status=400,
            body=_dumps({"code": "FAIL", "message": message or "失败"}),
            content_type="application/json",
        )

    # --- Signing and reading ------------------------------------------------------------------

    def _authorization(self, method: str, url: str, body: bytes) -> str:
        timestamp = str(_now_seconds())
        nonce = secrets.token_hex(16).upper()
        message = f"{method}\n{url}\n{timestamp}\n{nonce}\n".encode() + body + b"\n"
        signature = self.credentials.merchant_private_key.sign(
            message, padding.PKCS1v15(), hashes.SHA256()
        )
        return (
            f'{SIGNATURE_TYPE} mchid="{self.credentials.merchant_id}",'
            f'nonce_str="{nonce}",'
            f'signature="{base64.b64encode(signature).decode()}",'
            f'timestamp="{timestamp}",'
            f'serial_no="{self.credentials.merchant_serial}"'
        )

    def _platform_signed(self, timestamp: str, nonce: str, body: bytes, signature: str) -> bool:
        try:
            self.credentials.platform_public_key.verify(
                base64.b64decode(signature, validate=True),
                _platform_message(timestamp, nonce, body),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError):  # binascii.Error is a ValueError; so is non-ASCII
            return False
        return True

    def _call(
        self,
        method: str,
        url: str,
        payload: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        signed_answer: bool = True,
        bill: bool = False,
    ) -> httpx.Response:
        body = _dumps(payload) if payload is not None else b""
        headers = {"Accept": "application/json", "User-Agent": "my-changsha/1.0"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        # In WeChat's platform-public-key mode the request names the key the
        # answer is to be signed with.
        if self.credentials.platform_serial:
            headers["Wechatpay-Serial"] = self.credentials.platform_serial
        request = self.http.build_request(
            method, url, params=params, content=body or None, headers=headers
        )
        # The signature covers the path and query exactly as they go on the
        # wire, which is what WeChat checks.
        request.headers["Authorization"] = self._authorization(
            method, request.url.raw_path.decode("ascii"), body
        )
        what = f"WeChat Pay {method} {request.url.path}"
        try:
            if bill:
                # Refused as an unreadable bill is (reconciliation reports it).
                response = answer_read(
                    self.http,
                    request,
                    what=what,
                    limit=BILL_MAX_BYTES,
                    kind="a bill",
                    seconds=STATEMENT_SECONDS,
                    retryable=False,
                )
            else:
                response = answer_read(self.http, request, what=what)
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"WeChat Pay unreachable: {exc}", code="NETWORK", unreachable=unreached(exc)
            ) from exc
        if not response.is_success:
            refusal = self._refusal(response)
            if (
                signed_answer
                and not refusal.retryable
                and "Wechatpay-Signature" in response.headers
            ):
                # A refusal steers us as much as an answer (a refund WeChat
                # does not know is failed and its amount freed): a signed
                # one whose signature does not hold is no answer, asked
                # again. One without a signature is believed, as WeChat's own
                # SDKs believe refusals (they check successes only): WeChat
                # does not promise to sign them.
                try:
                    self._check_answer(response)
                except ProviderError as unsigned:
                    raise ProviderError(
                        f"{refusal} (not believed: {unsigned})", code=unsigned.code
                    ) from refusal
            raise refusal
        if signed_answer:
            self._check_answer(response)
        return response

    def _check_answer(self, response: httpx.Response) -> None:
        headers = response.headers
        timestamp = headers.get("Wechatpay-Timestamp", "")
        nonce = headers.get("Wechatpay-Nonce", "")
        signature = headers.get("Wechatpay-Signature", "")
        serial = headers.get("Wechatpay-Serial", "")
        if serial != self.credentials.platform_serial:
            raise ProviderError(f"answer signed by unknown key {serial!r}", code="ANSWER_SIGNATURE")
        if (
            not _TIMESTAMP.fullmatch(timestamp)
            or abs(_now_seconds() - int(timestamp)) > CLOCK_SKEW_SECONDS
        ):
            raise ProviderError(f"answer timestamp {timestamp!r}", code="ANSWER_SIGNATURE")
        if not self._platform_signed(timestamp, nonce, response.content, signature):
            raise ProviderError("answer signature does not verify", code="ANSWER_SIGNATURE")

    @staticmethod
    def _refusal(response: httpx.Response) -> ProviderError:
        code, message = f"HTTP_{response.status_code}", response.text[:200]
        try:
            answer = response.json()
        except (ValueError, RecursionError):  # not JSON; "[[[[…" nested past Python's limit
            answer = None
        if isinstance(answer, dict):
            code = str(answer.get("code") or code)
            message = str(answer.get("message") or message)
        retryable = unreached_status(response.status_code) or code in TRY_AGAIN_CODES
        return ProviderError(
            f"WeChat Pay refused {response.request.method} {response.request.url.path}: "
            f"{response.status_code} {code} {message}",
            retryable=retryable,
            code=code,
            unreachable=unreached_status(response.status_code),
        )

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            return _object(response.json(), "answer")
        except (ValueError, RecursionError) as exc:  # as a refusal's body
            raise ProviderError(f"unreadable answer: {exc}", code="BAD_ANSWER") from exc

    def _refund(self, response: httpx.Response, refund_no: str) -> RefundResult:
        try:
            result = read_refund(self._json(response))
        except ValueError as exc:
            raise ProviderError(f"unreadable refund: {exc}", code="BAD_ANSWER") from exc
        if result.refund_no != refund_no:
            raise ProviderError(
                f"WeChat Pay answered for refund {result.refund_no}",
                retryable=False,
                code="BAD_ANSWER",
            )
        return result

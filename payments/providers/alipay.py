"""Alipay (支付宝开放平台), the merchant's side: face-to-face QR payments.

Every call goes to Alipay's one gateway, ``POST /gateway.do``, with the
common parameters in the query string and the call's ``biz_content`` (JSON)
in the form body, as Alipay's own SDKs send them, signed SHA256withRSA
(``sign_type=RSA2``) with the merchant's private key. Alipay answers
``{"<method>_response": {...}, "sign": "..."}``; the sign covers the exact
text of the response node, so it is checked against the characters of the
body, never against a re-serialisation. Amounts travel in yuan with two
decimals and are turned into fen here, with :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import re
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from decimal import Decimal
from typing import IO, Any, ClassVar
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from django.utils import timezone

from payments.providers.base import (
    STATEMENT_SECONDS,
    BasePaymentProvider,
    NotifyRejected,
    NotifyReply,
    PaymentResult,
    ProviderError,
    RefundResult,
    StatementLine,
    TradeState,
    answer_chunks,
    answer_read,
    answer_stream,
    channel_reference,
    channel_time,
    storable,
    unreached,
    unreached_status,
)

# Alipay writes every time in China time, whatever the server's zone.
CHINA = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SUCCESS = "10000"
BUSINESS_FAILED = "40004"
# Answers worth trying again: the gateway was busy, or Alipay's own fault,
# or the merchant's balance too short for a refund (Alipay: top up, then
# ask again with the same request number).
RETRYABLE_CODES = {"20000"}
RETRYABLE_SUB_CODES = {
    "ACQ.SYSTEM_ERROR",
    "isp.unknow-error",
    "aop.ACQ.SYSTEM_ERROR",
    "ACQ.SELLER_BALANCE_NOT_ENOUGH",
}

# The trade API's business answers (ACQ.TRADE_NOT_EXIST …): always signed.
BUSINESS_SUB_CODE = "ACQ."


def _steering(node: dict) -> bool:
    """Whether an answer would make us act (a success, a business answer)
    rather than try again later: such answers are believed signed only."""
    code, sub_code = str(node.get("code", "")), str(node.get("sub_code", ""))
    if code == SUCCESS:
        return True
    if sub_code in RETRYABLE_SUB_CODES:  # "try again later": a refusal
        return False
    return code == BUSINESS_FAILED or sub_code.startswith(BUSINESS_SUB_CODE)


_YUAN = re.compile(r"(0|[1-9][0-9]*)\.[0-9]{2}")
# What the bill's zip may unpack to, all files together: well above a
# city's day (a million payments are some 300 MB of CSV), well below what
# would exhaust a worker. The download comes from a URL Alipay gives out,
# often over plain HTTP: a zip bomb put in on the way is refused.
BILL_MAX_BYTES = 1 << 30
BILL_MAX_FILES = 16
# The zip as downloaded (the URL Alipay gives is often plain HTTP).
BILL_MAX_DOWNLOAD = 256 << 20
_BILL_CHUNK = 1 << 20
NOTIFY_FIELDS = (
    "notify_time",
    "notify_type",
    "notify_id",
    "app_id",
    "sign_type",
    "sign",
    "trade_no",
    "out_trade_no",
    "seller_id",
    "trade_status",
    "total_amount",
)
TRADE_STATES: dict[str, TradeState] = {
    "WAIT_BUYER_PAY": "pending",
    "TRADE_SUCCESS": "paid",
    "TRADE_FINISHED": "paid",
    "TRADE_CLOSED": "closed",
}


def fen_to_yuan(fen: int) -> str:
    """Fen as Alipay's yuan: ``2000`` → ``"20.00"``."""
    if isinstance(fen, bool) or not isinstance(fen, int) or fen < 0:
        raise ValueError(f"not an amount in fen: {fen!r}")
    return f"{Decimal(fen) / 100:.2f}"


def yuan_to_fen(yuan: str) -> int:
    """Alipay's yuan as fen: exactly two decimals, nothing else (``"20.5"``,
    ``"1e3"`` and ``"-1.00"`` are refused with :class:`ValueError`)."""
    if not isinstance(yuan, str) or not _YUAN.fullmatch(yuan):
        raise ValueError(f"not an amount in yuan: {yuan!r}")
    return int(Decimal(yuan) * 100)


def _china_time(value: str) -> dt.datetime:
    return channel_time(dt.datetime.strptime(value, TIME_FORMAT).replace(tzinfo=CHINA))


def _refunded_at(node: Mapping[str, Any]) -> dt.datetime | None:
    """A refund answer's ``gmt_refund_pay`` (when the money went back), if
    it reads as a time: it dates the refund, it does not decide it."""
    value = node.get("gmt_refund_pay")
    try:
        return _china_time(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def _content(params: Mapping[str, str], *, exclude: tuple[str, ...]) -> str:
    """Alipay's string to sign: sorted by key, empty values skipped, raw values."""
    return "&".join(
        f"{key}={value}" for key, value in sorted(params.items()) if key not in exclude and value
    )


def _node_spans(text: str) -> dict[str, tuple[int, int]]:
    """Where each top-level value of a JSON object sits in ``text``: the
    exact characters Alipay signed, as its SDKs find them."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    whitespace = re.compile(r"[ \t\n\r]*")

    def skip(index: int) -> int:
        match = whitespace.match(text, index)
        return match.end() if match else index

    index = skip(0)
    if text[index : index + 1] != "{":
        raise ValueError("not a JSON object")
    index = skip(index + 1)
    while text[index : index + 1] != "}":
        key, index = decoder.raw_decode(text, index)
        index = skip(index)
        if not isinstance(key, str) or text[index : index + 1] != ":":
            raise ValueError("not a JSON object")
        start = skip(index + 1)
        _, end = decoder.raw_decode(text, start)
        spans[key] = (start, end)
        index = skip(end)
        if text[index : index + 1] == ",":
            index = skip(index + 1)
        elif text[index : index + 1] != "}":
            raise ValueError("not a JSON object")
    return spans


class AlipayProvider(BasePaymentProvider):
    """Alipay's face-to-face payment (当面付) with a QR code the citizen scans.

    ``credentials.app_id`` is the merchant's application (``app_id``),
    ``credentials.merchant_id`` its seller id (PID, ``2088…``);
    ``merchant_private_key`` is the application private key and
    ``platform_public_key`` Alipay's public key of the application ("支付宝
    公钥", public-key mode, not certificate mode).

    Alipay refunds synchronously, so :meth:`refund_create` answers
    ``succeeded``. A precreated trade exists at Alipay only once the citizen
    has scanned it, so ``ACQ.TRADE_NOT_EXIST`` from a query reads as
    ``pending`` and from a close as "nothing to close". A trade refunded in
    full shows ``TRADE_CLOSED`` at Alipay; having a payment time, it reads
    as ``paid`` (its ``raw_state`` says closed).
    """

    identifier: ClassVar[str] = "alipay"
    verbose_name: ClassVar[str] = "支付宝"
    # Alipay answers a refund it does not know with success and no refund
    # fields, which refund_query raises as REFUND_NOT_EXIST.
    refund_unknown_codes: ClassVar[frozenset[str]] = frozenset({"REFUND_NOT_EXIST"})

    # --- the gateway -----------------------------------------------------------------------

    def _sign(self, content: str) -> str:
        signature = self.credentials.merchant_private_key.sign(
            content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
        )
        return base64.b64encode(signature).decode("ascii")

    def _platform_signed(self, content: str, sign: str) -> bool:
        try:
            signature = base64.b64decode(sign, validate=True)
            self.credentials.platform_public_key.verify(
                signature, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    def _call(self, method: str, biz: dict[str, Any], *, notify_url: str = "") -> dict[str, Any]:
        """One gateway call: the verified response node of a success, or
        :class:`ProviderError` carrying Alipay's ``sub_code``."""
        params = {
            "app_id": self.credentials.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": timezone.now().astimezone(CHINA).strftime(TIME_FORMAT),
            "version": "1.0",
            "notify_url": notify_url,
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        params = {key: value for key, value in params.items() if value}
        params["sign"] = self._sign(_content(params, exclude=("sign",)))
        biz_content = params.pop("biz_content")
        request = self.http.build_request(
            "POST", "/gateway.do", params=params, data={"biz_content": biz_content}
        )
        try:
            response = answer_read(self.http, request, what=f"alipay {method}")
        except httpx.HTTPError as exc:
            raise ProviderError(f"alipay {method}: {exc}", unreachable=unreached(exc)) from exc
        if response.status_code != 200:
            raise ProviderError(
                f"alipay {method}: HTTP {response.status_code}",
                retryable=unreached_status(response.status_code),
                unreachable=unreached_status(response.status_code),
            )
        node = self._verified(response.content, method)
        code = str(node.get("code", ""))
        if code != SUCCESS:
            sub_code = str(node.get("sub_code", ""))
            raise ProviderError(
                f"alipay {method}: {code} {sub_code} {node.get('sub_msg', node.get('msg', ''))}",
                retryable=code in RETRYABLE_CODES or sub_code in RETRYABLE_SUB_CODES,
                code=sub_code or code,
            )
        return node

    def _verified(self, content: bytes, method: str) -> dict[str, Any]:
        """The response node whose sign holds. An unsigned answer is only
        believed as a gateway error (Alipay leaves some of those unsigned,
        e.g. an unknown app_id); it signs every success and business failure,
        and a business failure steers us (TRADE_NOT_EXIST reads as pending)."""
        try:
            text = content.decode("utf-8")
            spans = _node_spans(text)
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8; "[[[[…" too deep
            raise ProviderError(f"alipay {method}: unreadable answer") from exc
        key = method.replace(".", "_") + "_response"
        if key not in spans:
            key = "error_response"
        node = document.get(key)
        if not isinstance(node, dict):
            raise ProviderError(f"alipay {method}: answer without {key}")
        sign = document.get("sign")
        start, end = spans[key]
        if isinstance(sign, str) and sign:
            if not self._platform_signed(text[start:end], sign):
                raise ProviderError(
                    f"alipay {method}: bad signature on the answer", code="bad_signature"
                )
        elif _steering(node):
            # Read as _call reads them (a code that is a JSON number is the
            # same code), and a business sub-code under any code steers us
            # just the same: neither is believed unsigned. "Try again later"
            # is: believing it costs nothing.
            raise ProviderError(f"alipay {method}: unsigned answer", code="bad_signature")
        return node

    # --- payments --------------------------------------------------------------------------

    def checkout_create(
        self,
        *,
        order_no: str,
        amount_fen: int,
        description: str,
        expires_at: dt.datetime,
        notify_url: str,
    ) -> dict[str, str]:
        """``alipay.trade.precreate``: the QR code the citizen scans with
        Alipay. Alipay gives the same trade back for the same order number
        and amount."""
        node = self._call(
            "alipay.trade.precreate",
            {
                "out_trade_no": order_no,
                "total_amount": fen_to_yuan(amount_fen),
                "subject": description[:256],
                "time_expire": expires_at.astimezone(CHINA).strftime(TIME_FORMAT),
            },
            notify_url=notify_url,
        )
        qr_code = node.get("qr_code")
        if not isinstance(qr_code, str) or not qr_code or node.get("out_trade_no") != order_no:
            raise ProviderError("alipay precreate: answer without qr_code", retryable=False)
        return {"qr_code": qr_code}

    def _result(self, fields: Mapping[str, Any], *, paid_at_field: str) -> PaymentResult:
        """A query answer or a notify in our words."""
        raw_state = str(fields.get("trade_status", ""))
        state = TRADE_STATES.get(raw_state)
        if state is None:
            raise ValueError(f"unknown trade_status {raw_state!r}")
        paid_at_text = fields.get(paid_at_field)
        paid_at = (
            _china_time(paid_at_text) if isinstance(paid_at_text, str) and paid_at_text else None
        )
        if raw_state == "TRADE_CLOSED" and paid_at is not None:
            state = "paid"  # refunded in full after it was paid
        return PaymentResult(
            order_no=str(fields.get("out_trade_no", "")),
            state=state,
            transaction_id=channel_reference(str(fields.get("trade_no", "")), "trade_no"),
            amount_fen=yuan_to_fen(str(fields.get("total_amount", ""))),
            merchant_id=str(fields.get("seller_id", "")),
            app_id=str(fields.get("app_id", "")),
            paid_at=paid_at if state == "paid" else None,
            raw_state=raw_state,
        )

    def order_query(self, *, order_no: str) -> PaymentResult:
        """``alipay.trade.query``. A trade not (yet) at Alipay is pending:
        that is an unscanned QR code."""
        try:
            node = self._call("alipay.trade.query", {"out_trade_no": order_no})
        except ProviderError as exc:
            if exc.code == "ACQ.TRADE_NOT_EXIST":
                return PaymentResult(
                    order_no=order_no, state="pending", raw_state="TRADE_NOT_EXIST"
                )
            raise
        if node.get("out_trade_no") != order_no:
            raise ProviderError("alipay query: answer for another order", retryable=False)
        try:
            return self._result(node, paid_at_field="send_pay_date")
        except ValueError as exc:
            raise ProviderError(f"alipay query: {exc}", retryable=False) from exc

    def order_close(self, *, order_no: str) -> None:
        """``alipay.trade.close``. Alipay calls closing a closed trade a status
        error, as it does closing a paid one, so a status error is settled by
        asking where the trade stands."""
        try:
            self._call("alipay.trade.close", {"out_trade_no": order_no})
        except ProviderError as exc:
            if exc.code == "ACQ.TRADE_NOT_EXIST":
                return  # never scanned: nothing at Alipay to close
            if exc.code != "ACQ.TRADE_STATUS_ERROR":
                raise
            if self.order_query(order_no=order_no).state != "closed":
                raise ProviderError(
                    "alipay close: the trade was paid",
                    retryable=False,
                    code="ACQ.TRADE_HAS_SUCCESS",
                ) from exc

    # --- callbacks -------------------------------------------------------------------------

    def notify_parse(self, *, headers: Mapping[str, str], body: bytes) -> PaymentResult:
        """Read a ``trade_status_sync`` notify: a form signed over its sorted
        fields but ``sign`` and ``sign_type``. Alipay's notify carries no
        timestamp to judge; the caller's order check and
        :meth:`order_query` are the guard against replays."""
        content_type = next(
            (value for name, value in headers.items() if name.lower() == "content-type"), ""
        )
        if content_type and (
            content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded"
        ):
            raise NotifyRejected("malformed", f"content type {content_type}")
        fields = self._form(body)
        missing = [name for name in NOTIFY_FIELDS if not fields.get(name)]
        if missing:
            raise NotifyRejected("malformed", f"missing {', '.join(missing)}")
        if fields["sign_type"] != "RSA2":
            raise NotifyRejected("malformed", f"sign_type {fields['sign_type']}")
        if not self._platform_signed(
            _content(fields, exclude=("sign", "sign_type")), fields["sign"]
        ):
            raise NotifyRejected("bad_signature")
        if fields["app_id"] != self.credentials.app_id:
            raise NotifyRejected("wrong_merchant", f"app_id {fields['app_id']}")
        if fields["seller_id"] != self.credentials.merchant_id:
            raise NotifyRejected("wrong_merchant", f"seller_id {fields['seller_id']}")
        if fields["notify_type"] != "trade_status_sync":
            raise NotifyRejected("malformed", f"notify_type {fields['notify_type']}")
        try:
            _china_time(fields["notify_time"])
            return self._result(fields, paid_at_field="gmt_payment")
        except ValueError as exc:
            raise NotifyRejected("malformed", str(exc)) from exc

    @staticmethod
    def _form(body: bytes) -> dict[str, str]:
        """The notify's fields, decoded in the charset it names (Alipay sends
        a notify in the charset of the request that opened the trade)."""
        try:
            text = body.decode("ascii")
            sniffed = dict(parse_qsl(text, encoding="latin-1"))
            charset = sniffed.get("charset", "utf-8").lower()
            if charset not in ("utf-8", "gbk", "gb2312"):
                raise NotifyRejected("malformed", f"charset {charset}")
            pairs = parse_qsl(
                text, keep_blank_values=True, strict_parsing=True, encoding=charset, errors="strict"
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise NotifyRejected("malformed", "not a form") from exc
        fields = dict(pairs)
        if len(fields) != len(pairs):
            raise NotifyRejected("malformed", "a field given twice")
        return fields

    def notify_reply(self, *, accepted: bool, message: str = "") -> NotifyReply:
        """Alipay stops retrying on exactly ``success``; anything else is a failure."""
        if accepted:
            return NotifyReply(status=200, body=b"success")
        return NotifyReply(status=400, body=b"fail")

    # --- refunds ---------------------------------------------------------------------------

    def refund_create(
        self, *, order_no: str, refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundResult:
        """``alipay.trade.refund``, synchronous at Alipay: ``fund_change: Y``
        means the money went back now. A repeated request answers ``N`` (no
        money moved this time), which is settled by asking for the refund."""
        node = self._call(
            "alipay.trade.refund",
            {
                "out_trade_no": order_no,
                "refund_amount": fen_to_yuan(amount_fen),
                "out_request_no": refund_no,
                "refund_reason": reason[:256],
            },
        )
        if node.get("out_trade_no") != order_no:
            raise ProviderError("alipay refund: answer for another order", retryable=False)
        if node.get("fund_change") != "Y":
            return self.refund_query(order_no=order_no, refund_no=refund_no)
        return RefundResult(
            refund_no=refund_no,
            state="succeeded",
            amount_fen=amount_fen,
            succeeded_at=_refunded_at(node),
        )

    def refund_query(self, *, order_no: str, refund_no: str) -> RefundResult:
        """``alipay.trade.fastpay.refund.query``. Alipay answers a refund it
        does not know with success and no refund fields; that is an error
        here (the refund request never arrived: send it again)."""
        node = self._call(
            "alipay.trade.fastpay.refund.query",
            {"out_trade_no": order_no, "out_request_no": refund_no},
        )
        if not node.get("refund_amount"):
            raise ProviderError(
                f"alipay refund query: no refund {refund_no}",
                retryable=False,
                code="REFUND_NOT_EXIST",
            )
        try:
            amount_fen = yuan_to_fen(str(node["refund_amount"]))
        except ValueError as exc:
            raise ProviderError(f"alipay refund query: {exc}", retryable=False) from exc
        # Alipay documents an empty refund_status with refund data as success.
        status = node.get("refund_status") or "REFUND_SUCCESS"
        if not isinstance(status, str):
            raise ProviderError(f"alipay refund query: refund_status {status!r}"[:200])
        if status != "REFUND_SUCCESS":
            return RefundResult(
                refund_no=refund_no,
                state="pending",
                amount_fen=amount_fen,
                failure_reason=storable(status, 200),
            )
        return RefundResult(
            refund_no=refund_no,
            state="succeeded",
            amount_fen=amount_fen,
            succeeded_at=_refunded_at(node),
        )

    # --- statements ------------------------------------------------------------------------

    def statement_download(self, *, date: dt.date) -> list[StatementLine]:
        """The trade bill of ``date``: ``alipay.data.dataservice.bill.downloadurl.query``
        for a short-lived URL, then the zip it serves, whose business-detail
        CSV (GBK) has one row per payment (交易) and per refund (退款)."""
        node = self._call(
            "alipay.data.dataservice.bill.downloadurl.query",
            {"bill_type": "trade", "bill_date": date.isoformat()},
        )
        url = node.get("bill_download_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ProviderError("alipay bill: answer without a download URL", retryable=False)
        # Spooled to disk past a few megabytes: one copy of the zip, never two.
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as archive:
            try:
                bill_url = httpx.URL(url)
            except httpx.InvalidURL as exc:
                raise ProviderError(f"alipay bill: download URL {url[:200]!r}") from exc
            try:
                with answer_stream(
                    self.http,
                    self.http.build_request("GET", bill_url),
                    what="alipay bill download",
                    seconds=STATEMENT_SECONDS,
                    retryable=False,
                ) as response:
                    if response.status_code != 200:
                        # The URL lives 30 seconds: asking again gives a new one.
                        raise ProviderError(f"alipay bill download: HTTP {response.status_code}")
                    for chunk in answer_chunks(
                        response,
                        what="alipay bill download",
                        limit=BILL_MAX_DOWNLOAD,
                        kind="a bill",
                        retryable=False,
                    ):
                        archive.write(chunk)
            except httpx.HTTPError as exc:
                raise ProviderError(
                    f"alipay bill download: {exc}", unreachable=unreached(exc)
                ) from exc
            archive.seek(0)
            try:
                return self._statement_lines(archive)
            except (
                zipfile.BadZipFile,
                # zipfile's other refusals: a compression method it lacks,
                # an encrypted file, deflated data that does not inflate.
                NotImplementedError,
                RuntimeError,
                EOFError,
                zlib.error,
                csv.Error,
                ValueError,  # UnicodeDecodeError too
                KeyError,
            ) as exc:
                raise ProviderError(f"alipay bill: unreadable ({exc})", retryable=False) from exc

    @staticmethod
    def _statement_lines(archive: IO[bytes]) -> list[StatementLine]:
        detail = None
        with zipfile.ZipFile(archive) as files:
            members = files.infolist()
            if (
                len(members) > BILL_MAX_FILES
                or sum(info.file_size for info in members) > BILL_MAX_BYTES
            ):
                raise ValueError(f"a bill of {len(members)} files unpacking beyond its bound")
            # Read in chunks: zipfile inflates a whole read at once before it
            # cuts the output to the declared size, so one read of a file
            # lying about its size could take gigabytes. Chunk by chunk it
            # stops at the declared size and fails its CRC; the bytes
            # actually read are counted against the bound all the same.
            unpacked = 0
            # Alipay names the files in GBK without saying so, so the
            # business detail is known by its first line, not by its name.
            for info in members:
                content = bytearray()
                with files.open(info) as member:
                    while chunk := member.read(_BILL_CHUNK):
                        unpacked += len(chunk)
                        if unpacked > BILL_MAX_BYTES:
                            raise ValueError("a bill unpacking beyond its bound")
                        content += chunk
                text = content.decode("gbk")
                if text.startswith("#支付宝业务明细查询"):
                    detail = text
        if detail is None:
            raise ValueError("no business detail file")
        rows = list(csv.reader(line for line in detail.splitlines() if not line.startswith("#")))
        if not rows:
            raise ValueError("no header row")
        column = {name.strip(): index for index, name in enumerate(rows[0])}
        lines = []
        for raw in rows[1:]:
            if not any(cell.strip() for cell in raw):
                continue
            if len(raw) < len(rows[0]):
                raise ValueError(f"a row of {len(raw)} of {len(rows[0])} columns")
            row = {name: raw[index].strip() for name, index in column.items()}
            kind = row["业务类型"]
            at = _china_time(row["完成时间"])
            if kind == "交易":
                lines.append(
                    StatementLine(
                        kind="charge",
                        order_no=row["商户订单号"],
                        reference=row["支付宝交易号"],
                        amount_fen=yuan_to_fen(row["订单金额（元）"]),
                        state="paid",
                        at=at,
                    )
                )
            elif kind == "退款":
                # The merchant's takings of a refund are written negative.
                received = row["商家实收（元）"]
                lines.append(
                    StatementLine(
                        kind="refund",
                        order_no=row["商户订单号"],
                        reference=row["退款批次号/请求号"],
                        amount_fen=yuan_to_fen(received.removeprefix("-")),
                        state="succeeded",
                        at=at,
                    )
                )
            else:
                raise ValueError(f"business type {kind!r}")
        return lines

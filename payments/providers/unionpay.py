"""UnionPay online payments (银联全渠道 / 云闪付 app payment), gateway spec 5.1.0.

Every message is a form of ``key=value`` fields signed with signMethod
``01``: the fields but ``signature``, sorted by key and joined
``k=v&k=v`` with their raw values, are hashed with SHA-256; the lowercase
hex digest is signed with SHA256withRSA (PKCS #1 v1.5) and the signature
goes, base64, into ``signature``. Our requests carry our certificate's
``certId``; the gateway's answers and back-end notices carry its own.

The real 5.1.0 gateway also sends ``signPubKeyCert``, its signing
certificate, which the merchant checks against UnionPay's root and middle
certificates before using its key. Here the platform's public key is
configured directly (``PAYMENTS_UNIONPAY_PLATFORM_KEY_FILE``) and the
answer's ``certId`` must name it.
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
from collections.abc import Mapping
from typing import ClassVar

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from django.conf import settings
from django.utils import timezone

from payments.providers.base import (
    ANSWER_MAX_BYTES,
    STATEMENT_SECONDS,
    BasePaymentProvider,
    NotifyNotAPayment,
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
    storable,
    unreached,
    unreached_status,
)

# UnionPay's clock is China time whatever TIME_ZONE says.
CHINA = zoneinfo.ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y%m%d%H%M%S"

CONSUME_PATH = "/gateway/api/appTransReq.do"
QUERY_PATH = "/gateway/api/queryTrans.do"
BACK_PATH = "/gateway/api/backTransReq.do"
FILE_PATH = "/gateway/api/fileTransReq.do"

# origRespCode of a transaction that is not final yet: 03 timed out, 04
# state unknown, 05 accepted and still being processed.
IN_PROGRESS = {"03", "04", "05"}
# respCodes worth the same call again later: the same three, 06 system
# busy, 37 too many queries.
RETRYABLE = {"03", "04", "05", "06", "37"}
# UnionPay answers 34 (查无此交易) for an order number it never saw and for
# an app order whose tn was issued but never paid.
NOT_FOUND = "34"
# fileTransReq answers 98 (文件不存在) for a day without transactions.
NO_FILE = "98"
# A6 (有缺陷的成功): a success with defects, a success all the same, in a
# signed notice as in a query's origRespCode.
SUCCESS = frozenset({"00", "A6"})
# A back notice with one of the codes that say the outcome is not known yet
# (03, 04, 05): the money may have been taken; UnionPay asks merchants to
# confirm it with a query.
CONFIRM_BY_QUERY = frozenset(IN_PROGRESS)
# Answers we act on beyond "refused": believed only signed.
STEERING = frozenset({"00", NOT_FOUND, NO_FILE})

# The settlement file's layout, column by column (name, width), one space
# between columns: ours, modelled on the INN…ZM file's fixed-width lines.
STATEMENT_COLUMNS: tuple[tuple[str, int], ...] = (
    ("txnType", 2),
    ("orderId", 40),
    ("queryId", 40),
    ("origOrderId", 40),
    ("origQryId", 40),
    ("txnAmt", 12),
    ("settleTime", 14),
)

# What a settlement file may unpack to: the zip, once the answer's own
# deflate is undone, and the file in it, each. Far above a city's day (a
# line is 196 bytes: this is some 1.3 million transactions), well below
# what would exhaust a worker. Beyond it the answer is refused unread (a
# decompression bomb, or a broken file) as an unreadable one is.
STATEMENT_MAX_BYTES = 256 << 20
_STATEMENT_CHUNK = 1 << 20

_DIGITS = re.compile(r"[0-9]+")
# txnAmt: fen, at most 12 digits (int() refuses more than 4300).
_AMOUNT = re.compile(r"[0-9]{1,12}")


def _china_time(at: dt.datetime) -> str:
    return timezone.localtime(at, CHINA).strftime(TIME_FORMAT)


def _parse_time(value: str) -> dt.datetime:
    """``yyyyMMddHHmmss`` China time; ValueError if it is not one."""
    if len(value) != 14 or not value.isdigit():
        raise ValueError(f"not a yyyyMMddHHmmss time: {value!r}")
    return channel_time(dt.datetime.strptime(value, TIME_FORMAT).replace(tzinfo=CHINA))


def _trace_time(trace_time: str, txn_time: dt.datetime) -> dt.datetime:
    """``traceTime`` is MMDDhhmmss without a year: it is the first such
    moment at or after the order was sent (``txnTime``, by our clock, less
    a day for the two clocks' difference), so an order sent on 31 December
    and paid on 1 January lands in the new year, and one sent just after
    midnight on 1 January by our clock and paid just before it by
    UnionPay's stays in the old one."""
    for year in (txn_time.year - 1, txn_time.year, txn_time.year + 1):
        try:
            at = dt.datetime.strptime(f"{year}{trace_time}", TIME_FORMAT).replace(tzinfo=CHINA)
        except ValueError:
            continue
        if at >= txn_time - dt.timedelta(days=1):
            return channel_time(at)
    raise ValueError(f"not a MMDDhhmmss time: {trace_time!r}")


def signing_string(fields: Mapping[str, str]) -> str:
    """Every field but ``signature``, sorted by key, ``k=v`` joined by ``&``."""
    return "&".join(f"{key}={fields[key]}" for key in sorted(fields) if key != "signature")


def _digest(fields: Mapping[str, str]) -> bytes:
    # 5.1.0 signs the hex text of the SHA-256 digest, not the digest bytes.
    return hashlib.sha256(signing_string(fields).encode("utf-8")).hexdigest().encode("ascii")


def sign(fields: Mapping[str, str], key: RSAPrivateKey) -> str:
    signature = key.sign(_digest(fields), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(fields: Mapping[str, str], key: RSAPublicKey) -> bool:
    try:
        signature = base64.b64decode(fields.get("signature", ""), validate=True)
        key.verify(signature, _digest(fields), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def parse_answer(text: str) -> dict[str, str]:
    """Read a gateway answer: ``k=v&k=v`` with raw, not URL-encoded,
    values. As UnionPay's own SDKs do, an ``&`` inside ``{…}`` belongs to
    the value (composite fields such as ``reserved={a=1&b=2}``)."""
    fields: dict[str, str] = {}
    depth = 0
    start = 0
    for index, char in enumerate(text + "&"):
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(depth - 1, 0)
        elif char == "&" and depth == 0:
            pair = text[start:index]
            start = index + 1
            if not pair:
                continue
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"not a key=value pair: {pair[:40]!r}")
            fields[key] = value
    return fields


class _TooLarge(Exception):
    """A settlement file unpacking beyond :data:`STATEMENT_MAX_BYTES`."""


def _inflated(data: bytes) -> bytes:
    """``data`` inflated (zlib), never beyond :data:`STATEMENT_MAX_BYTES`."""
    limit = STATEMENT_MAX_BYTES
    inflater = zlib.decompressobj()
    archive = inflater.decompress(data, limit + 1)
    if len(archive) > limit:
        raise _TooLarge("the deflated answer")
    if not inflater.eof:
        raise zlib.error("incomplete or truncated stream")
    return archive


def _unzipped(bundle: zipfile.ZipFile, name: str) -> bytes:
    """The file ``name`` of ``bundle``, never beyond :data:`STATEMENT_MAX_BYTES`.
    Read in chunks: one read inflates all a file says it holds and more, and
    a file may lie about its size (then it stops at the size it declared
    and fails its CRC)."""
    limit = STATEMENT_MAX_BYTES
    info = bundle.getinfo(name)
    if info.file_size > limit:
        raise _TooLarge(f"{name} of {info.file_size} bytes")
    content = bytearray()
    with bundle.open(info) as member:
        while chunk := member.read(_STATEMENT_CHUNK):
            content += chunk
            if len(content) > limit:
                raise _TooLarge(name)
    return bytes(content)


class UnionpayProvider(BasePaymentProvider):
    """The merchant's side of UnionPay's app payment (云闪付 / 银联控件支付),
    gateway spec 5.1.0 with RSA-SHA256 signatures (signMethod 01).

    The credentials are read as UnionPay names them: ``merchant_id`` is the
    15-character ``merId``, ``app_id`` the ``accessType`` (``0``: a merchant
    connecting directly), ``merchant_serial`` the ``certId`` of our signing
    certificate and ``platform_serial`` the ``certId`` the gateway signs
    with. The 5.1.0 gateway carries its signing certificate in
    ``signPubKeyCert`` and expects it checked against UnionPay's root; we
    configure its public key instead and require the ``certId`` to match.

    UnionPay identifies a transaction by ``merId`` + ``orderId`` +
    ``txnTime`` (the time the order was sent). We keep no state, so queries
    send the query's own ``txnTime`` and rely on ``orderId`` alone, which is
    unique for us: order and refund numbers are never reused.
    """

    identifier: ClassVar[str] = "unionpay"
    verbose_name: ClassVar[str] = "云闪付（银联）"
    # respCode 34 on the refund's orderId, raised by refund_query as not_found.
    refund_unknown_codes: ClassVar[frozenset[str]] = frozenset({"not_found"})

    # --- the wire ----------------------------------------------------------------------

    def _common(self, *, txn_type: str, txn_sub_type: str, biz_type: str) -> dict[str, str]:
        return {
            "version": "5.1.0",
            "encoding": "UTF-8",
            "signMethod": "01",
            "certId": self.credentials.merchant_serial,
            "txnType": txn_type,
            "txnSubType": txn_sub_type,
            "bizType": biz_type,
            "accessType": self.credentials.app_id,
            "merId": self.credentials.merchant_id,
            "txnTime": _china_time(timezone.now()),
        }

    def _call(self, path: str, fields: dict[str, str]) -> dict[str, str]:
        """POST a signed request and return the verified answer. A refusal
        (any respCode but 00) is returned too: what it means depends on the
        call."""
        # UnionPay's SDKs drop empty fields before signing and sending.
        fields = {key: value for key, value in fields.items() if value != ""}
        fields["signature"] = sign(fields, self.credentials.merchant_private_key)
        request = self.http.build_request(
            "POST",
            path,
            content=urllib.parse.urlencode(fields).encode("utf-8"),
            headers={"Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"},
        )
        try:
            if path == FILE_PATH:
                # The settlement file travels in the answer (deflated twice
                # and in base64: 4/3 of it at most, the answer's fields
                # besides); refused as a file that unpacks too far is.
                response = answer_read(
                    self.http,
                    request,
                    what=f"unionpay {path}",
                    limit=STATEMENT_MAX_BYTES * 4 // 3 + ANSWER_MAX_BYTES,
                    kind="a statement",
                    seconds=STATEMENT_SECONDS,
                    retryable=False,
                )
            else:
                response = answer_read(self.http, request, what=f"unionpay {path}")
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"unionpay {path}: {exc}", retryable=True, unreachable=unreached(exc)
            ) from exc
        if response.status_code != 200:
            raise ProviderError(
                f"unionpay {path}: HTTP {response.status_code}",
                retryable=unreached_status(response.status_code),
                code=f"http_{response.status_code}",
                unreachable=unreached_status(response.status_code),
            )
        try:
            answer = parse_answer(response.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProviderError(f"unionpay {path}: unreadable answer", code="malformed") from exc
        code = answer.get("respCode", "")
        if "signature" in answer or code in STEERING:
            # A success must be signed, and so must an answer that decides
            # something for us (no such transaction, no file); a refusal may
            # come unsigned (format errors), and then it is only believed as
            # a refusal.
            if "signature" not in answer:
                raise ProviderError(
                    f"unionpay {path}: unsigned answer with respCode {code!r}",
                    code="bad_signature",
                )
            if answer.get("certId") != self.credentials.platform_serial:
                raise ProviderError(
                    f"unionpay {path}: answer signed by unknown certId {answer.get('certId')!r}",
                    code="unknown_key",
                )
            if not verify(answer, self.credentials.platform_public_key):
                raise ProviderError(
                    f"unionpay {path}: answer signature does not verify", code="bad_signature"
                )
        if not code:
            raise ProviderError(f"unionpay {path}: answer without respCode", code="malformed")
        if code == "00" and answer.get("merId") != self.credentials.merchant_id:
            raise ProviderError(
                f"unionpay {path}: answer for merId {answer.get('merId')!r}", code="wrong_merchant"
            )
        return answer

    @staticmethod
    def _refused(path: str, answer: Mapping[str, str], codes: Mapping[str, str]) -> ProviderError:
        code = answer.get("respCode", "")
        return ProviderError(
            f"unionpay {path}: {code} {answer.get('respMsg', '')}".strip(),
            retryable=code in RETRYABLE,
            code=codes.get(code, f"unionpay_{code}"),
        )

    @staticmethod
    def _amount(answer: Mapping[str, str], path: str) -> int:
        value = answer.get("txnAmt", "")
        if not _AMOUNT.fullmatch(value):
            raise ProviderError(f"unionpay {path}: txnAmt {value[:20]!r}", code="malformed")
        return int(value)

    @staticmethod
    def _query_id(answer: Mapping[str, str], path: str) -> str:
        try:
            return channel_reference(answer.get("queryId", ""), "queryId")
        except ValueError as exc:
            raise ProviderError(f"unionpay {path}: {exc}", code="malformed") from exc

    def _query(self, order_id: str) -> dict[str, str]:
        """queryTrans.do by orderId. Returns the answer with respCode 00 or
        34; anything else is raised."""
        fields = self._common(txn_type="00", txn_sub_type="00", biz_type="000000")
        fields["orderId"] = order_id
        answer = self._call(QUERY_PATH, fields)
        if answer["respCode"] not in ("00", NOT_FOUND):
            raise self._refused(QUERY_PATH, answer, {})
        if answer["respCode"] == "00" and answer.get("orderId") != order_id:
            raise ProviderError(
                f"unionpay query of {order_id}: answer for {answer.get('orderId')!r}",
                retryable=False,
                code="malformed",
            )
        return answer

    # --- payments ----------------------------------------------------------------------

    def checkout_create(
        self,
        *,
        order_no: str,
        amount_fen: int,
        description: str,
        expires_at: dt.datetime,
        notify_url: str,
    ) -> dict[str, str]:
        """Consume (txnType 01/01) through appTransReq.do; the answer's
        ``tn`` is what the 云闪付 control needs to pay. ``payTimeout`` is the
        order's expiry: UnionPay refuses the payment after it, which is the
        only way an unpaid app order ends there (see :meth:`order_close`)."""
        fields = self._common(txn_type="01", txn_sub_type="01", biz_type="000201")
        fields.update(
            {
                "channelType": "08",
                "orderId": order_no,
                "txnAmt": str(amount_fen),
                "currencyCode": "156",
                "backUrl": notify_url,
                "payTimeout": _china_time(expires_at),
                "orderDesc": description,
            }
        )
        answer = self._call(CONSUME_PATH, fields)
        if answer["respCode"] != "00":
            raise self._refused(CONSUME_PATH, answer, {"12": "order_no_used"})
        tn = answer.get("tn", "")
        if not tn:
            raise ProviderError("unionpay consume: answer without tn", code="malformed")
        return {"tn": tn}

    def notify_parse(self, *, headers: Mapping[str, str], body: bytes) -> PaymentResult:
        """Read a back-end notice (后台通知) of a consume: a form posted to
        ``backUrl``. It is authentic when its ``certId`` names the
        platform key and its signature verifies; it is ours when ``merId``
        and ``accessType`` are. respCode 00 or A6 is a payment, 03/04/05 an
        outcome the query will tell (pending); anything else a failed one. ``txnTime`` (when the order was sent) is read, not
        judged: UnionPay re-sends a notice for a while, and a late one is
        still true."""
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=True,
                max_num_fields=200,
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise NotifyRejected("malformed", "not a UTF-8 form") from exc
        fields = dict(pairs)
        if len(fields) != len(pairs):
            raise NotifyRejected("malformed", "a field appears twice")
        missing = [
            name
            for name in (
                "signature",
                "certId",
                "merId",
                "accessType",
                "orderId",
                "respCode",
                "txnAmt",
            )
            if not fields.get(name)
        ]
        if missing:
            raise NotifyRejected("malformed", f"missing {', '.join(missing)}")
        if fields["certId"] != self.credentials.platform_serial:
            raise NotifyRejected("unknown_key", f"certId {fields['certId'][:64]}")
        if not verify(fields, self.credentials.platform_public_key):
            raise NotifyRejected("bad_signature")
        if (
            fields["merId"] != self.credentials.merchant_id
            or fields["accessType"] != self.credentials.app_id
        ):
            raise NotifyRejected(
                "wrong_merchant", f"merId {fields['merId']} accessType {fields['accessType']}"
            )
        if fields.get("txnType", "01") != "01":
            # A refund's notice (txnType 04) reaches the same backUrl, signed
            # like any: acknowledged (or UnionPay sends it again and again);
            # we learn refunds by querying them.
            raise NotifyNotAPayment(f"txnType {fields['txnType'][:8]}")
        if not _AMOUNT.fullmatch(fields["txnAmt"]):
            raise NotifyRejected("malformed", f"txnAmt {fields['txnAmt'][:20]}")
        try:
            txn_time = _parse_time(fields["txnTime"]) if fields.get("txnTime") else None
            paid_at = (
                _trace_time(fields["traceTime"], txn_time)
                if txn_time is not None
                and fields.get("traceTime")
                and fields["respCode"] in SUCCESS
                else None
            )
        except ValueError as exc:
            raise NotifyRejected("malformed", str(exc)) from exc
        paid = fields["respCode"] in SUCCESS
        if paid and not fields.get("queryId"):
            # The payment's transaction id: nothing to book it under.
            raise NotifyRejected("malformed", "a payment without queryId")
        try:
            query_id = channel_reference(fields.get("queryId", ""), "queryId")
        except ValueError as exc:
            raise NotifyRejected("malformed", str(exc)) from exc
        state: TradeState = "paid" if paid else "failed"
        if fields["respCode"] in CONFIRM_BY_QUERY:
            # Neither booked nor failed: the order stays pending and the
            # sweep's query (主动查单) decides, as UnionPay asks.
            state = "pending"
        return PaymentResult(
            order_no=fields["orderId"],
            state=state,
            transaction_id=query_id,
            amount_fen=int(fields["txnAmt"]),
            merchant_id=fields["merId"],
            app_id=fields["accessType"],
            paid_at=(paid_at or timezone.now()) if paid else None,
            raw_state=storable(fields["respCode"], 64),
        )

    def notify_reply(self, *, accepted: bool, message: str = "") -> NotifyReply:
        """UnionPay reads only the status: 200 stops its re-sending."""
        if accepted:
            return NotifyReply(status=200, body=b"ok")
        return NotifyReply(status=400, body=b"fail")

    def order_query(self, *, order_no: str) -> PaymentResult:
        """queryTrans.do on our order number. origRespCode 00 or A6 is paid,
        03/04/05 not final yet, anything else failed. respCode 34 (no such
        transaction) is pending: UnionPay says it both for an app order
        that was opened but never paid and for one it never saw, and
        either may still be paid until its payTimeout."""
        answer = self._query(order_no)
        if answer["respCode"] == NOT_FOUND:
            return PaymentResult(
                order_no=order_no,
                state="pending",
                merchant_id=self.credentials.merchant_id,
                app_id=self.credentials.app_id,
                raw_state=NOT_FOUND,
            )
        original = answer.get("origRespCode", "")
        state: TradeState
        if original in SUCCESS:
            state = "paid"
        elif original in IN_PROGRESS or not original:
            state = "pending"
        else:
            state = "failed"
        paid_at = None
        if state == "paid":
            if not answer.get("queryId"):
                raise ProviderError(
                    f"unionpay query of {order_no}: paid without queryId", code="malformed"
                )
            try:
                txn_time = _parse_time(answer.get("txnTime", ""))
                paid_at = _trace_time(answer.get("traceTime", ""), txn_time)
            except ValueError:
                # The time is for the record only; the payment stands.
                paid_at = timezone.now()
        return PaymentResult(
            order_no=order_no,
            state=state,
            transaction_id=self._query_id(answer, QUERY_PATH),
            amount_fen=self._amount(answer, QUERY_PATH),
            merchant_id=answer.get("merId", ""),
            app_id=answer.get("accessType", ""),
            paid_at=paid_at,
            raw_state=storable(original, 64),
        )

    def order_close(self, *, order_no: str) -> None:
        """UnionPay has no call that closes an unpaid app order: it lapses
        at the payTimeout sent with it. So closing asks where the order
        stands and succeeds (doing nothing at UnionPay) unless it was paid,
        which raises a non-retryable :class:`ProviderError` (``trade_paid``)
        so the caller brings the payment in instead. A paid order is undone
        by a refund, not here."""
        result = self.order_query(order_no=order_no)
        if result.state == "paid":
            raise ProviderError(
                f"unionpay order {order_no} is paid", retryable=False, code="trade_paid"
            )

    # --- refunds -----------------------------------------------------------------------

    def refund_create(
        self, *, order_no: str, refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundResult:
        """Refund (退货, txnType 04/00) through backTransReq.do. UnionPay
        names the payment by its ``queryId`` (``origQryId``), which we keep
        nowhere, so the order is queried first. The refund's ``orderId`` is
        our refund number; sending the same one again is the same refund.
        The answer only says the refund was accepted: it is pending until
        :meth:`refund_query` says otherwise."""
        payment = self.order_query(order_no=order_no)
        if payment.state != "paid" or not payment.transaction_id:
            raise ProviderError(
                f"unionpay order {order_no} is not paid ({payment.raw_state})",
                retryable=False,
                code="not_paid",
            )
        fields = self._common(txn_type="04", txn_sub_type="00", biz_type="000201")
        fields.update(
            {
                "channelType": "08",
                "orderId": refund_no,
                "origQryId": payment.transaction_id,
                "txnAmt": str(amount_fen),
                "currencyCode": "156",
                # UnionPay requires a backUrl for refunds; their notices are
                # acknowledged there and nothing more (see notify_parse):
                # refunds are settled by their query.
                "backUrl": f"{settings.PAYMENTS_NOTIFY_BASE_URL.rstrip('/')}"
                "/api/v1/payments/notify/unionpay/",
            }
        )
        answer = self._call(BACK_PATH, fields)
        if answer["respCode"] != "00":
            raise self._refused(
                BACK_PATH,
                answer,
                {"12": "refund_no_used", "35": "not_paid", "36": "refund_exceeds"},
            )
        return RefundResult(
            refund_no=refund_no,
            state="pending",
            refund_id=self._query_id(answer, BACK_PATH),
            amount_fen=self._amount(answer, BACK_PATH),
        )

    def refund_query(self, *, order_no: str, refund_no: str) -> RefundResult:
        """queryTrans.do on the refund's orderId (our refund number):
        origRespCode 00 or A6 succeeded, 03/04/05 still pending, anything
        else failed. A refund UnionPay does not know raises ``not_found``."""
        answer = self._query(refund_no)
        if answer["respCode"] == NOT_FOUND:
            raise ProviderError(
                f"unionpay refund {refund_no} not found", retryable=False, code="not_found"
            )
        original = answer.get("origRespCode", "")
        state: RefundState
        if original in SUCCESS:
            state = "succeeded"
        elif original in IN_PROGRESS or not original:
            state = "pending"
        else:
            state = "failed"
        succeeded_at = None
        if state == "succeeded":
            try:
                txn_time = _parse_time(answer.get("txnTime", ""))
                succeeded_at = _trace_time(answer.get("traceTime", ""), txn_time)
            except ValueError:
                pass  # the time dates the refund, it does not decide it
        return RefundResult(
            refund_no=refund_no,
            state=state,
            refund_id=self._query_id(answer, QUERY_PATH),
            amount_fen=self._amount(answer, QUERY_PATH),
            failure_reason=storable(answer.get("origRespMsg", ""), 200)
            if state == "failed"
            else "",
            succeeded_at=succeeded_at,
        )

    # --- statement ---------------------------------------------------------------------

    def statement_download(self, *, date: dt.date) -> list[StatementLine]:
        """The settlement file (对账文件, fileTransReq.do txnType 76, fileType
        00) of ``date``, asked for as ``settleDate`` MMDD. ``fileContent``
        is a zip, deflated and base64-encoded; inside it the INN…ZM file
        lists the day's consumes and refunds. respCode 98 (no file) is a day
        without transactions."""
        fields = self._common(txn_type="76", txn_sub_type="01", biz_type="000000")
        fields.update({"settleDate": date.strftime("%m%d"), "fileType": "00"})
        answer = self._call(FILE_PATH, fields)
        if answer["respCode"] == NO_FILE:
            return []
        if answer["respCode"] != "00":
            raise self._refused(FILE_PATH, answer, {})
        try:
            archive = _inflated(base64.b64decode(answer.get("fileContent", ""), validate=True))
            with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
                name = f"INN{date:%y%m%d}88ZM_{self.credentials.merchant_id}"
                text = _unzipped(bundle, name).decode("utf-8")
        except _TooLarge as exc:
            raise ProviderError(
                f"unionpay statement of {date}: larger than a statement can be "
                f"(unpacks beyond {STATEMENT_MAX_BYTES} bytes, {exc}): refused unread",
                retryable=False,
                code="bad_statement",
            ) from exc
        except (
            binascii.Error,
            zlib.error,
            zipfile.BadZipFile,
            # zipfile's other refusals: a compression method it lacks, an
            # encrypted file, data cut short.
            NotImplementedError,
            RuntimeError,
            EOFError,
            KeyError,
            UnicodeDecodeError,
        ) as exc:
            raise ProviderError(
                f"unionpay statement of {date}: unreadable file: {exc}",
                retryable=False,
                code="bad_statement",
            ) from exc
        return [self._statement_line(line, date) for line in text.splitlines() if line.strip()]

    @staticmethod
    def _statement_line(line: str, date: dt.date) -> StatementLine:
        values: dict[str, str] = {}
        offset = 0
        for name, width in STATEMENT_COLUMNS:
            values[name] = line[offset : offset + width].strip()
            offset += width + 1
        try:
            if len(line.rstrip()) != offset - 1 or not _DIGITS.fullmatch(values["txnAmt"]):
                raise ValueError("layout")
            at = _parse_time(values["settleTime"])
        except ValueError as exc:
            raise ProviderError(
                f"unionpay statement of {date}: bad line {line[:60]!r}",
                retryable=False,
                code="bad_statement",
            ) from exc
        amount = int(values["txnAmt"])
        if values["txnType"] == "01":
            return StatementLine(
                kind="charge",
                order_no=values["orderId"],
                reference=values["queryId"],
                amount_fen=amount,
                state="paid",
                at=at,
            )
        if values["txnType"] == "04":
            return StatementLine(
                kind="refund",
                order_no=values["origOrderId"],
                reference=values["orderId"],
                amount_fen=amount,
                state="succeeded",
                at=at,
            )
        raise ProviderError(
            f"unionpay statement of {date}: txnType {values['txnType']!r}",
            retryable=False,
            code="bad_statement",
        )

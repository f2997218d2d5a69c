"""Electronic receipts (电子缴费凭证) of paid orders: the receipt as data, with
a signed code, and its printable SVG rendering (DESIGN §5).

Every order that took money has a receipt, also after a refund (which the
receipt shows). Its ``code`` is signed like a star-code (DESIGN §7) with
``knd: "receipt"`` and no ``exp``: anyone checks it offline with the JWKS at
``/api/v1/qr/keys/``. Payments may not import the star-code app, so the
code is signed through :mod:`config.signing`, where ``qr`` registers the
signer.

A receipt is made from the order each time it is asked for and nothing is
stored: its ``iat`` and ``jti`` come from the payment itself and Ed25519
signatures are deterministic, so the same order gives the same receipt, code
included, on every download (until the signing key rotates, when the code is
signed afresh by the new key).
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from decimal import Decimal
from typing import Any

import qrcode
import qrcode.image.svg
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from qrcode.constants import ERROR_CORRECT_M

from config import masking, signing
from payments import selectors
from payments.errors import RECEIPT_NOT_AVAILABLE, PaymentsError
from payments.models import Channel, OrderStatus, PaymentOrder

KIND = "receipt"

# --- The receipt as data ------------------------------------------------------------------


def _jti(order: PaymentOrder) -> str:
    # One receipt per order: its id is the order number's, stable across downloads.
    return f"rcpt-{order.order_no}"


def receipt_claims(order: PaymentOrder) -> dict[str, Any]:
    """The claims signed into a paid order's receipt code.

    Besides the star-code claims (``iss`` is added by the signer, ``sub``
    names the payer of this order alone, ``iat`` the payment time): ``ono`` the
    order number, ``amt`` the amount paid in fen, ``cur`` the currency,
    ``dep`` the payee department's code, ``svc`` the service's code and
    ``pat`` the payment time (epoch seconds). Refunds are not signed in: the
    code proves a payment, which a refund later does not undo on paper.

    ``sub`` is not the payer's subject: a receipt is handed to others (an
    employer, an auditor), and the subject is what every scanner sees on the
    payer's star-code, so anyone holding both could link them. The order
    number leads back to the payer here, for those allowed to ask.
    """
    assert order.paid_at is not None  # receipt_for checked the order was paid
    paid_at = int(order.paid_at.timestamp())
    return {
        "sub": f"payer:{order.order_no}",
        "iat": paid_at,
        "jti": _jti(order),
        "knd": KIND,
        "ono": order.order_no,
        "amt": order.paid_fen,
        "cur": order.currency,
        "dep": order.department.code,
        "svc": order.service.code,
        "pat": paid_at,
    }


def _payer_masked(order: PaymentOrder) -> dict[str, str]:
    payer = order.payer
    return {
        "name": masking.mask_name(payer.real_name),
        "phone": masking.mask_phone(payer.phone),
    }


def receipt_for(order: PaymentOrder) -> dict[str, Any]:
    """The receipt of ``order`` (the caller checked whose order it is).

    Raises :class:`~payments.errors.PaymentsError` ``receipt_not_available``
    when the order never took money. A refunded order keeps its receipt,
    which shows ``refunded_fen`` and the order's status.
    """
    if order.paid_fen <= 0 or order.paid_at is None:
        raise PaymentsError(RECEIPT_NOT_AVAILABLE, extra={"order_status": order.status})
    return {
        "title": str(_("电子缴费凭证")),
        "order_no": order.order_no,
        "application": order.application.number,
        "payer": _payer_masked(order),
        # Named as when the order was opened: a receipt is a document.
        "payee": {
            "code": order.department.code,
            "name": order.payee_name or order.department.name,
            "name_en": order.payee_name_en if order.payee_name else order.department.name_en,
        },
        "service": {"code": order.service.code, "name": order.description},
        "amount_fen": order.paid_fen,
        "refunded_fen": order.refunded_fen,
        "currency": order.currency,
        "channel": order.channel,
        "transaction_id": order.provider_transaction_id,
        "status": order.status,
        "paid_at": timezone.localtime(order.paid_at).isoformat(),
        "code": signing.document_sign(receipt_claims(order)),
    }


# --- The printable rendering ----------------------------------------------------------------

SVG_NS = "http://www.w3.org/2000/svg"
# A5 portrait, in millimetres (the SVG's user unit).
PAGE_WIDTH, PAGE_HEIGHT = 148, 210
MARGIN = 8
FONT = "Noto Sans CJK SC, Source Han Sans SC, PingFang SC, Microsoft YaHei, sans-serif"
INK, MUTED, SEAL = "#000", "#555", "#b3261e"
QR_SIZE = 56
LABEL_X, VALUE_X, RIGHT_X = 16, 46, PAGE_WIDTH - 16
ROW_HEIGHT = 8.5

# What XML 1.0 allows in a document; anything else (control characters, lone
# surrogates) is dropped rather than made into a document no reader opens.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(value: object) -> str:
    return _NOT_XML.sub("", str(value))


def _text_width(text: str, size: float) -> float:
    """About how wide ``text`` sets at ``size`` (CJK a full em, the rest half)."""
    return sum(size if ord(ch) > 0x2E7F else size * 0.55 for ch in text)


def _text(
    parent: ET.Element,
    x: float,
    y: float,
    value: object,
    *,
    size: float,
    fill: str = INK,
    anchor: str = "start",
    bold: bool = False,
    fit: float | None = None,
) -> ET.Element:
    """A line of text; ElementTree escapes it. ``fit``: the width it must not
    pass (the font shrinks, down to a size still legible on paper)."""
    content = _xml_text(value)
    if fit is not None:
        width = _text_width(content, size)
        if width > fit:
            size = max(2.4, size * fit / width)
    element = ET.SubElement(
        parent,
        "text",
        {
            "x": f"{x:g}",
            "y": f"{y:g}",
            "font-size": f"{size:.2f}",
            "font-family": FONT,
            "fill": fill,
            "text-anchor": anchor,
        },
    )
    if bold:
        element.set("font-weight", "bold")
    element.text = content
    return element


def _qr(parent: ET.Element, text: str, *, x: float, y: float, size: float) -> None:
    """The code as an inline vector QR (qrcode's SVG path factory), placed as
    a nested ``<svg>`` in the module grid's own coordinates."""
    code = qrcode.QRCode(
        # M, not the Q of venue codes: a receipt is kept on clean paper, not
        # posted outdoors, and its code is long; M keeps each module over
        # half a millimetre at this size.
        error_correction=ERROR_CORRECT_M,
        border=4,
        box_size=10,  # the factory's unit: 10 px = one user unit, one module
        image_factory=qrcode.image.svg.SvgPathImage,
    )
    code.add_data(text.encode("utf-8"), optimize=0)
    code.make(fit=True)
    image = code.make_image()
    modules = image.units(image.pixel_size, text=False)
    assert isinstance(modules, Decimal)
    grid = ET.SubElement(
        parent,
        "svg",
        {
            "id": "receipt-code",
            "x": f"{x:g}",
            "y": f"{y:g}",
            "width": f"{size:g}",
            "height": f"{size:g}",
            "viewBox": f"0 0 {modules} {modules}",
        },
    )
    ET.SubElement(grid, "rect", {"width": f"{modules}", "height": f"{modules}", "fill": "#fff"})
    ET.SubElement(
        grid,
        "path",
        {"d": image.path.get("d"), "fill": INK, "shape-rendering": "crispEdges"},
    )


def _rows(receipt: dict[str, Any]) -> list[tuple[str, str]]:
    payer = receipt["payer"]
    who = " ".join(part for part in (payer.get("name"), payer.get("phone")) if part)
    paid_at = timezone.localtime(dt.datetime.fromisoformat(receipt["paid_at"]))
    try:
        channel = str(Channel(receipt["channel"]).label)
    except ValueError:
        channel = receipt["channel"]
    rows = [
        (str(_("订单号")), receipt["order_no"]),
        (str(_("办件编号")), receipt["application"]),
        (str(_("缴费人")), who or "—"),
        (str(_("收款单位")), receipt["payee"]["name"]),
        (str(_("服务事项")), receipt["service"]["name"]),
        (
            str(_("金额")),
            f"¥{selectors.yuan(receipt['amount_fen'], grouped=True)}（{receipt['currency']}）",
        ),
        (str(_("支付方式")), channel),
        (str(_("交易流水号")), receipt["transaction_id"] or "—"),
        (str(_("支付时间")), f"{paid_at:%Y-%m-%d %H:%M:%S}"),
    ]
    if receipt["refunded_fen"]:
        rows.append((str(_("已退款")), f"¥{selectors.yuan(receipt['refunded_fen'], grouped=True)}"))
    return rows


def receipt_svg(receipt: dict[str, Any]) -> bytes:
    """A printable A5 rendering of a receipt (:func:`receipt_for`): the title,
    the fields, and the signed code as a QR, all inline (no fonts, images or
    styles loaded from anywhere), every text escaped for XML."""
    root = ET.Element(
        "svg",
        {
            "xmlns": SVG_NS,
            "version": "1.1",
            "width": f"{PAGE_WIDTH}mm",
            "height": f"{PAGE_HEIGHT}mm",
            "viewBox": f"0 0 {PAGE_WIDTH} {PAGE_HEIGHT}",
        },
    )
    title = ET.SubElement(root, "title")
    title.text = _xml_text(f"{_('电子缴费凭证')} {receipt['order_no']}")
    ET.SubElement(
        root, "rect", {"width": str(PAGE_WIDTH), "height": str(PAGE_HEIGHT), "fill": "#fff"}
    )
    frame = {"fill": "none", "stroke": SEAL}
    ET.SubElement(
        root,
        "rect",
        {
            "x": str(MARGIN),
            "y": str(MARGIN),
            "width": str(PAGE_WIDTH - 2 * MARGIN),
            "height": str(PAGE_HEIGHT - 2 * MARGIN),
            "stroke-width": "0.6",
            **frame,
        },
    )
    ET.SubElement(
        root,
        "rect",
        {
            "x": str(MARGIN + 1.2),
            "y": str(MARGIN + 1.2),
            "width": f"{PAGE_WIDTH - 2 * MARGIN - 2.4:g}",
            "height": f"{PAGE_HEIGHT - 2 * MARGIN - 2.4:g}",
            "stroke-width": "0.25",
            **frame,
        },
    )
    centre = PAGE_WIDTH / 2
    _text(root, centre, 27, _("电子缴费凭证"), size=8, fill=SEAL, anchor="middle", bold=True)
    _text(root, centre, 34, _("我的长沙 · 统一公共支付"), size=3.4, fill=MUTED, anchor="middle")
    ET.SubElement(
        root,
        "line",
        {
            "x1": str(LABEL_X),
            "y1": "39",
            "x2": str(RIGHT_X),
            "y2": "39",
            "stroke": SEAL,
            "stroke-width": "0.4",
        },
    )

    y = 49.0
    for label, value in _rows(receipt):
        _text(root, LABEL_X, y, label, size=3.4, fill=MUTED)
        _text(root, VALUE_X, y, value, size=3.8, fit=RIGHT_X - VALUE_X)
        ET.SubElement(
            root,
            "line",
            {
                "x1": str(LABEL_X),
                "y1": f"{y + 2.8:g}",
                "x2": str(RIGHT_X),
                "y2": f"{y + 2.8:g}",
                "stroke": "#ddd",
                "stroke-width": "0.2",
            },
        )
        y += ROW_HEIGHT

    if receipt["status"] in (OrderStatus.REFUNDED, OrderStatus.PARTIALLY_REFUNDED):
        stamp = _text(
            root,
            RIGHT_X - 14,
            66,
            OrderStatus(receipt["status"]).label,
            size=6,
            fill=SEAL,
            anchor="middle",
            bold=True,
        )
        stamp.set("transform", f"rotate(-18 {RIGHT_X - 14:g} 66)")
        stamp.set("opacity", "0.75")

    qr_x, qr_y = RIGHT_X - QR_SIZE, PAGE_HEIGHT - MARGIN - 6 - QR_SIZE
    _qr(root, receipt["code"], x=qr_x, y=qr_y, size=QR_SIZE)
    notes = [
        str(_("扫码验真：二维码由我的长沙签名（EdDSA），")),
        str(_("可用 /api/v1/qr/keys/ 公布的公钥离线核验，")),
        str(_("码内含订单号、金额、收款单位与支付时间。")),
        str(_("本凭证由系统生成，重复下载内容一致。")),
    ]
    for i, line in enumerate(notes):
        _text(
            root, LABEL_X, qr_y + 14 + i * 5.5, line, size=2.9, fill=MUTED, fit=qr_x - LABEL_X - 3
        )
    _text(
        root,
        qr_x + QR_SIZE / 2,
        qr_y + QR_SIZE + 3.5,
        _("扫码验真"),
        size=3,
        fill=MUTED,
        anchor="middle",
    )

    document = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + document + "\n").encode("utf-8")

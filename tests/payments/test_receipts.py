"""A citizen who paid gets an electronic receipt (电子缴费凭证): as JSON and as
a printable SVG, carrying a code that anyone verifies offline with the JWKS."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import xml.etree.ElementTree as ET

import pytest
import zxingcpp
from django.utils import timezone
from jwcrypto import jwk, jws, jwt
from PIL import Image, ImageDraw

from config import signing
from payments import orders
from payments.models import PaymentOrder
from payments.providers.base import PaymentResult, RefundResult
from services.models import Service
from tests.services.conftest import submit
from tests.services.factories import ServiceFactory

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"
PAID_AT = dt.datetime(2026, 3, 9, 6, 30, 15, tzinfo=dt.UTC)  # 14:30:15 in Changsha


@pytest.fixture
def id_card_service(department, category) -> Service:
    """居民身份证换领, 20.00 yuan, of the fixture department (hrss)."""
    return ServiceFactory(
        code="id-card-renew",
        name="居民身份证换领",
        department=department,
        category=category,
        fee_fen=2000,
    )


def order_opened(client, service: Service) -> PaymentOrder:
    """The client applies for ``service`` and opens a WeChat Pay order for it."""
    application = submit(client, service.code)
    assert application.status_code == 201, application.json()
    response = client.post(
        "/api/v1/payments/",
        {"application": application.json()["id"], "channel": "wechat"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return PaymentOrder.objects.get(pk=response.json()["id"])


def channel_says_paid(order: PaymentOrder) -> PaymentOrder:
    """WeChat Pay's callback for the order arrives: paid in full."""
    outcome = orders.order_apply_result(
        order=order,
        result=PaymentResult(
            order_no=order.order_no,
            state="paid",
            transaction_id="4200001234202603091234567890",
            amount_fen=2000,
            paid_at=PAID_AT,
        ),
        source="notify",
    )
    assert outcome == "accepted"
    return PaymentOrder.objects.get(pk=order.pk)


@pytest.fixture
def paid_order(citizen_api, id_card_service, django_capture_on_commit_callbacks) -> PaymentOrder:
    with django_capture_on_commit_callbacks(execute=True):
        order = order_opened(citizen_api, id_card_service)
        return channel_says_paid(order)


def receipt_of(client, order: PaymentOrder) -> dict:
    response = client.get(f"/api/v1/payments/{order.pk}/receipt/")
    assert response.status_code == 200, response.json()
    return response.json()


def jwks_through_the_api(api) -> jwk.JWKSet:
    response = api.get("/api/v1/qr/keys/")
    assert response.status_code == 200
    return jwk.JWKSet.from_json(response.content)


def independently_verified(api, code: str) -> dict:
    """The claims, as jwcrypto sees them with the JWKS fetched over HTTP."""
    assert code.startswith("MCS1:")
    token = jwt.JWT(
        jwt=code.removeprefix("MCS1:"),
        key=jwks_through_the_api(api),
        algs=["EdDSA"],
        expected_type="JWS",
    )
    return json.loads(token.claims)


# --- The receipt ---------------------------------------------------------------------------


def test_a_citizen_who_paid_gets_a_receipt_of_who_paid_whom_for_what(
    citizen, citizen_api, paid_order
):
    receipt = receipt_of(citizen_api, paid_order)

    assert receipt["title"] == "电子缴费凭证"
    assert receipt["order_no"] == paid_order.order_no
    assert receipt["application"] == paid_order.application.number
    assert receipt["payer"] == {"name": "张**", "phone": "138****8000"}
    assert receipt["payee"]["code"] == "hrss"
    assert receipt["payee"]["name"] == "长沙市人力资源和社会保障局"
    assert receipt["service"] == {"code": "id-card-renew", "name": "居民身份证换领"}
    assert (receipt["amount_fen"], receipt["currency"], receipt["refunded_fen"]) == (2000, "CNY", 0)
    assert receipt["channel"] == "wechat"
    assert receipt["transaction_id"] == "4200001234202603091234567890"
    assert receipt["status"] == "paid"
    assert receipt["paid_at"] == "2026-03-09T14:30:15+08:00"
    text = json.dumps(receipt, ensure_ascii=False)
    assert "13800138000" not in text and "张三丰" not in text
    assert citizen.id_number not in text


def test_paying_in_the_sandbox_wallet_brings_the_receipt(citizen_api, api, id_card_service, pay):
    """The whole way: the wallet pays, the channel's signed callback arrives."""
    order = order_opened(citizen_api, id_card_service)
    paid = pay({"order_no": order.order_no}, client=citizen_api)
    assert paid.status == "paid"
    receipt = receipt_of(citizen_api, paid)
    assert (receipt["amount_fen"], receipt["transaction_id"]) == (
        2000,
        paid.provider_transaction_id,
    )
    assert independently_verified(api, receipt["code"])["ono"] == order.order_no


def test_the_receipt_code_verifies_offline_with_the_published_keys(
    citizen, citizen_api, api, paid_order
):
    receipt = receipt_of(citizen_api, paid_order)
    claims = independently_verified(api, receipt["code"])

    pat = int(PAID_AT.timestamp())
    assert claims == {
        "iss": "https://my.changsha.gov.cn",
        "sub": f"payer:{receipt['order_no']}",  # not the subject scanners see
        "iat": pat,
        "jti": f"rcpt-{paid_order.order_no}",
        "knd": "receipt",
        "ono": receipt["order_no"],
        "amt": receipt["amount_fen"],
        "cur": "CNY",
        "dep": receipt["payee"]["code"],
        "svc": receipt["service"]["code"],
        "pat": pat,
    }
    assert "exp" not in claims  # a receipt does not expire
    header = json.loads(base64.urlsafe_b64decode(receipt["code"][5:].split(".")[0] + "=="))
    assert header["alg"] == "EdDSA"
    assert header["kid"] in {
        key["kid"] for key in json.loads(api.get("/api/v1/qr/keys/").content)["keys"]
    }


def _tampered_amount(code: str) -> str:
    header, payload, signature = code.removeprefix("MCS1:").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["amt"] = 1
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"MCS1:{header}.{forged}.{signature}"


def _tampered_signature(code: str) -> str:
    head, _, signature = code.rpartition(".")
    flipped = "A" if signature[10] != "A" else "B"
    return f"{head}.{signature[:10]}{flipped}{signature[11:]}"


@pytest.mark.parametrize("tamper", [_tampered_amount, _tampered_signature])
def test_a_tampered_receipt_code_does_not_verify(citizen_api, api, paid_order, tamper):
    code = receipt_of(citizen_api, paid_order)["code"]
    forged = tamper(code).removeprefix("MCS1:")
    token = jws.JWS()
    token.deserialize(forged)
    key = jwks_through_the_api(api).get_key(token.jose_header["kid"])
    assert key is not None  # the forgery still names our key
    with pytest.raises(jws.InvalidJWSSignature):
        token.verify(key, alg="EdDSA")
    with pytest.raises(jwt.JWTMissingKey):  # no published key vouches for it
        independently_verified(api, tamper(code))


def test_downloading_the_receipt_again_gives_the_same_receipt(citizen_api, paid_order):
    first = citizen_api.get(f"/api/v1/payments/{paid_order.pk}/receipt/")
    again = citizen_api.get(f"/api/v1/payments/{paid_order.pk}/receipt/")
    assert first.content == again.content
    assert "no-store" in first["Cache-Control"]
    svg = citizen_api.get(f"/api/v1/payments/{paid_order.pk}/receipt.svg")
    assert svg.content == citizen_api.get(f"/api/v1/payments/{paid_order.pk}/receipt.svg").content


def test_a_receipt_names_payee_and_service_as_they_were_when_paid(
    citizen_api, paid_order, department, id_card_service
):
    """A receipt is a document: renaming the department or the service
    later changes none of it (it says so at its foot)."""
    before = receipt_of(citizen_api, paid_order)
    svg = citizen_api.get(f"/api/v1/payments/{paid_order.pk}/receipt.svg").content
    department.name, department.name_en = "长沙市改名后的局", "Renamed Bureau"
    department.save()
    id_card_service.name = "改名后的事项"
    id_card_service.save()
    after = receipt_of(citizen_api, paid_order)
    assert after == before
    assert after["payee"]["name"] == "长沙市人力资源和社会保障局"
    assert after["service"]["name"] == "居民身份证换领"
    assert citizen_api.get(f"/api/v1/payments/{paid_order.pk}/receipt.svg").content == svg


def test_a_refunded_order_keeps_its_receipt_and_shows_the_refund(
    citizen_api, api, paid_order, django_capture_on_commit_callbacks
):
    before = receipt_of(citizen_api, paid_order)
    with django_capture_on_commit_callbacks(execute=False):
        refund = orders.refund_request(
            order=paid_order, amount_fen=2000, reason="重复缴费", actor=None
        )
    assert orders.refund_apply_result(
        refund=refund,
        result=RefundResult(refund_no=refund.refund_no, state="succeeded", refund_id="50300001"),
    )

    after = receipt_of(citizen_api, paid_order)
    assert (after["status"], after["amount_fen"], after["refunded_fen"]) == ("refunded", 2000, 2000)
    # The code proves the payment, which the refund does not change.
    assert after["code"] == before["code"]
    assert independently_verified(api, after["code"])["amt"] == 2000
    svg = citizen_api.get(f"/api/v1/payments/{paid_order.pk}/receipt.svg")
    texts = [t.text or "" for t in ET.fromstring(svg.content).iter(f"{SVG}text")]
    assert "已全额退款" in texts and "已退款" in texts


# --- Whose receipt -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["receipt/", "receipt.svg"])
def test_another_citizen_cannot_see_my_receipt(other_citizen_api, api, paid_order, suffix):
    response = other_citizen_api.get(f"/api/v1/payments/{paid_order.pk}/{suffix}")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"
    assert api.get(f"/api/v1/payments/{paid_order.pk}/{suffix}").status_code == 401


@pytest.mark.parametrize("suffix", ["receipt/", "receipt.svg"])
def test_an_unpaid_order_has_no_receipt_yet(citizen_api, id_card_service, suffix):
    order = order_opened(citizen_api, id_card_service)
    response = citizen_api.get(f"/api/v1/payments/{order.pk}/{suffix}")
    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "receipt_not_available"
    assert body["order_status"] == "pending"


def test_a_failed_order_has_no_receipt(citizen_api, id_card_service):
    order = order_opened(citizen_api, id_card_service)
    orders.order_apply_result(
        order=order, result=PaymentResult(order_no=order.order_no, state="failed"), source="query"
    )
    response = citizen_api.get(f"/api/v1/payments/{order.pk}/receipt/")
    assert response.json()["code"] == "receipt_not_available"


# --- The printable receipt ------------------------------------------------------------------------


def test_the_printable_receipt_is_a_self_contained_svg(citizen_api, paid_order):
    response = citizen_api.get(f"/api/v1/payments/{paid_order.pk}/receipt.svg")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response["Cache-Control"]
    assert (
        response["Content-Disposition"] == f'inline; filename="receipt-{paid_order.order_no}.svg"'
    )
    assert "default-src 'none'" in response["Content-Security-Policy"]

    root = ET.fromstring(response.content)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    assert (root.get("width"), root.get("height")) == ("148mm", "210mm")  # A5
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    for expected in (
        "电子缴费凭证",
        paid_order.order_no,
        "长沙市人力资源和社会保障局",
        "居民身份证换领",
        "¥20.00（CNY）",
        "2026-03-09 14:30:15",
        "张** 138****8000",
    ):
        assert expected in texts, expected
    for element in root.iter():
        tag = element.tag.removeprefix(SVG)
        assert tag not in ("image", "script", "foreignObject", "style", "use", "a"), tag
        for name, value in element.attrib.items():
            assert not name.endswith(("href", "src")), (tag, name)
            assert "url(" not in value and not re.search(r"https?://", value), (tag, name)
    assert b"url(" not in response.content and b"@import" not in response.content


def test_an_image_accept_header_still_gets_the_svg(citizen_api, paid_order):
    response = citizen_api.get(
        f"/api/v1/payments/{paid_order.pk}/receipt.svg", HTTP_ACCEPT="image/*"
    )
    assert response.status_code == 200


def rasterize_code(svg: bytes, scale: int = 8) -> Image.Image:
    """Draw the receipt's QR (its nested ``<svg id="receipt-code">``, the
    square path qrcode's SVG factory writes) with PIL: no SVG library needed."""
    root = ET.fromstring(svg)
    grid = next(e for e in root.iter(f"{SVG}svg") if e.get("id") == "receipt-code")
    _, _, width, height = (float(v) for v in grid.get("viewBox").split())
    image = Image.new("L", (int(width * scale), int(height * scale)), 255)
    draw = ImageDraw.Draw(image)
    path = grid.find(f"{SVG}path").get("d")
    squares = re.findall(r"M([\d.]+),([\d.]+)H([\d.]+)V([\d.]+)H[\d.]+z", path)
    assert squares and len(squares) == path.count("M")
    for x0, y0, x1, y1 in squares:
        draw.rectangle(
            [float(x0) * scale, float(y0) * scale, float(x1) * scale - 1, float(y1) * scale - 1],
            fill=0,
        )
    return image


def test_the_printed_qr_holds_the_receipt_code(citizen, citizen_api, api, paid_order):
    code = receipt_of(citizen_api, paid_order)["code"]
    svg = citizen_api.get(f"/api/v1/payments/{paid_order.pk}/receipt.svg").content
    texts = [
        r.text
        for r in zxingcpp.read_barcodes(rasterize_code(svg))
        if r.format == zxingcpp.BarcodeFormat.QRCode
    ]
    assert texts == [code]
    assert independently_verified(api, texts[0])["jti"] == f"rcpt-{paid_order.order_no}"


def test_names_that_look_like_markup_are_printed_as_text(citizen_api, paid_order):
    # The payee's name as the order keeps it (the department's, when opened).
    PaymentOrder.objects.filter(pk=paid_order.pk).update(
        payee_name='长沙<市>&"局" </text><script>alert(1)</script>\x01'
    )
    svg = citizen_api.get(f"/api/v1/payments/{paid_order.pk}/receipt.svg").content
    root = ET.fromstring(svg)
    assert not [e for e in root.iter() if e.tag.removeprefix(SVG) == "script"]
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert '长沙<市>&"局" </text><script>alert(1)</script>' in texts


# --- The signing hook ------------------------------------------------------------------------------


def test_documents_cannot_be_signed_as_a_pass():
    """A receipt must never pass for a citizen's or a venue's code."""
    for kind in ("citizen", "venue"):
        with pytest.raises(ValueError):
            signing.document_sign({"knd": kind, "sub": "s_x", "lvl": 2, "exp": 2**31})
    with pytest.raises(ValueError):
        signing.document_sign({"sub": "s_x"})


def test_the_signer_vouches_for_the_issuer_and_fills_what_a_document_leaves_out(api):
    before = int(dt.datetime.now(dt.UTC).timestamp())
    code = signing.document_sign({"knd": "notice", "sub": "s_x", "iss": "https://evil.example"})
    claims = independently_verified(api, code)
    assert claims["iss"] == "https://my.changsha.gov.cn"
    assert before <= claims["iat"] <= before + 2
    assert len(claims["jti"]) >= 16
    assert (claims["knd"], claims["sub"]) == ("notice", "s_x")


def test_without_a_registered_signer_signing_says_why(monkeypatch):
    monkeypatch.setattr(signing, "_signer", None)
    with pytest.raises(signing.SignerMissing, match="qr"):
        signing.document_sign({"knd": "receipt", "sub": "s_x"})


def test_a_scanner_is_not_let_in_by_a_receipt(citizen_api, scanner_api, paid_order):
    """Receipts are proof of payment, not passes: the scanners' verify
    endpoint does not take one for a star-code."""
    code = receipt_of(citizen_api, paid_order)["code"]
    response = scanner_api.post("/api/v1/qr/verify/", {"code": code}, format="json")
    assert response.status_code == 200
    assert response.json() == {"valid": False, "reason": "malformed"}


def test_a_key_that_signed_a_receipt_stays_published_after_rotation(
    citizen_api, api, paid_order
) -> None:
    from qr import keys

    printed = receipt_of(citizen_api, paid_order)["code"]
    old = keys.signing_key_ensure()
    keys.signing_key_rotate(immediately=True)

    far = timezone.now() + dt.timedelta(days=3650)
    assert old.kid not in keys.signing_keys_prune(now=far)

    # The receipt printed years ago still checks out offline.
    assert independently_verified(api, printed)["ono"] == paid_order.order_no

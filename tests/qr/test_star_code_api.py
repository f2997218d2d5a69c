"""A citizen carries one signed code; any JOSE library and any QR reader agree."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import xml.etree.ElementTree as ET

import pytest
import zxingcpp
from django.utils import timezone
from jwcrypto import jwk, jwt
from PIL import Image, ImageDraw

from accounts.citizens import account_close, user_set_active
from qr.models import SigningKey
from tests.qr.conftest import issue

pytestmark = pytest.mark.django_db


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


def test_a_citizens_code_verifies_with_an_independent_jose_library(citizen, citizen_api, api):
    before = int(timezone.now().timestamp())
    body = issue(citizen_api)
    claims = independently_verified(api, body["code"])

    assert claims["sub"] == citizen.subject
    assert claims["knd"] == "citizen"
    assert claims["lvl"] == 2
    assert claims["iss"]
    assert before <= claims["iat"] <= before + 2
    assert claims["exp"] == claims["iat"] + 60
    assert len(claims["jti"]) >= 16
    expires_at = dt.datetime.fromisoformat(body["expires_at"])
    refresh_after = dt.datetime.fromisoformat(body["refresh_after"])
    assert expires_at.timestamp() == claims["exp"]
    assert body["expires_at"].endswith("+08:00")
    assert refresh_after < expires_at
    assert refresh_after.timestamp() > claims["iat"]


def test_the_code_names_its_key_and_algorithm_in_the_header(citizen_api, api):
    code = issue(citizen_api)["code"]
    from qr.codes import b64url_decode

    header = json.loads(b64url_decode(code[5:].split(".")[0]))
    kids = {key["kid"] for key in api.get("/api/v1/qr/keys/").json()["keys"]}
    assert header["alg"] == "EdDSA"
    assert header["kid"] in kids


def test_the_code_carries_no_phone_name_or_id_number(citizen, citizen_api):
    code = issue(citizen_api)["code"]
    from qr.codes import b64url_decode

    payload = b64url_decode(code[5:].split(".")[1]).decode()
    for secret in (citizen.phone, citizen.id_number, citizen.real_name, str(citizen.pk)):
        assert secret not in payload
        assert secret not in code


def test_each_call_gives_a_fresh_code(citizen_api):
    first, second = issue(citizen_api), issue(citizen_api)
    assert first["code"] != second["code"]


def test_the_code_follows_the_ttl_setting(citizen_api, api, settings):
    settings.STAR_CODE_TTL = 30
    claims = independently_verified(api, issue(citizen_api)["code"])
    assert claims["exp"] - claims["iat"] == 30


def test_a_level_one_citizen_gets_level_one(new_citizen):
    from tests.conftest import client_for

    body = issue(client_for(new_citizen))
    from qr.codes import b64url_decode

    assert json.loads(b64url_decode(body["code"][5:].split(".")[1]))["lvl"] == 1


def test_the_code_is_never_cached(citizen_api):
    response = citizen_api.get("/api/v1/me/star-code/")
    assert "no-store" in response["Cache-Control"]


def test_a_suspended_account_gets_no_code(citizen, citizen_api):
    user_set_active(user=citizen, active=False, actor=None)
    response = citizen_api.get("/api/v1/me/star-code/")
    assert response.status_code == 401
    assert response.json()["code"] == "account_inactive"


def test_a_closed_account_gets_no_code(citizen, citizen_api):
    account_close(user=citizen)
    response = citizen_api.get("/api/v1/me/star-code/")
    assert response.status_code == 401


def test_the_service_itself_refuses_an_inactive_account(citizen):
    from qr.errors import QrError
    from qr.star_codes import star_code_issue

    citizen.is_active = False
    with pytest.raises(QrError) as caught:
        star_code_issue(user=citizen)
    assert caught.value.code == "account_suspended"


def test_keys_and_department_callers_get_no_star_code(api, integrator_api, scanner_api):
    assert api.get("/api/v1/me/star-code/").status_code == 401
    assert integrator_api.get("/api/v1/me/star-code/").status_code == 403
    assert scanner_api.get("/api/v1/me/star-code/").status_code == 403


def test_issuing_is_throttled_per_citizen(citizen_api, settings):
    settings.QR_STAR_CODE_RATE = "3/day"
    statuses = [citizen_api.get("/api/v1/me/star-code/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = citizen_api.get("/api/v1/me/star-code/")
    assert response.json()["code"] == "throttled"
    assert int(response["Retry-After"]) > 0


# --- Images ------------------------------------------------------------------------------


def decode(image: Image.Image) -> list[str]:
    return [
        r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode
    ]


def test_the_png_decodes_back_to_a_code_that_verifies(citizen, citizen_api, api):
    response = citizen_api.get("/api/v1/me/star-code/image.png")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "no-store" in response["Cache-Control"]
    image = Image.open(io.BytesIO(response.content))
    assert 300 <= image.width <= 1200 and image.width == image.height
    texts = decode(image)
    assert len(texts) == 1
    assert independently_verified(api, texts[0])["sub"] == citizen.subject


def test_the_png_keeps_a_quiet_zone(citizen_api):
    image = Image.open(io.BytesIO(citizen_api.get("/api/v1/me/star-code/image.png").content))
    gray = image.convert("L")
    border = 4 * 8  # four modules of eight pixels
    for x in range(gray.width):
        for y in list(range(border)) + list(range(gray.height - border, gray.height)):
            assert gray.getpixel((x, y)) == 255


def rasterize(svg: bytes, scale: int = 8) -> Image.Image:
    """Draw the SVG's module path with PIL (no SVG library needed)."""
    root = ET.fromstring(svg)
    ns = {"svg": "http://www.w3.org/2000/svg"}
    _, _, width, height = (float(v) for v in root.get("viewBox").split())
    image = Image.new("L", (int(width * scale), int(height * scale)), 255)
    draw = ImageDraw.Draw(image)
    path = root.find("svg:path", ns).get("d")
    for x, y in re.findall(r"M(\d+) (\d+)h1v1h-1z", path):
        x, y = int(x) * scale, int(y) * scale
        draw.rectangle([x, y, x + scale - 1, y + scale - 1], fill=0)
    return image


def test_the_svg_decodes_back_to_a_code_that_verifies(citizen, citizen_api, api):
    response = citizen_api.get("/api/v1/me/star-code/image.svg")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert "no-store" in response["Cache-Control"]
    texts = decode(rasterize(response.content))
    assert len(texts) == 1
    assert independently_verified(api, texts[0])["sub"] == citizen.subject


def test_images_ignore_an_accept_header_asking_for_images(citizen_api):
    response = citizen_api.get("/api/v1/me/star-code/image.png", HTTP_ACCEPT="image/*")
    assert response.status_code == 200


# --- Keys ----------------------------------------------------------------------------------


def test_a_fresh_installation_publishes_a_key_on_first_use(api):
    assert not SigningKey.objects.exists()
    keys = api.get("/api/v1/qr/keys/").json()["keys"]
    assert len(keys) == 1
    assert keys[0] | {"x": "-", "kid": "-"} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
        "x": "-",
        "kid": "-",
    }


def test_the_jwks_is_public_cacheable_and_conditional(api):
    response = api.get("/api/v1/qr/keys/")
    assert response["Content-Type"] == "application/jwk-set+json"
    assert response["Cache-Control"] == "public, max-age=300"
    again = api.get("/api/v1/qr/keys/", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304
    assert api.get("/api/v1/qr/keys/", HTTP_ACCEPT="application/jwk-set+json").status_code == 200


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", "W/{etag}", '"older", {etag}', '"older",W/{etag}', "*"],
    ids=["strong", "weak", "list", "list-weak", "any"],
)
def test_a_jwks_the_terminal_holds_is_not_sent_again(api, if_none_match):
    """If-None-Match as HTTP has it (RFC 9110 13.1.2): a list, weak
    comparison (a compressing proxy marks the ETag weak), or ``*``."""
    etag = api.get("/api/v1/qr/keys/")["ETag"]
    again = api.get("/api/v1/qr/keys/", HTTP_IF_NONE_MATCH=if_none_match.format(etag=etag))
    assert again.status_code == 304
    assert again["ETag"] == etag
    assert api.get("/api/v1/qr/keys/", HTTP_IF_NONE_MATCH='"older"').status_code == 200


def test_private_keys_are_stored_encrypted(citizen_api):
    issue(citizen_api)
    key = SigningKey.objects.get()
    from django.db import connection

    from qr.codes import b64url_decode

    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key FROM qr_signingkey")
        [(stored,)] = cursor.fetchall()
    assert stored.startswith("gAAAA")  # a Fernet token at rest
    assert key.private_key not in stored
    assert len(b64url_decode(key.private_key)) == 32


def test_issuing_a_code_takes_a_fixed_number_of_statements(
    citizen_api, django_assert_max_num_queries
) -> None:
    """One statement (the caller's account) for every citizen, once the
    signing key is loaded in the process."""
    from tests.accounts.factories import CitizenFactory
    from tests.conftest import client_for

    assert citizen_api.get("/api/v1/me/star-code/").status_code == 200  # the key, once
    for n in range(3):
        client = client_for(CitizenFactory(phone=f"1370013700{n}"))
        with django_assert_max_num_queries(1):
            assert client.get("/api/v1/me/star-code/").status_code == 200

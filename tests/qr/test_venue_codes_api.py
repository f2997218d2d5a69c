"""Departments print venue codes; the app resolves them; deactivated ones are revoked."""

from __future__ import annotations

import io
import json

import pytest
import zxingcpp
from PIL import Image

from qr.codes import b64url_decode
from tests.conftest import client_with_key
from tests.qr.conftest import create_venue, recorded_scans, verify
from tests.qr.test_star_code_api import independently_verified, rasterize

pytestmark = pytest.mark.django_db


def test_a_department_creates_a_venue_code_for_its_service(integrator_api, service, api):
    body = create_venue(integrator_api, service.code)
    assert body | {"id": "-", "code": "-", "created_at": "-"} == {
        "id": "-",
        "code": "-",
        "service": "sbk-apply",
        "label": "3号窗口",
        "location": "芙蓉中路二段",
        "is_active": True,
        "created_at": "-",
        "deactivated_at": None,
    }
    claims = independently_verified(api, body["code"])
    assert claims["knd"] == "venue"
    assert "exp" not in claims
    assert claims["jti"] == body["id"]
    assert claims["sub"] == "sbk-apply"
    assert claims["lvl"] == service.identity_level


def test_only_its_own_services(integrator_api, other_service):
    response = integrator_api.post(
        "/api/v1/dept/codes/", {"service": other_service.code, "label": "x"}, format="json"
    )
    assert response.status_code == 400
    assert "service" in response.json()["errors"]
    nowhere = integrator_api.post(
        "/api/v1/dept/codes/", {"service": "no-such", "label": "x"}, format="json"
    )
    assert nowhere.json()["errors"] == response.json()["errors"]


def test_another_departments_code_does_not_exist_for_you(
    integrator_api, other_integrator_key, other_service
):
    theirs = create_venue(client_with_key(other_integrator_key.raw), other_service.code)
    base = f"/api/v1/dept/codes/{theirs['id']}"
    for url in (f"{base}/", f"{base}/image.png", f"{base}/image.svg"):
        assert integrator_api.get(url).status_code == 404
    assert integrator_api.post(f"{base}/deactivate/").status_code == 404
    assert integrator_api.get("/api/v1/dept/codes/").json()["results"] == []


def test_a_scanner_key_cannot_manage_codes(scanner_api, service):
    response = scanner_api.post(
        "/api/v1/dept/codes/", {"service": service.code, "label": "x"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "api_key_scope"
    assert scanner_api.get("/api/v1/dept/codes/").status_code == 403


def test_listing_filters_by_service_and_state(integrator_api, service, department):
    from tests.services.factories import ServiceFactory

    second = ServiceFactory(department=department, code="hrss-2")
    a = create_venue(integrator_api, service.code, label="A")
    create_venue(integrator_api, second.code, label="B")
    integrator_api.post(f"/api/v1/dept/codes/{a['id']}/deactivate/")
    listed = integrator_api.get("/api/v1/dept/codes/").json()
    assert [c["label"] for c in listed["results"]] == ["B", "A"]
    assert set(listed) == {"results", "next", "previous"}
    only = integrator_api.get("/api/v1/dept/codes/?service=hrss-2").json()["results"]
    assert [c["label"] for c in only] == ["B"]
    active = integrator_api.get("/api/v1/dept/codes/?is_active=false").json()["results"]
    assert [c["label"] for c in active] == ["A"]


def test_images_decode_back_to_the_code(integrator_api, service):
    body = create_venue(integrator_api, service.code, label="<b>窗口</b> & 3")
    png = integrator_api.get(f"/api/v1/dept/codes/{body['id']}/image.png")
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    texts = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)))]
    assert texts == [body["code"]]

    svg = integrator_api.get(f"/api/v1/dept/codes/{body['id']}/image.svg")
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml"
    assert b'width="60mm"' in svg.content
    assert "社会保障卡申领".encode() in svg.content  # the caption, for the counter
    assert b"&lt;b&gt;" in svg.content and b"<b>" not in svg.content  # labels are escaped
    texts = [r.text for r in zxingcpp.read_barcodes(rasterize(svg.content))]
    assert texts == [body["code"]]


def test_a_label_with_control_characters_still_prints(integrator_api, service):
    """XML 1.0 holds no control characters but tab and newline: the print
    SVG leaves them out of its caption rather than be unreadable."""
    from xml.etree import ElementTree

    body = create_venue(
        integrator_api, service.code, label="3号\x0b窗口\x1b", location="\ufffe二段"
    )
    svg = integrator_api.get(f"/api/v1/dept/codes/{body['id']}/image.svg")
    assert svg.status_code == 200
    captions = [t.text for t in ElementTree.fromstring(svg.content).findall(".//{*}text")]
    assert captions == ["社会保障卡申领", "3号窗口", "二段"]
    texts = [r.text for r in zxingcpp.read_barcodes(rasterize(svg.content))]
    assert texts == [body["code"]]


def test_the_app_resolves_what_a_venue_code_opens(integrator_api, service, api):
    body = create_venue(integrator_api, service.code)
    response = api.post("/api/v1/qr/resolve/", {"code": body["code"]}, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "kind": "venue",
        "service": {"code": "sbk-apply", "name": "社会保障卡申领"},
        "label": "3号窗口",
        "location": "芙蓉中路二段",
    }


def test_a_deactivated_code_resolves_as_revoked(integrator_api, service, api, scanner_api):
    body = create_venue(integrator_api, service.code)
    response = integrator_api.post(f"/api/v1/dept/codes/{body['id']}/deactivate/")
    assert response.status_code == 200 and response.json()["is_active"] is False
    again = integrator_api.post(f"/api/v1/dept/codes/{body['id']}/deactivate/")
    assert again.json()["deactivated_at"] == response.json()["deactivated_at"]
    resolved = api.post("/api/v1/qr/resolve/", {"code": body["code"]}, format="json")
    assert resolved.status_code == 410
    assert resolved.json()["code"] == "code_revoked"
    assert verify(scanner_api, body["code"]) == {"valid": False, "reason": "revoked"}


def test_anything_else_is_code_invalid(api, citizen_api, integrator_api, service):
    from tests.qr.conftest import issue

    body = create_venue(integrator_api, service.code)
    header, payload, signature = body["code"][5:].split(".")
    claims = json.loads(b64url_decode(payload))
    claims["sub"] = "someone-else"
    from qr.codes import b64url

    tampered = f"MCS1:{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    for text in ("hello", issue(citizen_api)["code"], tampered):
        response = api.post("/api/v1/qr/resolve/", {"code": text}, format="json")
        assert response.status_code == 400, text
        assert response.json()["code"] == "code_invalid"


def test_a_scanner_may_verify_a_venue_code(integrator_api, service, scanner_api):
    body = create_venue(integrator_api, service.code)
    answer = verify(scanner_api, body["code"])
    assert answer == {
        "valid": True,
        "kind": "venue",
        "subject": {"id": "sbk-apply", "identity_level": service.identity_level},
        "expires_at": None,
    }
    # Printed codes are scanned again and again: no replay for venue codes.
    assert verify(scanner_api, body["code"])["valid"] is True


def test_resolutions_count_as_scans_of_the_code(integrator_api, service, api):
    body = create_venue(integrator_api, service.code)
    for _ in range(3):
        api.post("/api/v1/qr/resolve/", {"code": body["code"]}, format="json")
    events = recorded_scans()
    assert len(events) == 3
    assert {(e.source, e.kind, e.jti, e.subject) for e in events} == {
        ("app", "venue", body["id"], "")
    }


def test_resolve_is_throttled_per_client(integrator_api, service, api, settings):
    settings.QR_RESOLVE_RATE = "2/day"  # fixed windows: no minute's end between the calls
    body = create_venue(integrator_api, service.code)
    statuses = [
        api.post("/api/v1/qr/resolve/", {"code": body["code"]}, format="json").status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_resolutions_sent_side_by_side_cannot_outrun_the_rate(settings, monkeypatch):
    """Requests arriving together are counted one by one: a rate that read
    the caller's history and wrote it back let every request of a burst
    read the same history, and pass."""
    from rest_framework.test import APIClient

    from tests.concurrency import sent_side_by_side

    settings.QR_RESOLVE_RATE = "2/day"

    def resolve() -> int:
        # Not a code: answered 400 once admitted, without the database.
        return APIClient().post("/api/v1/qr/resolve/", {"code": "x"}, format="json").status_code

    statuses = sent_side_by_side(
        6,
        resolve,
        reading=("throttle_qr_resolve", "throttle-fw:qr_resolve:"),
        monkeypatch=monkeypatch,
    )
    assert statuses == [400, 400, 429, 429, 429, 429]


def test_creating_and_deactivating_are_audited(integrator_api, integrator_key, service):
    from accounts.models import AuditEntry

    body = create_venue(integrator_api, service.code)
    integrator_api.post(f"/api/v1/dept/codes/{body['id']}/deactivate/")
    entries = AuditEntry.objects.filter(target_id=body["id"]).order_by("at")
    assert [e.action for e in entries] == ["qr.venue_code.created", "qr.venue_code.deactivated"]
    assert {e.actor_id for e in entries} == {str(integrator_key.pk)}


def test_creating_and_deactivating_are_audited_with_the_callers_address(integrator_api, service):
    """Every department state change is on the audit trail with its client
    address (DESIGN §9); the creation of a venue code, a credential printed
    and posted in a hall, named none."""
    from accounts.models import AuditEntry

    response = integrator_api.post(
        "/api/v1/dept/codes/",
        {"service": service.code, "label": "一楼大厅", "location": "芙蓉区"},
        format="json",
        REMOTE_ADDR="203.0.113.9",
    )
    assert response.status_code == 201, response.content
    code_id = response.json()["id"]
    integrator_api.post(f"/api/v1/dept/codes/{code_id}/deactivate/", REMOTE_ADDR="203.0.113.10")
    entries = AuditEntry.objects.filter(target_id=code_id).order_by("at")
    assert [(e.action, e.ip) for e in entries] == [
        ("qr.venue_code.created", "203.0.113.9"),
        ("qr.venue_code.deactivated", "203.0.113.10"),
    ]


def test_a_venue_code_is_not_kept_without_its_audit_entry(integrator_api, service, monkeypatch):
    """The code and its audit entry are written in one transaction: a code
    whose entry could not be written is not stored (nor printable)."""
    from qr import venue_codes
    from qr.models import VenueCode

    def failing(**kwargs):
        raise RuntimeError("the audit trail is unavailable")

    monkeypatch.setattr(venue_codes, "audit_record", failing)
    integrator_api.raise_request_exception = False
    response = integrator_api.post(
        "/api/v1/dept/codes/", {"service": service.code, "label": "x"}, format="json"
    )
    assert response.status_code == 500
    assert not VenueCode.objects.exists()


@pytest.mark.parametrize("jti", ["a\x00b", "\ud800"])
def test_a_stranger_code_naming_an_odd_jti_is_code_invalid(api, scanner_api, jti):
    """A code under a key we never published is read unverified for a revoked
    venue code's jti; a jti no code of ours has (a NUL, a lone surrogate) is
    simply no code of ours, not a server error."""
    from tests.qr.test_keys import a_stranger_code

    code = a_stranger_code(jti=jti, knd="venue")
    response = api.post("/api/v1/qr/resolve/", {"code": code}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "code_invalid"
    assert verify(scanner_api, code) == {"valid": False, "reason": "unknown_key"}


@pytest.mark.parametrize("text", ["", "   ", "A" * 4200], ids=["empty", "blank", "over-long"])
def test_scanned_text_that_is_no_code_at_all_is_code_invalid(api, text):
    """DESIGN §5: a deactivated code is 410, anything else 400 `code_invalid`:
    text the app's scanner read but that is empty, blank or too long too."""
    response = api.post("/api/v1/qr/resolve/", {"code": text}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "code_invalid"
    assert set(body["errors"]) == {"code"}  # what was wrong, as for any invalid input


@pytest.mark.parametrize(
    "payload",
    [{}, {"code": 42}, {"code": None}, {"code": ["MCS1:a.b.c"]}, ["MCS1:a.b.c"], "MCS1:a.b.c"],
    ids=["no-code", "number", "null", "list", "array-body", "string-body"],
)
def test_a_body_without_a_code_string_is_code_invalid(api, payload):
    response = api.post("/api/v1/qr/resolve/", payload, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "code_invalid"


def test_a_body_that_is_not_json_stays_malformed_request(api):
    response = api.post("/api/v1/qr/resolve/", b"{", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_request"

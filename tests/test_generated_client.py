"""A client nobody here wrote: openapi-python-client generates a typed
Python client from ``/api/schema/``, as a mobile or a department team would,
and the citizen's and the department's stories run through it against a
live server.

The schema is what those teams generate from, so it must be complete and
exact: the generator must take every operation without a warning, every
call must be one the client can express, every answer must parse into the
documented model (an undocumented status raises, a missing or mistyped
field fails to parse), and no answer may carry a field the schema does not
name. When this fails, fix the schema at its source, not this test.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
from django.test import Client as DjangoClient
from django.utils import timezone

from accounts import sms
from accounts.tokens import tokens_issue
from qr.scans import scan_events_flush as scans_flush
from tests.accounts.factories import make_id_number
from tests.services.department import DepartmentServer
from tests.services.factories import ServiceFactory

pytestmark = pytest.mark.django_db(transaction=True)

PACKAGE = "changsha_client"

# The generator's own configuration, as a team using it would write it: its
# default post-hooks run ruff over the output (slow, and nothing to check
# here); it reads bodies by content type and knows only JSON, text and
# octet-stream, so the images' types are told how to be read.
GENERATOR_CONFIG = f"""\
project_name_override: changsha-client
package_name_override: {PACKAGE}
post_hooks: []
content_type_overrides:
  image/png: application/octet-stream
  image/svg+xml: text/plain
"""


@pytest.fixture(scope="module")
def api_client_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated package, imported from a temporary directory."""
    root = tmp_path_factory.mktemp("generated-client")
    response = DjangoClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    (root / "schema.json").write_bytes(response.content)
    (root / "config.yml").write_text(GENERATOR_CONFIG)
    generator = Path(sys.executable).with_name("openapi-python-client")
    run = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(root / "schema.json"),
            "--config",
            str(root / "config.yml"),
            "--output-path",
            str(root / PACKAGE),
            "--meta",
            "none",
            # An operation or an answer the generator cannot express is left
            # out of the client with a warning: that is a schema bug.
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(root))
    try:
        package = importlib.import_module(PACKAGE)
        yield package
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


class Generated:
    """What a story reaches for: a client as each actor holds one (``public``,
    ``citizen``, ``department``), ``call("auth.auth_otp_create", ...)`` and
    ``models``."""

    def __init__(self, package: ModuleType, base_url: str) -> None:
        self.package = package
        self.base_url = base_url
        self.models = importlib.import_module(f"{PACKAGE}.models")
        self.clients: list[Any] = []

    def _opened(self, client: Any) -> Any:
        self.clients.append(client)
        return client

    def public(self) -> Any:
        return self._opened(
            self.package.Client(base_url=self.base_url, raise_on_unexpected_status=True)
        )

    def citizen(self, access: str) -> Any:
        return self._opened(
            self.package.AuthenticatedClient(
                base_url=self.base_url, token=access, raise_on_unexpected_status=True
            )
        )

    def department(self, raw_key: str) -> Any:
        return self._opened(
            self.package.AuthenticatedClient(
                base_url=self.base_url,
                token=raw_key,
                prefix="Api-Key",
                raise_on_unexpected_status=True,
            )
        )

    def close(self) -> None:
        """Closes the clients' kept-alive connections: the live server holds a
        thread, and its database session, for each."""
        for client in self.clients:
            client.get_httpx_client().close()

    def call(
        self,
        operation: str,
        *args: Any,
        expect: int,
        free_form: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """``operation`` ("tag_module.function") through ``sync_detailed``: the
        answer's status must be ``expect`` and its body parse without a field
        the schema does not name (below the ``free_form`` paths, which the
        schema declares as free-form objects); returns the parsed body."""
        module = importlib.import_module(f"{PACKAGE}.api.{operation}")
        response = module.sync_detailed(*args, **kwargs)
        assert response.status_code == expect, (operation, response.status_code, response.content)
        parsed = response.parsed
        assert undocumented_fields(parsed, free_form=free_form) == [], (operation, response.content)
        return parsed


def undocumented_fields(value: Any, path: str = "", free_form: tuple[str, ...] = ()) -> list[str]:
    """Fields of an answer that its schema does not name. Generated models keep
    them in ``additional_properties``; a model whose schema declares a map
    (``additionalProperties`` with a type) keeps its entries there by design."""
    found: list[str] = []
    if path in free_form:
        return found
    if attrs.has(type(value)):
        fields = attrs.fields_dict(type(value))
        extra = getattr(value, "additional_properties", None) or {}
        declared_map = "Any" not in str(getattr(fields.get("additional_properties"), "type", Any))
        if extra and not declared_map:
            found += [f"{path}.{name}" for name in extra]
        for name in fields:
            if name != "additional_properties":
                found += undocumented_fields(getattr(value, name), f"{path}.{name}", free_form)
    elif isinstance(value, list):
        for item in value:
            found += undocumented_fields(item, f"{path}[]", free_form)
    return found


@pytest.fixture
def generated(api_client_package, live_server):
    generated = Generated(api_client_package, live_server.url)
    yield generated
    generated.close()


@pytest.fixture
def department_system():
    with DepartmentServer() as server:
        yield server


def sms_code(phone: str) -> str:
    """The code of the last text sent to ``phone`` (tests keep texts in memory)."""
    text = [m for m in sms.outbox if m.to == phone][-1].text
    return re.search(r"\d{6}", text)[0]  # type: ignore[index]


def test_the_citizens_and_the_departments_story(
    generated, department, integrator_key, scanner_key, category, department_system
) -> None:
    g, m = generated, generated.models
    ServiceFactory(
        code="sbk-apply",
        name="社会保障卡申领",
        department=department,
        category=category,
        keywords=["社保卡"],
    )
    dept = g.department(integrator_key.raw)

    # The department's system registers where its events go.
    endpoint = g.call(
        "dept_endpoints.dept_endpoints_create",
        client=dept,
        body=m.EndpointWriteRequest(
            url=department_system.url(),
            events=[m.EventsEnum("application.submitted"), m.EventsEnum("application.cancelled")],
            description="受理系统",
        ),
        expect=201,
    )
    assert endpoint.secret.startswith("whsec_")
    listed = g.call("dept_endpoints.dept_endpoints_list", client=dept, expect=200)
    assert [e.id for e in listed.results] == [endpoint.id]

    # A citizen logs in with the code the SMS brought.
    phone = "13600136000"
    public = g.public()
    g.call("auth.auth_otp_create", client=public, body=m.OtpRequest(phone=phone), expect=202)
    login = g.call(
        "auth.auth_token_create",
        client=public,
        body=m.LoginRequest(phone=phone, code=sms_code(phone)),
        expect=200,
    )
    assert login.user.identity_level == m.IdentityLevelEnum(1)
    me = g.citizen(login.access)

    # Real name, then the catalog: search, the guide.
    profile = g.call(
        "me.me_real_name_create",
        client=me,
        body=m.RealNameRequest(name="王小明", id_number=make_id_number(4242)),
        expect=200,
    )
    assert profile.identity_level == m.IdentityLevelEnum(2)
    found = g.call("catalog.services_list", client=public, q="社保卡", expect=200)
    assert [s.code for s in found.results] == ["sbk-apply"]
    guide = g.call("catalog.services_retrieve", "sbk-apply", client=public, expect=200)
    assert guide.fee_fen == 0
    assert set(guide.form_schema["required"]) == {"reason", "phone"}

    # Apply; the department's system receives the signed event.
    form = {"reason": "首次申领", "phone": phone}
    applied = g.call(
        "applications.applications_create",
        client=me,
        body=m.ApplicationCreateRequest(service="sbk-apply", form=form),
        idempotency_key="story-1",
        expect=201,
    )
    again = g.call(
        "applications.applications_create",
        client=me,
        body=m.ApplicationCreateRequest(service="sbk-apply", form=form),
        idempotency_key="story-1",
        expect=201,
    )
    assert again.id == applied.id
    [event] = department_system.of_type("application.submitted")
    assert event.verified(endpoint.secret)["data"]["application"]["number"] == applied.number

    # The department finds it, accepts it, completes it.
    inbox = g.call(
        "dept_applications.dept_applications_list",
        client=dept,
        status=m.DeptApplicationsListStatus("routed"),
        expect=200,
    )
    assert [a.number for a in inbox.results] == [applied.number]
    seen = g.call(
        "dept_applications.dept_applications_retrieve", applied.number, client=dept, expect=200
    )
    assert seen.applicant.phone == phone

    def department_moves(status: str) -> None:
        moved = g.call(
            "dept_applications.dept_applications_status_create",
            applied.number,
            client=dept,
            body=m.DepartmentStatusRequest(
                status=m.ApplicationStatusEnum(status), note="办理中", reference="HRSS-1"
            ),
            expect=200,
        )
        assert moved.status == m.ApplicationStatusEnum(status)

    department_moves("accepted")
    department_moves("needs_info")
    supplemented = g.call(
        "applications.applications_supplement_create",
        applied.id,
        client=me,
        body=m.SupplementRequest(form={"reason": "首次申领（补充：原卡未曾办理）"}),
        expect=200,
    )
    assert supplemented.status == m.ApplicationStatusEnum("accepted")
    department_moves("completed")
    refused = g.call(
        "dept_applications.dept_applications_status_create",
        applied.number,
        client=dept,
        body=m.DepartmentStatusRequest(status=m.ApplicationStatusEnum("accepted")),
        expect=409,
    )
    assert refused.code == "invalid_transition"

    # What was sent, as the department's system reads it back.
    sent = g.call(
        "dept_deliveries.dept_deliveries_list", client=dept, endpoint=endpoint.id, expect=200
    )
    [delivery] = sent.results
    assert delivery.status == m.DeliveryStatusEnum("succeeded")
    detail = g.call(
        "dept_deliveries.dept_deliveries_retrieve", delivery.id, client=dept, expect=200
    )
    assert [a.status_code for a in detail.attempts] == [200]

    # The citizen follows it: lists, reads, messages, star-code.
    mine = g.call("applications.applications_list", client=me, expect=200)
    assert [a.number for a in mine.results] == [applied.number]
    read = g.call("applications.applications_retrieve", applied.id, client=me, expect=200)
    assert [t.status for t in read.timeline] == [
        m.ApplicationStatusEnum(s)
        for s in ("submitted", "routed", "accepted", "needs_info", "accepted", "completed")
    ]
    rated = g.call(
        "applications.applications_rating_create",
        applied.id,
        client=me,
        body=m.RatingRequest(score=5, comment="很快"),
        expect=200,
    )
    assert rated.rating.score == 5
    twice = g.call(
        "applications.applications_rating_create",
        applied.id,
        client=me,
        body=m.RatingRequest(score=1),
        expect=409,
    )
    assert twice.code == "rating_not_allowed"
    second = g.call(
        "applications.applications_create",
        client=me,
        body=m.ApplicationCreateRequest(service="sbk-apply", form=form),
        expect=201,
    )
    cancelled = g.call(
        "applications.applications_cancel_create",
        second.id,
        client=me,
        body=m.CancelRequest(reason="不需要了"),
        expect=200,
    )
    assert cancelled.status == m.ApplicationStatusEnum("cancelled")
    messages = g.call("me.me_messages_list", client=me, expect=200)
    assert messages.results
    opened = g.call("me.me_messages_read_create", messages.results[0].id, client=me, expect=200)
    assert opened.read_at is not None
    star = g.call("star_code.me_star_code_retrieve", client=me, expect=200)
    assert star.refresh_after < star.expires_at
    verdict = g.call(
        "scanner.qr_verify_create",
        client=g.department(scanner_key.raw),
        body=m.CodeInRequest(code=star.code),
        expect=200,
    )
    assert verdict.valid is True


def test_errors_parse_as_problems(generated, integrator_key) -> None:
    g, m = generated, generated.models
    public = g.public()
    wrong = g.call(
        "auth.auth_token_create",
        client=public,
        body=m.LoginRequest(phone="13600136000", code="000000"),
        expect=400,
    )
    assert isinstance(wrong, m.Problem) and wrong.status == 400
    missing = g.call("catalog.services_retrieve", "no-such-service", client=public, expect=404)
    assert missing.code == "not_found"
    dept = g.department(integrator_key.raw)
    invalid = g.call(
        "dept_endpoints.dept_endpoints_create",
        client=dept,
        body=m.EndpointWriteRequest(url="ftp://example.invalid/", events=[]),
        expect=400,
    )
    assert invalid.errors.additional_properties


def test_a_department_manages_its_endpoints_services_and_venue_codes(
    generated, department, integrator_key, category, department_system
) -> None:
    g, m = generated, generated.models
    dept = g.department(integrator_key.raw)

    # Endpoints: register, change one field (the others stay as they were),
    # pause, rotate the secret, ping, send again, remove.
    endpoint = g.call(
        "dept_endpoints.dept_endpoints_create",
        client=dept,
        body=m.EndpointWriteRequest(
            url=department_system.url(),
            events=[m.EventsEnum("application.submitted")],
            description="受理系统",
        ),
        expect=201,
    )
    changed = g.call(
        "dept_endpoints.dept_endpoints_partial_update",
        endpoint.id,
        client=dept,
        body=m.PatchedEndpointWriteRequest(
            events=[m.EventsEnum("application.submitted"), m.EventsEnum("payment.succeeded")]
        ),
        expect=200,
    )
    assert changed.description == "受理系统"
    paused = g.call(
        "dept_endpoints.dept_endpoints_partial_update",
        endpoint.id,
        client=dept,
        body=m.PatchedEndpointWriteRequest(is_active=False),
        expect=200,
    )
    assert paused.is_active is False
    assert len(paused.events) == 2
    g.call(
        "dept_endpoints.dept_endpoints_partial_update",
        endpoint.id,
        client=dept,
        body=m.PatchedEndpointWriteRequest(is_active=True),
        expect=200,
    )
    rotated = g.call(
        "dept_endpoints.dept_endpoints_rotate_secret_create", endpoint.id, client=dept, expect=200
    )
    assert rotated.secret.startswith("whsec_") and rotated.secret != endpoint.secret
    ping = g.call("dept_endpoints.dept_endpoints_test_create", endpoint.id, client=dept, expect=202)
    [received] = department_system.of_type("ping")
    assert received.verified(rotated.secret)["type"] == "ping"
    again = g.call("dept_deliveries.dept_deliveries_retry_create", ping.id, client=dept, expect=202)
    assert again.id == ping.id
    got = g.call("dept_endpoints.dept_endpoints_retrieve", endpoint.id, client=dept, expect=200)
    assert got.url == department_system.url()
    g.call("dept_endpoints.dept_endpoints_destroy", endpoint.id, client=dept, expect=204)
    g.call("dept_endpoints.dept_endpoints_retrieve", endpoint.id, client=dept, expect=404)

    # A service guide: publish, amend, read.
    published = g.call(
        "dept_services.dept_services_create",
        client=dept,
        body=m.ServiceCreateRequest(
            code="sbk-lost",
            name="社会保障卡挂失",
            category=category.code,
            channels=[m.ServiceChannelEnum("online")],
            form_schema={
                "type": "object",
                "required": ["reason"],
                "properties": {"reason": {"type": "string", "title": "挂失原因"}},
            },
            materials=[m.MaterialRequest(name="居民身份证")],
            keywords=["挂失"],
            time_limit_days=1,
        ),
        expect=201,
    )
    assert published.department == department.code
    amended = g.call(
        "dept_services.dept_services_partial_update",
        "sbk-lost",
        client=dept,
        body=m.PatchedGuideRequest(summary="社保卡丢失后立即挂失"),
        expect=200,
    )
    assert amended.summary == "社保卡丢失后立即挂失"
    assert amended.keywords == ["挂失"] and amended.is_active is True
    mine = g.call("dept_services.dept_services_list", client=dept, expect=200)
    assert [s.code for s in mine.results] == ["sbk-lost"]

    # A venue code: create, render, resolve as anyone, deactivate.
    venue = g.call(
        "dept_codes.dept_codes_create",
        client=dept,
        body=m.VenueCodeCreateRequest(service="sbk-lost", label="1 号窗口", location="市民之家"),
        expect=201,
    )
    png = g.call("dept_codes.dept_codes_image_png_retrieve", venue.id, client=dept, expect=200)
    assert png.payload.read().startswith(b"\x89PNG")
    svg = g.call("dept_codes.dept_codes_image_svg_retrieve", venue.id, client=dept, expect=200)
    assert svg.lstrip().startswith("<")
    resolved = g.call(
        "star_code.qr_resolve_create",
        client=g.public(),
        body=m.CodeInRequest(code=venue.code),
        expect=200,
    )
    assert resolved.service.code == "sbk-lost" and resolved.label == "1 号窗口"
    g.call("dept_codes.dept_codes_deactivate_create", venue.id, client=dept, expect=200)
    revoked = g.call(
        "star_code.qr_resolve_create",
        client=g.public(),
        body=m.CodeInRequest(code=venue.code),
        expect=410,
    )
    assert revoked.code == "code_revoked"


def test_a_citizen_pays_and_the_department_refunds(
    generated, citizen, department, integrator_key, category
) -> None:
    g, m = generated, generated.models
    ServiceFactory(code="id-card-renew", department=department, category=category, fee_fen=2000)
    me = g.citizen(tokens_issue(user=citizen)["access"])
    applied = g.call(
        "applications.applications_create",
        client=me,
        body=m.ApplicationCreateRequest(
            service="id-card-renew", form={"reason": "到期换领", "phone": "13800138000"}
        ),
        expect=201,
    )
    assert applied.status == m.ApplicationStatusEnum("awaiting_payment")
    order = g.call(
        "payments.payments_create",
        client=me,
        body=m.OrderCreateRequest(application=applied.id, channel=m.PaymentChannelEnum("wechat")),
        idempotency_key="pay-1",
        expect=201,
    )
    assert order.amount_fen == 2000 and order.status == m.OrderStatusEnum("pending")
    g.call(
        "payments.sandbox_payments_pay_create",
        order.order_no,
        client=me,
        body=m.SandboxPayRequest(result=m.ResultEnum("success")),
        expect=202,
    )
    paid = g.call("payments.payments_retrieve", order.id, client=me, expect=200)
    assert paid.status == m.OrderStatusEnum("paid")
    receipt = g.call("payments.payments_receipt_retrieve", order.id, client=me, expect=200)
    assert receipt.order_no == order.order_no
    printable = g.call("payments.payments_receipt_svg_retrieve", order.id, client=me, expect=200)
    assert "<svg" in printable
    listed = g.call("payments.payments_list", client=me, expect=200)
    assert [o.order_no for o in listed.results] == [order.order_no]

    dept = g.department(integrator_key.raw)
    theirs = g.call(
        "dept_payments.dept_payments_list", client=dept, date=timezone.localdate(), expect=200
    )
    assert [o.order_no for o in theirs.results] == [order.order_no]
    refund = g.call(
        "dept_payments.dept_payments_refunds_create",
        order.order_no,
        client=dept,
        body=m.RefundCreateRequest(amount_fen=500, reason="部分退费"),
        idempotency_key="refund-1",
        expect=201,
    )
    assert refund.amount_fen == 500
    too_much = g.call(
        "dept_payments.dept_payments_refunds_create",
        order.order_no,
        client=dept,
        body=m.RefundCreateRequest(amount_fen=5000),
        expect=422,
    )
    assert too_much.code == "refund_exceeds_paid" and too_much.refundable_fen is not None
    refunds = g.call("dept_payments.dept_refunds_list", order.order_no, client=dept, expect=200)
    assert [r.id for r in refunds.results] == [refund.id]
    detail = g.call("dept_payments.dept_payments_retrieve", order.order_no, client=dept, expect=200)
    assert [r.id for r in detail.refunds] == [refund.id]


def test_a_citizens_account_from_login_to_closing(generated, scanner_key) -> None:
    g, m = generated, generated.models
    phone = "13500135000"
    public = g.public()
    g.call("auth.auth_otp_create", client=public, body=m.OtpRequest(phone=phone), expect=202)
    login = g.call(
        "auth.auth_token_create",
        client=public,
        body=m.LoginRequest(phone=phone, code=sms_code(phone)),
        expect=200,
    )
    pair = g.call(
        "auth.auth_token_refresh_create",
        client=public,
        body=m.RefreshRequest(refresh=login.refresh),
        expect=200,
    )
    me = g.citizen(pair.access)
    profile = g.call("me.me_retrieve", client=me, expect=200)
    assert profile.phone == "135****5000"
    renamed = g.call(
        "me.me_partial_update",
        client=me,
        body=m.PatchedProfileUpdateRequest(nickname="小王"),
        expect=200,
    )
    assert renamed.nickname == "小王"

    # The star-code as the app shows it, scanned at a gate, then in the citizen's scans.
    png = g.call("star_code.me_star_code_image_png_retrieve", client=me, expect=200)
    assert png.payload.read().startswith(b"\x89PNG")
    svg = g.call("star_code.me_star_code_image_svg_retrieve", client=me, expect=200)
    assert "<svg" in svg
    star = g.call("star_code.me_star_code_retrieve", client=me, expect=200)
    g.call(
        "scanner.qr_verify_create",
        client=g.department(scanner_key.raw),
        body=m.CodeInRequest(code=star.code),
        expect=200,
    )
    scans_flush()  # as beat does every few seconds, where scans are buffered (Redis)
    scans = g.call("star_code.me_scans_list", client=me, expect=200)
    assert [s.valid for s in scans.results] == [True]
    keys = g.call("star_code.qr_keys_retrieve", client=public, expect=200)
    assert keys.keys
    revocations = g.call(
        "scanner.qr_revocations_retrieve", client=g.department(scanner_key.raw), expect=200
    )
    assert revocations.until is not None

    # The export's sections are named in the schema; each is the app's own
    # record, declared free-form.
    exported = g.call(
        "me.me_export_retrieve",
        client=me,
        expect=200,
        free_form=(
            ".profile",
            ".login_codes[]",
            ".messages[]",
            ".applications[]",
            ".payments",
            ".star_code_scans[]",
        ),
    )
    assert exported.profile["phone"] == phone
    assert [scan["valid"] for scan in exported.star_code_scans] == [True]
    g.call("me.me_messages_read_all_create", client=me, expect=200)
    g.call(
        "auth.auth_logout_create",
        client=public,
        body=m.RefreshRequest(refresh=pair.refresh),
        expect=204,
    )
    g.call(
        "auth.auth_token_refresh_create",
        client=public,
        body=m.RefreshRequest(refresh=pair.refresh),
        expect=401,
    )
    g.call("me.me_destroy", client=me, expect=204)
    closed = g.call("me.me_retrieve", client=me, expect=401)
    assert closed.status == 401

"""Every status ``/api/schema/`` documents is one the API really gives.

The story of tests/test_api_examples.py reaches every operation's success;
its problems chapter, told here, reaches every other documented status
through the API, and each of its calls says which problem ``code`` it
expects. Then:

- the (operation, status) pairs answered are exactly the documented ones:
  a documented status nothing produces any more, or an answer the schema
  does not list, fails the test by name (the schema is what the mobile and
  department teams generate their clients from);
- every 4xx and 5xx answer is a problem document (``application/problem+json``
  with ``type``, ``title``, ``status`` and ``code``) that validates against
  the schema's answer for that status, and whose ``code`` is one the
  schema names for it. The channels' payment callbacks are the one
  exception: they are refused in the channel's own format, which the
  schema gives too.

The triggers are generic where the status means the same everywhere (no
credentials, another kind of credentials, a body over the limit, not JSON,
broken JSON, a page that does not exist, someone else's object) and
particular where it is a business rule, a throttle with its rate lowered,
or an edge (SMS gateway, identity bureau, payment channel, scan state)
that is down.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import httpx
import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import sms
from accounts.api_keys import api_key_create
from accounts.apis import RealNameThrottle
from accounts.identity import BaseIdentityProvider, IdentityCheck, IdentityProviderUnavailable
from accounts.models import ApiKey, ApiKeyScope, Department
from config.api import ClientScopedRateThrottle
from config.errors import PROBLEM_CONTENT_TYPE
from payments.models import SandboxTrade
from payments.providers import provider_for
from payments.sandbox import books
from payments.sandbox.channels import sandbox_for
from services import catalog
from services.models import Category, Endpoint, Service
from services.routing import endpoints, transport
from tests import test_api_examples as examples
from tests.accounts.factories import CitizenFactory, StaffFactory, make_id_number
from tests.conftest import client_with_key
from tests.services.department import DepartmentServer
from tests.services.factories import ServiceFactory
from tests.test_api_examples import Call, Story, operations, problems_of, sms_code, story

BODY_METHODS = ("post", "put", "patch")
# The channels' callbacks: refused in the channel's own format, not as problems.
CALLBACKS = "payments_notify_create"

# A credential of another kind than the operation's scheme, and the problem it gets.
WRONG_KIND = {
    "CitizenJWT": ("integrator", "citizen_required"),
    "ApiKey": ("scanner", "api_key_scope"),
    "ScannerApiKey": ("integrator", "api_key_scope"),
}
# Credentials that are none at all, and the problem each gets where it is a
# kind the operation knows (a citizen's route knows department keys too:
# they are refused there with 403).
FORGED_KEY = ("Api-Key mcs_forged_0000000000000000", "api_key_invalid")
FORGED = {
    "CitizenJWT": [
        ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.forged", "token_invalid"),
        ("Bearer", "authentication_failed"),
        FORGED_KEY,
    ],
    "ApiKey": [FORGED_KEY],
    "ScannerApiKey": [FORGED_KEY],
}


# The story's fixtures.
schema = examples.schema
department_system = examples.department_system


class GatewayDown(sms.BaseSmsBackend):
    """The SMS gateway, unreachable."""

    def send(self, message: sms.SmsMessage) -> None:
        raise sms.SmsDeliveryError("gateway timeout")


class BureauDown(BaseIdentityProvider):
    """The identity bureau, unreachable."""

    def verify(self, *, name: str, id_number: str) -> IdentityCheck:
        raise IdentityProviderUnavailable("timeout")


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def with_authorization(header: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def scheme_of(operation: dict[str, Any]) -> str | None:
    for requirement in operation.get("security") or []:
        for name in requirement:
            return name
    return None


class Problems:
    """The story's client, asked for problems: each call says the status
    and the ``code`` it expects."""

    def __init__(self, told: Story) -> None:
        self.story = told

    def refused(
        self,
        client: APIClient,
        method: str,
        path: str,
        body: Any = None,
        *,
        status: int,
        code: str,
        query: dict[str, Any] | None = None,
        raw: tuple[str, bytes] | None = None,
        **headers: str,
    ) -> dict[str, Any]:
        value = self.story.call(
            client,
            method,
            path,
            body,
            expect=status,
            summary=code,
            query=query,
            raw=raw,
            **headers,
        )
        answer = self.story.answers[-1]
        assert answer.content_type == PROBLEM_CONTENT_TYPE, (method, path, answer)
        assert value["code"] == code, (method, path, value)
        return value

    def again(
        self,
        call: Call,
        *,
        status: int,
        code: str,
        client: APIClient | None = None,
        body: Any = None,
        query: dict[str, Any] | None = None,
        raw: tuple[str, bytes] | None = None,
    ) -> dict[str, Any]:
        """``call`` made again, with what is given in place of its own."""
        if body is None and raw is None:
            body, raw = call.body, call.raw
        return self.refused(
            client or call.client,
            call.method,
            call.path,
            body,
            status=status,
            code=code,
            query=query if query is not None else call.query,
            raw=raw,
        )

    def answered(
        self, client: APIClient, method: str, path: str, body: Any = None, **kw: Any
    ) -> Any:
        """A call that succeeds (``expect`` given), on the way to a problem."""
        return self.story.call(client, method, path, body, summary="on the way", **kw)


@contextmanager
def rates(throttle: type, **scopes: str) -> Iterator[None]:
    """DRF's throttles read their rates once, into a class attribute."""
    kept = throttle.THROTTLE_RATES
    throttle.THROTTLE_RATES = {**kept, **scopes}
    try:
        yield
    finally:
        throttle.THROTTLE_RATES = kept


def log_in(p: Problems, phone: str) -> APIClient:
    public = APIClient()
    p.answered(public, "post", "/api/v1/auth/otp/", {"phone": phone}, expect=202)
    pair = p.answered(
        public,
        "post",
        "/api/v1/auth/token/",
        {"phone": phone, "code": sms_code(phone)},
        expect=200,
    )
    return with_authorization(f"Bearer {pair['access']}")


# --- The cast, and a second act so that every operation has a call that can be made again ----


class Cast:
    def __init__(
        self,
        p: Problems,
        department: Department,
        category: Category,
        integrator_key: ApiKey,
        scanner_key: ApiKey,
        other_integrator_key: ApiKey,
        server: DepartmentServer,
    ) -> None:
        self.department = department
        self.category = category
        self.server = server
        self.public = APIClient()
        self.integrator = client_with_key(integrator_key.raw)  # type: ignore[attr-defined]  # the raw key rides on the row (tests.conftest)
        self.scanner = client_with_key(scanner_key.raw)  # type: ignore[attr-defined]  # as above
        self.other_department = client_with_key(other_integrator_key.raw)  # type: ignore[attr-defined]  # as above
        # Li: logged in and verified in this chapter; Zhao: logged in by phone only.
        self.li_phone = "13700137001"
        self.li = log_in(p, self.li_phone)
        self.zhao = log_in(p, "13700137002")


def second_act(p: Problems, cast: Cast) -> dict[str, Any]:
    """The story ended with its citizen's account closed and its endpoint
    removed: Li and the department do again what carries a body, so that
    each such call can be made again with something wrong in it."""
    li, dept = cast.li, cast.integrator
    p.answered(li, "patch", "/api/v1/me/", {"nickname": "小李"}, expect=200)
    p.answered(
        li,
        "post",
        "/api/v1/me/real-name/",
        {"name": "李四", "id_number": make_id_number(343)},
        expect=200,
    )
    form = {"reason": "首次申领", "phone": cast.li_phone}
    done = p.answered(
        li, "post", "/api/v1/applications/", {"service": "sbk-apply", "form": form}, expect=201
    )
    status_at = f"/api/v1/dept/applications/{done['number']}/status/"
    p.answered(
        dept, "post", status_at, {"status": "accepted"}, expect=200, HTTP_IDEMPOTENCY_KEY="accept-1"
    )
    p.answered(dept, "post", status_at, {"status": "needs_info", "note": "请补充"}, expect=200)
    p.answered(
        li,
        "post",
        f"/api/v1/applications/{done['id']}/supplement/",
        {"form": {"reason": "首次申领（补充）"}},
        expect=200,
    )
    p.answered(dept, "post", status_at, {"status": "completed"}, expect=200)
    p.answered(li, "post", f"/api/v1/applications/{done['id']}/rating/", {"score": 4}, expect=200)
    withdrawn = p.answered(
        li, "post", "/api/v1/applications/", {"service": "sbk-apply", "form": form}, expect=201
    )
    p.answered(
        li,
        "post",
        f"/api/v1/applications/{withdrawn['id']}/cancel/",
        {"reason": "重复"},
        expect=200,
    )
    fee_form = {"reason": "到期换领", "phone": cast.li_phone}
    paid = p.answered(
        li,
        "post",
        "/api/v1/applications/",
        {"service": "id-card-renew", "form": fee_form},
        expect=201,
    )
    order = p.answered(
        li,
        "post",
        "/api/v1/payments/",
        {"application": paid["id"], "channel": "wechat"},
        expect=201,
    )
    p.answered(
        li,
        "post",
        f"/api/v1/sandbox/payments/{order['order_no']}/pay/",
        {"result": "success"},
        expect=202,
    )
    # What is Li's, read by Li: the same calls by someone else find nothing.
    p.answered(li, "get", f"/api/v1/applications/{done['id']}/", expect=200)
    for mine in ("", "receipt/", "receipt.svg"):
        p.answered(li, "get", f"/api/v1/payments/{order['id']}/{mine}", expect=200)
    for feed in ("applications/", "me/scans/", "payments/"):
        p.answered(li, "get", f"/api/v1/{feed}", expect=200)
    inbox = p.answered(li, "get", "/api/v1/me/messages/", expect=200)
    p.answered(li, "post", f"/api/v1/me/messages/{inbox['results'][0]['id']}/read/", expect=200)

    # The department's endpoint, as the story's was before it was removed.
    endpoint = p.answered(
        dept,
        "post",
        "/api/v1/dept/endpoints/",
        {"url": cast.server.url(), "events": ["application.cancelled"]},
        expect=201,
    )
    at = f"/api/v1/dept/endpoints/{endpoint['id']}/"
    p.answered(dept, "patch", at, {"description": "受理系统（备用）"}, expect=200)
    p.answered(dept, "get", at, expect=200)
    p.answered(dept, "post", at + "rotate-secret/", expect=200)
    ping = p.answered(dept, "post", at + "test/", expect=202)
    p.answered(dept, "get", f"/api/v1/dept/deliveries/{ping['id']}/", expect=200)
    p.answered(dept, "post", f"/api/v1/dept/deliveries/{ping['id']}/retry/", expect=202)
    venue = p.answered(
        dept,
        "post",
        "/api/v1/dept/codes/",
        {"service": "sbk-apply", "label": "2 号窗口"},
        expect=201,
    )
    return {"completed": done, "paid_order": order, "venue": venue, "endpoint": at}


# --- What every operation of a kind answers ----------------------------------------------------


def generic_problems(p: Problems, schema: dict[str, Any], cast: Cast) -> None:
    """For each operation, made again from its last successful call: without
    credentials, with forged ones, with another kind; with a body over the
    limit, not JSON, or broken JSON (where it takes JSON); asking for a page
    that does not exist; and on an object that is someone else's."""
    clients = {"integrator": cast.integrator, "scanner": cast.scanner}
    others = {"CitizenJWT": cast.zhao, "ApiKey": cast.other_department}
    limit = settings.API_MAX_BODY_BYTES
    # The story's citizen closed the account at its end; the token is still signed.
    closed = p.story.succeeded["me_destroy"].client
    for method, path, operation in operations(schema):
        op = operation["operationId"]
        call = p.story.succeeded[op]
        scheme = scheme_of(operation)
        if scheme is not None:
            p.again(call, client=APIClient(), status=401, code="not_authenticated")
            for header, code in FORGED[scheme]:
                p.again(call, client=with_authorization(header), status=401, code=code)
            kind, code = WRONG_KIND[scheme]
            p.again(call, client=clients[kind], status=403, code=code)
            if scheme == "CitizenJWT":
                p.again(call, client=closed, status=401, code="account_inactive")
            else:
                # A citizen's token is no credential a department's route knows.
                p.again(call, client=cast.li, status=401, code="not_authenticated")
        if method in BODY_METHODS:
            # A scanner's batch of offline scans has a bound of its own.
            bound = settings.QR_SCAN_UPLOAD_MAX_BYTES if path == "/api/v1/qr/scans/" else limit
            p.again(call, body={"padding": "x" * bound}, status=413, code="payload_too_large")
        body = operation.get("requestBody", {}).get("content", {})
        if list(body) == ["application/json"]:
            p.again(
                call, raw=("application/json", b'{"phone": '), status=400, code="malformed_request"
            )
            not_json = ("text/plain", b"phone=13800138000")
            if "415" in operation["responses"]:
                p.again(call, raw=not_json, status=415, code="unsupported_media_type")
            else:  # a view that reads every body as JSON (the scanners')
                p.again(call, raw=not_json, status=400, code="malformed_request")
        names = {parameter["name"] for parameter in operation.get("parameters", [])}
        if method == "get" and "cursor" in names:
            query = {**(call.query or {}), "cursor": "not-a-cursor"}
            p.again(call, query=query, status=400, code="pagination_invalid")
        elif method == "get" and "page" in names:
            query = {**(call.query or {}), "page": "999"}
            p.again(call, query=query, status=400, code="pagination_invalid")
        if "{" in path and scheme in others:
            # Someone else's object is no object at all.
            p.again(call, client=others[scheme], status=404, code="not_found")


# --- What an operation's own rules, throttles and edges answer ---------------------------------


def login_problems(p: Problems, cast: Cast) -> None:
    public = cast.public
    p.refused(
        public, "post", "/api/v1/auth/otp/", {"phone": "12345"}, status=400, code="phone_invalid"
    )
    # A second code for the same phone within OTP_SEND_INTERVAL_SECONDS.
    p.refused(
        public, "post", "/api/v1/auth/otp/", {"phone": cast.li_phone}, status=429, code="throttled"
    )
    with override_settings(SMS_BACKEND=f"{__name__}.GatewayDown"):
        p.refused(
            public,
            "post",
            "/api/v1/auth/otp/",
            {"phone": "13700137009"},
            status=503,
            code="sms_unavailable",
        )

    suspended = CitizenFactory(phone="13700137003", is_active=False)
    p.answered(public, "post", "/api/v1/auth/otp/", {"phone": suspended.phone}, expect=202)
    p.refused(
        public,
        "post",
        "/api/v1/auth/token/",
        {"phone": suspended.phone, "code": sms_code(suspended.phone)},
        status=403,
        code="account_suspended",
    )
    # Logins and refreshes, counted per client address: these two have made no request yet.
    login = APIClient(REMOTE_ADDR="198.51.100.7")
    wrong = {"phone": "13700137004", "code": "123456"}
    with rates(ClientScopedRateThrottle, login="1/day"):
        p.refused(login, "post", "/api/v1/auth/token/", wrong, status=400, code="otp_expired")
        p.refused(login, "post", "/api/v1/auth/token/", wrong, status=429, code="throttled")
    refresh = APIClient(REMOTE_ADDR="198.51.100.8")
    forged = {"refresh": "not-a-token"}
    with rates(ClientScopedRateThrottle, refresh="1/day"):
        p.refused(
            refresh, "post", "/api/v1/auth/token/refresh/", forged, status=401, code="token_invalid"
        )
        p.refused(
            refresh, "post", "/api/v1/auth/token/refresh/", forged, status=429, code="throttled"
        )
    p.refused(
        public,
        "post",
        "/api/v1/auth/logout/",
        {"refresh": "not-a-token"},
        status=401,
        code="token_invalid",
    )


def citizen_problems(p: Problems, cast: Cast, act: dict[str, Any]) -> None:
    li, zhao = cast.li, cast.zhao
    real_name = "/api/v1/me/real-name/"
    p.refused(
        li,
        "post",
        real_name,
        {"name": "李四", "id_number": make_id_number(343)},
        status=409,
        code="already_verified",
    )
    p.refused(
        zhao,
        "post",
        real_name,
        {"name": "赵五", "id_number": "430102199003070000"},
        status=400,
        code="id_number_invalid",
    )
    with override_settings(IDENTITY_PROVIDER=f"{__name__}.BureauDown"):
        p.refused(
            zhao,
            "post",
            real_name,
            {"name": "赵五", "id_number": make_id_number(555)},
            status=503,
            code="identity_provider_unavailable",
        )
    # The sandbox bureau finds no one behind numbers whose 15th-17th digits are 999.
    stranger = {"name": "赵五", "id_number": make_id_number(999)}
    p.refused(zhao, "post", real_name, stranger, status=422, code="identity_mismatch")
    with rates(RealNameThrottle, real_name="3/day"):  # Zhao has tried three times today
        p.refused(zhao, "post", real_name, stranger, status=429, code="throttled")

    # Applying.
    apply = "/api/v1/applications/"
    form = {"reason": "首次申领", "phone": cast.li_phone}
    p.refused(
        li,
        "post",
        apply,
        {"service": "sbk-apply", "form": {"phone": cast.li_phone}},
        status=400,
        code="form_invalid",
    )
    p.refused(
        zhao,
        "post",
        apply,
        {"service": "sbk-apply", "form": form},
        status=403,
        code="identity_level_too_low",
    )
    # A form saved before the rules for forms were: a reference to nowhere.
    broken = ServiceFactory(
        code="sbk-broken-form",
        department=cast.department,
        category=cast.category,
        form_schema={"type": "object", "properties": {"reason": {"$ref": "#/$defs/missing"}}},
    )
    p.refused(
        li,
        "post",
        apply,
        {"service": broken.code, "form": {"reason": "x"}},
        status=409,
        code="form_schema_unusable",
    )
    p.answered(
        li,
        "post",
        apply,
        {"service": "sbk-apply", "form": form},
        expect=201,
        HTTP_IDEMPOTENCY_KEY="li-apply-1",
    )
    p.refused(
        li,
        "post",
        apply,
        {"service": "sbk-apply", "form": {**form, "reason": "另一事由"}},
        status=422,
        code="idempotency_key_reused",
        HTTP_IDEMPOTENCY_KEY="li-apply-1",
    )
    p.refused(
        li,
        "post",
        apply,
        {"service": "sbk-apply", "form": form},
        status=400,
        code="idempotency_key_invalid",
        HTTP_IDEMPOTENCY_KEY="no spaces allowed",
    )

    # An operator's account that logged in by SMS code cannot close itself.
    StaffFactory(phone="13700137008")
    p.refused(
        log_in(p, "13700137008"), "delete", "/api/v1/me/", status=403, code="account_privileged"
    )

    # Moves the application's status does not allow.
    at = f"/api/v1/applications/{act['completed']['id']}/"
    p.refused(li, "post", at + "cancel/", {}, status=409, code="invalid_transition")
    p.refused(
        li,
        "post",
        at + "supplement/",
        {"form": {"reason": "再补充"}},
        status=409,
        code="invalid_transition",
    )
    p.refused(li, "post", at + "rating/", {"score": 5}, status=409, code="rating_not_allowed")
    p.refused(li, "post", at + "rating/", {"score": 9}, status=400, code="invalid")

    # The star-code, issued once more than the rate allows.
    with override_settings(QR_STAR_CODE_RATE="1/day"):
        p.answered(zhao, "get", "/api/v1/me/star-code/", expect=200)
        for path in ("", "image.png", "image.svg"):
            p.refused(zhao, "get", f"/api/v1/me/star-code/{path}", status=429, code="throttled")


def payment_problems(p: Problems, cast: Cast, act: dict[str, Any]) -> None:
    li, zhao, dept = cast.li, cast.zhao, cast.integrator
    pay = "/api/v1/payments/"
    free = act["completed"]
    p.refused(
        li,
        "post",
        pay,
        {"application": free["id"], "channel": "wechat"},
        status=409,
        code="application_not_payable",
    )
    due = p.answered(
        li,
        "post",
        "/api/v1/applications/",
        {"service": "id-card-renew", "form": {"reason": "到期换领", "phone": cast.li_phone}},
        expect=201,
    )
    p.refused(
        zhao,
        "post",
        pay,
        {"application": due["id"], "channel": "wechat"},
        status=404,
        code="not_found",
    )
    wechat = provider_for("wechat")
    kept = wechat.http._transport
    wechat.http._transport = httpx.MockTransport(unreachable)
    try:
        p.refused(
            li,
            "post",
            pay,
            {"application": due["id"], "channel": "wechat"},
            status=502,
            code="payment_provider_error",
        )
    finally:
        wechat.http._transport = kept
    configured = {k: v for k, v in settings.PAYMENTS_CHANNELS.items() if k != "unionpay"}
    with override_settings(PAYMENTS_CHANNELS=configured):
        p.refused(
            li,
            "post",
            pay,
            {"application": due["id"], "channel": "unionpay"},
            status=503,
            code="payment_channel_unavailable",
        )
    order = p.answered(
        li,
        "post",
        pay,
        {"application": due["id"], "channel": "alipay"},
        expect=201,
        HTTP_IDEMPOTENCY_KEY="li-pay-1",
    )
    p.refused(
        li,
        "post",
        pay,
        {"application": due["id"], "channel": "wechat"},
        status=422,
        code="idempotency_key_reused",
        HTTP_IDEMPOTENCY_KEY="li-pay-1",
    )

    # The order is not paid yet: no receipt, nothing to refund.
    at = f"/api/v1/payments/{order['id']}/"
    p.refused(li, "get", at + "receipt/", status=409, code="receipt_not_available")
    p.refused(li, "get", at + "receipt.svg", status=409, code="receipt_not_available")
    p.refused(
        dept,
        "post",
        f"/api/v1/dept/payments/{order['order_no']}/refunds/",
        {"amount_fen": 100},
        status=409,
        code="refund_not_allowed",
    )

    # The sandbox wallet: a paid order cannot be paid again; off, it is not there.
    paid = act["paid_order"]["order_no"]
    cashier = f"/api/v1/sandbox/payments/{paid}/pay/"
    p.refused(
        li, "post", cashier, {"result": "success"}, status=409, code="sandbox_payment_refused"
    )
    p.refused(li, "post", cashier, {"result": "maybe"}, status=400, code="invalid")
    with override_settings(PAYMENTS_SANDBOX=False):
        p.refused(li, "post", cashier, {"result": "success"}, status=404, code="sandbox_disabled")
    p.refused(
        li,
        "post",
        "/api/v1/sandbox/payments/P20260302000000000000000/pay/",
        {"result": "success"},
        status=404,
        code="not_found",
    )
    callbacks(p, cast, order["order_no"], paid)


def callback(trade: SandboxTrade) -> tuple[tuple[str, bytes], dict[str, str]]:
    """The channel's signed callback of ``trade``: (content type and body, headers)."""
    built = sandbox_for(trade.channel).payment_notify(trade)
    assert built is not None
    headers, body = built
    extra = {
        "HTTP_" + k.upper().replace("-", "_"): v
        for k, v in headers.items()
        if k.lower() != "content-type"
    }
    return (headers["Content-Type"], body), extra


def callbacks(p: Problems, cast: Cast, alipay_order_no: str, wechat_order_no: str) -> None:
    """The channels' callbacks: acknowledged, refused in the channel's own
    format (not authentic, malformed, an order we do not have), or over the
    rate; a channel we do not have is a problem like any other 404."""
    public = cast.public
    notify = "/api/v1/payments/notify/alipay/"
    paid = books.trade_pay(channel="alipay", order_no=alipay_order_no, succeed=True)
    raw, headers = callback(paid)
    p.answered(public, "post", notify, raw=raw, expect=200, **headers)
    assert (p.story.answers[-1].content_type, p.story.answers[-1].content) == (
        "text/plain",
        b"success",
    )
    channel_says(p, public, notify, (raw[0], raw[1] + b"&forged=1"), 401, headers)
    channel_says(p, public, notify, (raw[0], b"notify_type=trade_status_sync"), 400, {})
    wechat = books.trade_get(
        channel="wechat",
        merchant_id=settings.PAYMENTS_CHANNELS["wechat"]["merchant_id"],
        order_no=wechat_order_no,
    )
    assert wechat is not None
    signed, wechat_headers = callback(wechat)
    forged = {**wechat_headers, "HTTP_WECHATPAY_SIGNATURE": "Zm9yZ2Vk"}
    channel_says(p, public, "/api/v1/payments/notify/wechat/", signed, 401, forged)

    config = settings.PAYMENTS_CHANNELS["alipay"]
    theirs = books.trade_open(
        channel="alipay",
        merchant_id=config["merchant_id"],
        app_id=config["app_id"],
        order_no="P20260302ABCDEF0123456",
        amount_fen=2000,
        description="不是我们的订单",
        notify_url="https://my.changsha.gov.cn" + notify,
        expires_at=timezone.now() + dt.timedelta(minutes=30),
    )
    raw, headers = callback(
        books.trade_pay(channel="alipay", order_no=theirs.order_no, succeed=True)
    )
    channel_says(p, public, notify, raw, 404, headers)
    p.refused(
        public, "post", "/api/v1/payments/notify/paypal/", raw=raw, status=404, code="not_found"
    )
    # Counted per client address; this one has sent nothing yet.
    channel = APIClient(REMOTE_ADDR="198.51.100.9")
    with override_settings(PAYMENTS_NOTIFY_RATE="1/day"):
        channel_says(p, channel, notify, raw, 404, headers)
        p.refused(channel, "post", notify, raw=raw, status=429, code="throttled", **headers)


def channel_says(
    p: Problems,
    client: APIClient,
    path: str,
    raw: tuple[str, bytes],
    status: int,
    headers: dict[str, str],
) -> None:
    """A callback refused in the channel's format: Alipay's ``fail``, WeChat Pay's JSON."""
    value = p.answered(client, "post", path, raw=raw, expect=status, **headers)
    answer = p.story.answers[-1]
    if answer.content_type == "application/json":
        assert value["code"] == "FAIL", value
    else:
        assert (answer.content_type, answer.content) == ("text/plain", b"fail")


def department_problems(p: Problems, cast: Cast, act: dict[str, Any]) -> None:
    dept = cast.integrator
    p.refused(
        dept,
        "get",
        "/api/v1/dept/applications/",
        query={"status": "lost"},
        status=400,
        code="invalid",
    )
    p.refused(
        dept,
        "get",
        "/api/v1/dept/payments/",
        query={"date": "2026-13-01"},
        status=400,
        code="invalid",
    )
    p.refused(
        dept,
        "get",
        "/api/v1/dept/deliveries/",
        query={"endpoint": "42"},
        status=400,
        code="invalid",
    )
    p.refused(
        dept,
        "post",
        "/api/v1/dept/applications/CS20260302999999/status/",
        {"status": "accepted"},
        status=404,
        code="not_found",
    )
    p.refused(
        dept,
        "post",
        f"/api/v1/dept/applications/{act['completed']['number']}/status/",
        {"status": "teleported"},
        status=400,
        code="invalid",
    )
    p.refused(
        dept,
        "post",
        f"/api/v1/dept/applications/{act['completed']['number']}/status/",
        {"status": "rejected"},
        status=422,
        code="idempotency_key_reused",
        HTTP_IDEMPOTENCY_KEY="accept-1",
    )
    guide = p.story.succeeded["dept_services_create"].body
    p.refused(dept, "post", "/api/v1/dept/services/", guide, status=409, code="service_code_taken")
    # Taken offline by the platform's operators: the department cannot put it back.
    published = Service.objects.get(code=guide["code"])
    catalog.service_update(service=published, actor=StaffFactory(), is_active=False)
    p.refused(
        dept,
        "patch",
        f"/api/v1/dept/services/{guide['code']}/",
        {"is_active": True},
        status=409,
        code="service_held",
    )
    with override_settings(DEPT_SERVICE_WRITE_RATE="0/day"):
        # Creations and edits count together, per key; reading does not.
        p.refused(dept, "post", "/api/v1/dept/services/", guide, status=429, code="throttled")
        edited = f"/api/v1/dept/services/{guide['code']}/"
        p.refused(dept, "patch", edited, {"name": "x"}, status=429, code="throttled")
        p.answered(dept, "get", edited, expect=200)
    p.refused(
        dept,
        "post",
        "/api/v1/dept/endpoints/",
        {"url": "ftp://example.invalid/", "events": []},
        status=400,
        code="invalid",
    )
    # Another department cannot remove it: it is not theirs to see.
    p.refused(cast.other_department, "delete", act["endpoint"], status=404, code="not_found")
    p.answered(dept, "get", act["endpoint"], expect=200)
    # Held by the platform's operators, its URL cannot change.
    held = Endpoint.objects.get(pk=act["endpoint"].rstrip("/").rsplit("/", 1)[1])
    endpoints.endpoint_hold(endpoint=held, actor=StaffFactory(), reason="looked into")
    p.refused(
        dept,
        "patch",
        act["endpoint"],
        {"url": held.url + "?v=2"},
        status=409,
        code="endpoint_held",
    )
    endpoints.endpoint_resume(endpoint=held, actor=StaffFactory())
    with override_settings(ROUTING_MAX_ENDPOINTS=1):
        p.refused(
            dept,
            "post",
            "/api/v1/dept/endpoints/",
            {"url": cast.server.url(), "events": ["application.cancelled"]},
            status=409,
            code="endpoint_limit_reached",
        )
    with override_settings(ROUTING_SEND_RATE="1/day"):
        # Pings and retries count together, per key.
        sent = p.answered(dept, "post", act["endpoint"] + "test/", expect=202)
        p.refused(dept, "post", act["endpoint"] + "test/", status=429, code="throttled")
        retry = f"/api/v1/dept/deliveries/{sent['id']}/retry/"
        p.refused(dept, "post", retry, status=429, code="throttled")
    # No host can be looked up now: the web process has as many lookups
    # under way as it runs (names whose servers never answer).
    with mock.patch.object(transport, "MAX_LOOKUPS_UNDER_WAY", 0):
        fresh = {"url": cast.server.url("/moved"), "events": ["application.cancelled"]}
        p.refused(
            dept, "post", "/api/v1/dept/endpoints/", fresh, status=503, code="service_unavailable"
        )
        p.refused(dept, "patch", act["endpoint"], fresh, status=503, code="service_unavailable")
    with override_settings(ROUTING_ENDPOINT_WRITE_RATE="0/day"):
        # Registrations, changes, removals and rotations count together, per key.
        fresh = {"url": cast.server.url(), "events": ["application.cancelled"]}
        p.refused(dept, "post", "/api/v1/dept/endpoints/", fresh, status=429, code="throttled")
        p.refused(
            dept, "patch", act["endpoint"], {"description": "x"}, status=429, code="throttled"
        )
        p.refused(dept, "post", act["endpoint"] + "rotate-secret/", status=429, code="throttled")
        p.refused(dept, "delete", act["endpoint"], status=429, code="throttled")
        p.answered(dept, "get", act["endpoint"], expect=200)
    # The story's ping went to an endpoint removed since.
    ping = p.story.told["dept_endpoints_test_create"]["responses"]["202"]["value"]
    p.refused(
        dept,
        "post",
        f"/api/v1/dept/deliveries/{ping['id']}/retry/",
        status=409,
        code="delivery_not_retryable",
    )
    p.refused(
        dept,
        "post",
        "/api/v1/dept/codes/",
        {"service": "no-such-service", "label": "3 号窗口"},
        status=400,
        code="invalid",
    )


def catalog_and_code_problems(p: Problems, cast: Cast, act: dict[str, Any]) -> None:
    public = cast.public
    p.refused(
        public, "get", "/api/v1/services/", query={"q": "长" * 51}, status=400, code="invalid"
    )
    keys = "/api/v1/qr/keys/"
    etag = public.get(keys)["ETag"]
    p.answered(public, "get", keys, expect=304, HTTP_IF_NONE_MATCH=etag)
    resolve = "/api/v1/qr/resolve/"
    p.refused(public, "post", resolve, {"code": "MCS1:not-a-code"}, status=400, code="code_invalid")
    p.refused(
        cast.scanner,
        "get",
        "/api/v1/qr/revocations/",
        query={"since": "2026-03-02T09:30:00"},
        status=400,
        code="since_invalid",
    )
    visitor = APIClient(REMOTE_ADDR="198.51.100.10")  # no request from here yet
    with override_settings(QR_RESOLVE_RATE="1/day"):
        p.answered(visitor, "post", resolve, {"code": act["venue"]["code"]}, expect=200)
        p.refused(
            visitor, "post", resolve, {"code": act["venue"]["code"]}, status=429, code="throttled"
        )

    # A gate of its own, so that its count starts at nothing.
    _key, raw = api_key_create(department=cast.department, scope=ApiKeyScope.SCANNER, name="gate 2")
    gate = client_with_key(raw)
    star = p.answered(cast.li, "get", "/api/v1/me/star-code/", expect=200)
    verify = "/api/v1/qr/verify/"
    p.refused(gate, "post", verify, {"code": 42}, status=400, code="invalid")
    with override_settings(QR_VERIFY_RATE="1/day"):
        p.answered(gate, "post", verify, {"code": star["code"]}, expect=200)
        p.refused(gate, "post", verify, {"code": star["code"]}, status=429, code="throttled")
    # The shared state of online verification (Redis) is down.
    with override_settings(
        REDIS_URL="redis://127.0.0.1:1/0", QR_SCAN_RECORDER="qr.recorders.RedisScanRecorder"
    ):
        p.refused(
            cast.scanner,
            "post",
            verify,
            {"code": star["code"]},
            status=503,
            code="scan_state_unavailable",
        )
    p.refused(
        cast.scanner,
        "post",
        "/api/v1/qr/scans/",
        {"scans": []},
        status=400,
        code="invalid",
    )
    with override_settings(QR_SCAN_UPLOAD_RATE="1/day"):
        # Counted before the body is read: a refused batch counts too.
        p.refused(gate, "post", "/api/v1/qr/scans/", {"scans": []}, status=400, code="invalid")
        p.refused(gate, "post", "/api/v1/qr/scans/", {"scans": []}, status=429, code="throttled")


# --- The test --------------------------------------------------------------------------------


def produced_and_documented(
    schema: dict[str, Any], told: Story
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(documented but never answered, answered but not documented)."""
    documented = {
        (operation["operationId"], status)
        for _, _, operation in operations(schema)
        for status in operation["responses"]
    }
    produced = {(answer.operation, str(answer.status)) for answer in told.answers}
    return sorted(documented - produced), sorted(produced - documented)


def wrong_problems(schema: dict[str, Any], told: Story) -> list[str]:
    """Every 4xx and 5xx answer whose media type the schema does not give
    for its status, whose body does not fit the schema's, or that is no
    problem document (the channels' callbacks aside)."""
    documented = {op["operationId"]: op for _, _, op in operations(schema)}
    wrong: list[str] = []
    for answer in told.answers:
        if answer.status < 400:
            continue
        where = f"{answer.operation} {answer.status}"
        response = documented[answer.operation]["responses"].get(str(answer.status))
        if response is None:
            continue  # named by produced_and_documented
        media = response.get("content", {}).get(answer.content_type)
        if media is None:
            wrong.append(f"{where}: {answer.content_type or 'no body'} is not documented")
            continue
        if answer.content_type == PROBLEM_CONTENT_TYPE:
            value = answer.value
            missing = [m for m in ("type", "title", "status", "code") if not value.get(m)]
            if missing or value["status"] != answer.status:
                wrong.append(f"{where}: {value}")
            elif f"`{value['code']}`" not in response.get("description", ""):
                wrong.append(f"{where}: `{value['code']}` is not among the documented codes")
        elif answer.operation != CALLBACKS:
            wrong.append(f"{where}: {answer.content_type} is no problem document")
        if answer.value is not None:
            found = problems_of(schema, media["schema"], answer.value)
            wrong.extend(f"{where}: {problem}" for problem in found)
    return wrong


@pytest.mark.django_db(transaction=True)
def test_every_documented_status_is_answered_and_no_other(
    schema,
    department,
    category,
    integrator_key,
    scanner_key,
    other_integrator_key,
    department_system,
) -> None:
    told = story(schema, department, category, integrator_key, scanner_key, department_system)
    p = Problems(told)
    cast = Cast(
        p,
        department,
        category,
        integrator_key,
        scanner_key,
        other_integrator_key,
        department_system,
    )
    act = second_act(p, cast)
    generic_problems(p, schema, cast)
    login_problems(p, cast)
    citizen_problems(p, cast, act)
    payment_problems(p, cast, act)
    department_problems(p, cast, act)
    catalog_and_code_problems(p, cast, act)

    missing, undocumented = produced_and_documented(schema, told)
    found = {
        "documented, never answered": missing,
        "answered, not documented": undocumented,
        "not a problem as documented": wrong_problems(schema, told),
    }
    assert found == {name: [] for name in found}

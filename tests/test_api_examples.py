"""The examples of ``/api/schema/`` (Swagger UI and ReDoc show them): every
operation's request and answer as the API really gives them, taken from a
story told through the API and kept in ``config/api_examples.json``, which
:mod:`config.openapi_examples` attaches to the schema.

They cannot rot:

- every operation in the schema has its success answer's example (and its
  request's, where it takes a JSON body), and no example names an operation,
  a status or a media type the schema does not have;
- every example validates against the schema of its body (components
  resolved from the schema itself, nothing fetched), unknown fields refused;
- the story below runs in every test run: it must still reach every
  operation with the answers it expects, each of its bodies must validate,
  and each must have the fields of the one kept in the file. When the API
  changes, regenerate the file with ``scripts/api_examples.py``
  (``API_EXAMPLES_WRITE=1`` on this module).

Secrets and tokens in the bodies become placeholders (``whsec_EXAMPLE…``,
shortened JWTs); identifiers and times become stable ones, so that a
regeneration changes only what the API changed.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client as DjangoClient
from django.utils import timezone
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from rest_framework.test import APIClient

from accounts import sms
from config.openapi_examples import EXAMPLES_FILE, JSON_TYPES, examples_load
from payments.sandbox import books
from payments.sandbox.channels import sandbox_for
from qr import caches
from qr.models import ScannerProfile
from qr.recorders import get_recorder
from qr.scans import scan_events_flush
from tests.accounts.factories import make_id_number
from tests.conftest import client_with_key
from tests.services.department import DepartmentServer
from tests.services.factories import ServiceFactory

WRITE = os.environ.get("API_EXAMPLES_WRITE") == "1"
METHODS = ("get", "post", "put", "patch", "delete")

# Where the stable identifiers and times of the examples start (09:30 in Changsha).
BASE_TIME = dt.datetime(2026, 3, 2, 1, 30, tzinfo=dt.UTC)
UUID_NAMESPACE = uuid.UUID("6f1c2a52-6d9e-4c55-9a57-2f0e8c1d0b11")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
JWT_RE = re.compile(r"^eyJ[\w-]*\.[\w-]+\.[\w-]+$")
OTP_RE = re.compile(r"^\d{6}$")
# Identifiers made at random (a subject, a message, an order, a refund, a
# channel's transaction): the part that varies, after the part that stays.
RANDOM_IDS = [
    re.compile(r"\b(s_)([0-9a-f]{24})\b"),
    re.compile(r"\b(msg_)([0-9a-f]{32})\b"),
    re.compile(r"\b([PR]\d{8})([0-9A-F]{14})\b"),
    re.compile(r"\b(WE\d{8})(\d{18})\b"),
]
DEPARTMENT_URL = "https://hrss.example.cn/events"


# --- The schema and its validators ------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    response = DjangoClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema 2020-12: ``nullable`` admits
    null, an object with named properties admits no other, and local
    references point into the registry below."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: json_schema(value) for key, value in node.items() if key != "nullable"}
    if "$ref" in out:
        out["$ref"] = "urn:openapi" + out["$ref"]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def validator_for(schema: dict[str, Any], media_schema: dict[str, Any]) -> Draft202012Validator:
    components = Resource(
        contents={"components": json_schema(schema["components"])}, specification=DRAFT202012
    )
    # No retrieval: a reference outside the schema's own components fails.
    registry = Registry().with_resource("urn:openapi", components)
    return Draft202012Validator(
        json_schema(media_schema),
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def problems_of(schema: dict[str, Any], media_schema: dict[str, Any], value: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator_for(schema, media_schema).iter_errors(value)
    ]


# --- The file's examples, as the schema carries them ------------------------------------------


def test_every_operation_has_its_examples(schema) -> None:
    kept = examples_load()
    missing: list[str] = []
    for method, path, operation in operations(schema):
        op = operation["operationId"]
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and not body.get("examples"):
            missing.append(f"{op}: request")
        successes = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
        told = [s for s in successes if s in kept.get(op, {}).get("responses", {})]
        if not told:
            missing.append(f"{op} ({method.upper()} {path}): no success in the story")
        for status in told:
            for media_type, media in successes[status].get("content", {}).items():
                if media_type in JSON_TYPES and not media.get("examples"):
                    missing.append(f"{op}: {status} {media_type}")
    assert missing == [], "regenerate with scripts/api_examples.py"


def test_no_example_names_what_the_schema_does_not_have(schema) -> None:
    documented = {op["operationId"]: op for _, _, op in operations(schema)}
    unknown: list[str] = []
    for op, example in examples_load().items():
        if op not in documented:
            unknown.append(op)
            continue
        responses = documented[op]["responses"]
        for status, answer in example.get("responses", {}).items():
            content = responses.get(status, {}).get("content", {})
            if status not in responses:
                unknown.append(f"{op}: {status}")
            elif "value" in answer and answer["content_type"] not in content:
                unknown.append(f"{op}: {status} {answer['content_type']}")
        if "request" in example and "requestBody" not in documented[op]:
            unknown.append(f"{op}: request")
    assert unknown == []


def test_every_example_fits_its_schema(schema) -> None:
    wrong: dict[str, list[str]] = {}
    checked = 0
    for _, _, operation in operations(schema):
        op = operation["operationId"]
        media = [
            ("request", media)
            for media in operation.get("requestBody", {}).get("content", {}).values()
        ] + [
            (status, media)
            for status, answer in operation["responses"].items()
            for media in answer.get("content", {}).values()
        ]
        for where, one in media:
            for name, example in one.get("examples", {}).items():
                checked += 1
                found = problems_of(schema, one["schema"], example["value"])
                if found:
                    wrong[f"{op} {where} {name}"] = found
    assert wrong == {}
    assert checked >= 65


def test_a_wrong_example_is_caught(schema) -> None:
    """The validation above can fail: a field of the wrong type, an unknown
    field and a missing one are each found."""
    application = schema["components"]["schemas"]["Application"]
    ref = {"$ref": "#/components/schemas/Application"}
    value = examples_load()["applications_retrieve"]["responses"]["200"]["value"]
    assert problems_of(schema, ref, value) == []
    assert problems_of(schema, ref, value | {"status": 7})
    assert problems_of(schema, ref, value | {"undocumented": 1})
    required = application["required"][0]
    assert problems_of(schema, ref, {k: v for k, v in value.items() if k != required})


# --- The story the examples come from -------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """A request the story made, to make again (with other credentials, another body)."""

    method: str
    path: str
    client: APIClient
    body: Any = None
    query: dict[str, Any] | None = None
    raw: tuple[str, bytes] | None = None


@dataclass(frozen=True)
class Answer:
    """What one request of the story was answered."""

    operation: str
    status: int
    content_type: str
    value: Any
    content: bytes


class Story:
    """Calls the API through Django's test client and keeps, per operation
    and status, the first request and answer (or the one marked ``example``);
    besides, every answer in the order given, and per operation the last
    call that succeeded."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.routes = [
            (method, re.compile("^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(path)) + "$"), op)
            for method, path, op in operations(schema)
        ]
        self.told: dict[str, dict[str, Any]] = {}
        self.answers: list[Answer] = []
        self.succeeded: dict[str, Call] = {}
        self.started = timezone.now()
        self.server_url = ""

    def operation_id(self, method: str, path: str) -> str:
        for route_method, pattern, operation in self.routes:
            if route_method == method and pattern.match(path):
                return operation["operationId"]
        raise AssertionError(f"{method.upper()} {path} is no operation of the schema")

    def call(
        self,
        client: APIClient,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: int,
        summary: str,
        example: bool = False,
        query: dict[str, Any] | None = None,
        raw: tuple[str, bytes] | None = None,
        **headers: str,
    ) -> Any:
        if raw is not None:
            content_type, data = raw
            response = client.generic(method.upper(), path, data, content_type, **headers)
            # A body the API took is JSON; one it refused may not be.
            took = content_type in JSON_TYPES and response.status_code < 300
            sent = json.loads(data) if took else None
        elif body is not None:
            response = getattr(client, method)(path, body, format="json", **headers)
            sent = body
        else:
            response = getattr(client, method)(path, query, **headers)
            sent = None
        assert response.status_code == expect, (method, path, response.content[:500])
        op = self.operation_id(method, path.split("?")[0])
        content_type = response.get("Content-Type", "").split(";")[0]
        value = json.loads(response.content) if content_type in JSON_TYPES else None
        self.answers.append(Answer(op, response.status_code, content_type, value, response.content))
        if 200 <= response.status_code < 300:
            self.succeeded[op] = Call(method, path, client, body, query, raw)
        told = self.told.setdefault(op, {"responses": {}})
        status = str(response.status_code)
        if example or status not in told["responses"]:
            answer: dict[str, Any] = {"summary": summary}
            if response.content:
                answer["content_type"] = content_type
            if value is not None:
                answer["value"] = value
            told["responses"][status] = answer
            if sent is not None and status.startswith("2") and (example or "request" not in told):
                told["request"] = {"summary": summary, "value": copy.deepcopy(sent)}
        return value


class Placeholders:
    """Stable stand-ins for what changes from run to run, and fakes for secrets."""

    def __init__(self, started: dt.datetime, server_url: str) -> None:
        self.started = started
        self.server_url = server_url
        self.today = timezone.localdate(started)
        self.uuids: dict[str, str] = {}
        self.ids: dict[str, str] = {}

    def random_id(self, match: re.Match[str]) -> str:
        kept, varying = match[1], match[2]
        if match[0] not in self.ids:
            digest = hashlib.sha256(f"example-{len(self.ids)}".encode()).hexdigest()
            if varying.isdigit():
                digest = str(int(digest, 16))
            elif varying.isupper():
                digest = digest.upper()
            self.ids[match[0]] = kept + digest[: len(varying)]
        return self.ids[match[0]]

    def uuid(self, match: re.Match[str]) -> str:
        found = match[0]
        if found not in self.uuids:
            self.uuids[found] = str(uuid.uuid5(UUID_NAMESPACE, str(len(self.uuids))))
        return self.uuids[found]

    def moment(self, match: re.Match[str]) -> str:
        text = match[0]
        when = dt.datetime.fromisoformat(text.replace(" ", "T"))
        if when.tzinfo is None:
            return text
        # To ten seconds: the story's own seconds go, lifetimes stay.
        seconds = round((when - self.started).total_seconds() / 10) * 10
        shifted = BASE_TIME + dt.timedelta(seconds=seconds)
        moved = shifted.astimezone(when.tzinfo).replace(microsecond=0)
        return moved.isoformat().replace("+00:00", "Z") if text.endswith("Z") else moved.isoformat()

    def string(self, key: str, text: str) -> str:
        if key == "code" and OTP_RE.match(text):
            return "123456"  # a login code, used once
        if JWT_RE.match(text):
            return text.split(".")[0] + ".EXAMPLE.EXAMPLE"
        if text.startswith("whsec_"):
            return "whsec_EXAMPLEc2VjcmV0IHNob3duIG9uY2UgYnkgdGhlIEFQSQ=="
        if DATE_RE.match(text):
            day = dt.date.fromisoformat(text)
            return (BASE_TIME.date() + (day - self.today)).isoformat()
        text = text.replace(self.server_url, DEPARTMENT_URL)
        text = UUID_RE.sub(self.uuid, text)
        for pattern in RANDOM_IDS:
            text = pattern.sub(self.random_id, text)
        text = DATETIME_RE.sub(self.moment, text)
        return text.replace(self.today.strftime("%Y%m%d"), BASE_TIME.strftime("%Y%m%d"))

    def apply(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self.apply(v, k) for k, v in value.items()}
        if isinstance(value, list):
            # Long lists as their first and last items.
            kept = value if len(value) <= 2 else [value[0], value[-1]]
            return [self.apply(item, key) for item in kept]
        if isinstance(value, str):
            return self.string(key, value)
        return value


def sms_code(phone: str) -> str:
    text = [m for m in sms.outbox if m.to == phone][-1].text
    return re.search(r"\d{6}", text)[0]  # type: ignore[index]


def story(
    schema: dict[str, Any], department, category, integrator_key, scanner_key, server
) -> Story:
    s = Story(schema)
    s.server_url = server.url()
    public = APIClient()
    dept = client_with_key(integrator_key.raw)
    scanner = client_with_key(scanner_key.raw)
    ScannerProfile.objects.create(api_key=scanner_key, place="地铁2号线 五一广场站 3号闸机")
    ServiceFactory(
        code="sbk-apply",
        name="社会保障卡申领",
        department=department,
        category=category,
        keywords=["社保卡"],
    )
    ServiceFactory(
        code="id-card-renew",
        name="居民身份证换领",
        department=department,
        category=category,
        fee_fen=2000,
    )

    # The catalog, as anyone reads it.
    s.call(public, "get", "/api/v1/categories/", expect=200, summary="The service categories")
    s.call(public, "get", "/api/v1/departments/", expect=200, summary="The departments")
    s.call(
        public,
        "get",
        "/api/v1/services/",
        query={"q": "社保卡"},
        expect=200,
        summary="Services found by a word (pinyin initials work too)",
    )
    s.call(public, "get", "/api/v1/services/sbk-apply/", expect=200, summary="A service's guide")
    s.call(
        public,
        "get",
        "/api/v1/services/no-such-service/",
        expect=404,
        summary="No such service",
    )

    # The department's system registers where its events go.
    endpoint = s.call(
        dept,
        "post",
        "/api/v1/dept/endpoints/",
        {
            "url": server.url(),
            "events": ["application.submitted", "application.cancelled"],
            "description": "受理系统",
        },
        expect=201,
        summary="An endpoint registered; its secret is shown this once",
    )
    s.call(
        dept,
        "post",
        "/api/v1/dept/endpoints/",
        {"url": "ftp://example.invalid/", "events": []},
        expect=400,
        summary="Invalid input, field by field",
    )
    s.call(dept, "get", "/api/v1/dept/endpoints/", expect=200, summary="The department's endpoints")

    # A citizen logs in with the code the SMS brought.
    phone = "13600136000"
    s.call(
        public,
        "post",
        "/api/v1/auth/otp/",
        {"phone": phone},
        expect=202,
        summary="A login code sent by SMS",
    )
    s.call(
        public,
        "post",
        "/api/v1/auth/token/",
        {"phone": phone, "code": "000000"},
        expect=400,
        summary="A wrong code",
    )
    login = s.call(
        public,
        "post",
        "/api/v1/auth/token/",
        {"phone": phone, "code": sms_code(phone)},
        expect=200,
        summary="Logged in: a token pair and the citizen",
    )
    pair = s.call(
        public,
        "post",
        "/api/v1/auth/token/refresh/",
        {"refresh": login["refresh"]},
        expect=200,
        summary="A new token pair",
    )
    me = APIClient()
    me.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    s.call(me, "get", "/api/v1/me/", expect=200, summary="The citizen's profile (masked)")
    s.call(
        me, "patch", "/api/v1/me/", {"nickname": "小王"}, expect=200, summary="A nickname changed"
    )
    s.call(
        me,
        "post",
        "/api/v1/me/real-name/",
        {"name": "王小明", "id_number": make_id_number(4242)},
        expect=200,
        summary="Real name verified (identity level 2)",
    )

    # Apply; the department receives the event, accepts, asks, completes.
    form = {"reason": "首次申领", "phone": phone}
    applied = s.call(
        me,
        "post",
        "/api/v1/applications/",
        {"service": "sbk-apply", "form": form},
        expect=201,
        summary="An application submitted (and routed to the department)",
        HTTP_IDEMPOTENCY_KEY="story-1",
    )
    number = applied["number"]
    s.call(
        dept,
        "get",
        "/api/v1/dept/applications/",
        query={"status": "routed"},
        expect=200,
        summary="The department's new applications",
    )
    s.call(
        dept,
        "get",
        f"/api/v1/dept/applications/{number}/",
        expect=200,
        summary="An application, as its department sees it",
    )

    def department_moves(status: str, note: str, summary: str) -> None:
        s.call(
            dept,
            "post",
            f"/api/v1/dept/applications/{number}/status/",
            {"status": status, "note": note, "reference": "HRSS-2026-0001"},
            expect=200,
            summary=summary,
            example=status == "accepted",
        )

    department_moves("accepted", "材料齐全，已受理", "Accepted by the department")
    department_moves("needs_info", "请补充申领原因", "More information asked for")
    s.call(
        me,
        "post",
        f"/api/v1/applications/{applied['id']}/supplement/",
        {"form": {"reason": "首次申领（补充：原卡未曾办理）"}},
        expect=200,
        summary="The information supplied",
    )
    department_moves("completed", "已制卡，请到窗口领取", "Completed")
    s.call(
        dept,
        "post",
        f"/api/v1/dept/applications/{number}/status/",
        {"status": "accepted"},
        expect=409,
        summary="A move its status does not allow",
    )
    s.call(
        dept,
        "get",
        "/api/v1/dept/deliveries/",
        query={"endpoint": endpoint["id"]},
        expect=200,
        summary="What was sent to an endpoint",
    )
    [delivery] = s.told["dept_deliveries_list"]["responses"]["200"]["value"]["results"]
    s.call(
        dept,
        "get",
        f"/api/v1/dept/deliveries/{delivery['id']}/",
        expect=200,
        summary="A delivery and its attempts",
    )

    # The citizen follows it, rates it, cancels another.
    s.call(me, "get", "/api/v1/applications/", expect=200, summary="The citizen's applications")
    s.call(
        me,
        "get",
        f"/api/v1/applications/{applied['id']}/",
        expect=200,
        summary="An application and its timeline",
    )
    s.call(
        me,
        "post",
        f"/api/v1/applications/{applied['id']}/rating/",
        {"score": 5, "comment": "很快"},
        expect=200,
        summary="Rated",
    )
    s.call(
        me,
        "post",
        f"/api/v1/applications/{applied['id']}/rating/",
        {"score": 1},
        expect=409,
        summary="Rated already",
    )
    second = s.call(
        me,
        "post",
        "/api/v1/applications/",
        {"service": "sbk-apply", "form": form},
        expect=201,
        summary="Another application",
    )
    s.call(
        me,
        "post",
        f"/api/v1/applications/{second['id']}/cancel/",
        {"reason": "不需要了"},
        expect=200,
        summary="Cancelled by the citizen",
    )
    messages = s.call(me, "get", "/api/v1/me/messages/", expect=200, summary="The inbox")
    s.call(
        me,
        "post",
        f"/api/v1/me/messages/{messages['results'][0]['id']}/read/",
        expect=200,
        summary="A message read",
    )
    s.call(me, "post", "/api/v1/me/messages/read-all/", expect=200, summary="All messages read")

    # The star-code: shown, scanned online and offline, the citizen's scans.
    star = s.call(me, "get", "/api/v1/me/star-code/", expect=200, summary="The star-code")
    s.call(me, "get", "/api/v1/me/star-code/image.png", expect=200, summary="As a PNG")
    s.call(me, "get", "/api/v1/me/star-code/image.svg", expect=200, summary="As an SVG")
    s.call(
        scanner,
        "post",
        "/api/v1/qr/verify/",
        {"code": star["code"]},
        expect=200,
        summary="A valid code, as a metro gate sees it",
    )
    s.call(
        scanner,
        "post",
        "/api/v1/qr/scans/",
        {
            "scans": [
                {
                    "event_id": "gate3-0001",
                    "code": star["code"],
                    "scanned_at": timezone.now().isoformat(),
                    "valid": True,
                    "reason": None,
                },
                {
                    "event_id": "gate3-0002",
                    "code": "MCS1:not-a-code",
                    "scanned_at": timezone.now().isoformat(),
                    "valid": False,
                    "reason": "malformed",
                },
            ]
        },
        expect=200,
        summary="Scans made offline, uploaded later",
    )
    scan_events_flush()
    s.call(me, "get", "/api/v1/me/scans/", expect=200, summary="Where the code was scanned")
    s.call(
        public, "get", "/api/v1/qr/keys/", expect=200, summary="The keys to verify codes offline"
    )
    s.call(
        scanner,
        "get",
        "/api/v1/qr/revocations/",
        expect=200,
        summary="Codes no longer valid, for offline terminals",
    )

    # The department's endpoint: changed, its secret rotated, pinged, removed.
    at = f"/api/v1/dept/endpoints/{endpoint['id']}/"
    s.call(
        dept,
        "patch",
        at,
        {"events": ["application.submitted", "payment.succeeded"]},
        expect=200,
        summary="The events changed (the rest as it was)",
    )
    s.call(dept, "get", at, expect=200, summary="An endpoint")
    s.call(dept, "post", at + "rotate-secret/", expect=200, summary="A new secret, shown this once")
    ping = s.call(dept, "post", at + "test/", expect=202, summary="A ping event on its way")
    s.call(
        dept,
        "post",
        f"/api/v1/dept/deliveries/{ping['id']}/retry/",
        expect=202,
        summary="The delivery sent again",
    )

    # A service guide and a venue code.
    s.call(
        dept,
        "post",
        "/api/v1/dept/services/",
        {
            "code": "sbk-lost",
            "name": "社会保障卡挂失",
            "category": category.code,
            "channels": ["online"],
            "form_schema": {
                "type": "object",
                "required": ["reason"],
                "properties": {"reason": {"type": "string", "title": "挂失原因"}},
            },
            "materials": [{"name": "居民身份证"}],
            "keywords": ["挂失"],
            "time_limit_days": 1,
        },
        expect=201,
        summary="A service guide published",
    )
    s.call(
        dept,
        "patch",
        "/api/v1/dept/services/sbk-lost/",
        {"summary": "社保卡丢失后立即挂失"},
        expect=200,
        summary="A guide amended",
    )
    s.call(dept, "get", "/api/v1/dept/services/", expect=200, summary="The department's services")
    s.call(dept, "get", "/api/v1/dept/services/sbk-lost/", expect=200, summary="A service guide")
    venue = s.call(
        dept,
        "post",
        "/api/v1/dept/codes/",
        {"service": "sbk-lost", "label": "1 号窗口", "location": "市民之家"},
        expect=201,
        summary="A venue code put up",
    )
    code_at = f"/api/v1/dept/codes/{venue['id']}/"
    s.call(dept, "get", "/api/v1/dept/codes/", expect=200, summary="The department's venue codes")
    s.call(dept, "get", code_at, expect=200, summary="A venue code")
    s.call(dept, "get", code_at + "image.png", expect=200, summary="As a PNG")
    s.call(dept, "get", code_at + "image.svg", expect=200, summary="As an SVG")
    s.call(
        public,
        "post",
        "/api/v1/qr/resolve/",
        {"code": venue["code"]},
        expect=200,
        summary="A venue code resolved to its service",
    )
    s.call(dept, "post", code_at + "deactivate/", expect=200, summary="A venue code taken down")
    s.call(
        public,
        "post",
        "/api/v1/qr/resolve/",
        {"code": venue["code"]},
        expect=410,
        summary="A code taken down",
    )
    s.call(dept, "delete", at, expect=204, summary="An endpoint removed")

    def fee_order(**headers: str) -> tuple[Any, Any]:
        """An application to a fee-bearing service and its order at WeChat Pay."""
        application = s.call(
            me,
            "post",
            "/api/v1/applications/",
            {"service": "id-card-renew", "form": {"reason": "到期换领", "phone": phone}},
            expect=201,
            summary="An application awaiting payment",
        )
        order = s.call(
            me,
            "post",
            "/api/v1/payments/",
            {"application": application["id"], "channel": "wechat"},
            expect=201,
            summary="A payment order opened at WeChat Pay",
            **headers,
        )
        return application, order

    # A fee: the order, paid in the sandbox, the receipt, a partial refund.
    fee, order = fee_order(HTTP_IDEMPOTENCY_KEY="pay-1")
    s.call(
        me,
        "post",
        "/api/v1/payments/",
        {"application": fee["id"], "channel": "wechat"},
        expect=200,
        summary="The order already open",
    )
    s.call(
        me,
        "post",
        f"/api/v1/sandbox/payments/{order['order_no']}/pay/",
        {"result": "success"},
        expect=202,
        summary="Paid in the sandbox wallet; the channel's callback follows",
    )
    paid = f"/api/v1/payments/{order['id']}/"
    s.call(me, "get", paid, expect=200, summary="A paid order")
    s.call(me, "get", paid + "receipt/", expect=200, summary="The signed receipt")
    s.call(me, "get", paid + "receipt.svg", expect=200, summary="The printable receipt")
    s.call(me, "get", "/api/v1/payments/", expect=200, summary="The citizen's orders")
    s.call(
        dept,
        "get",
        "/api/v1/dept/payments/",
        query={"date": timezone.localdate().isoformat()},
        expect=200,
        summary="The department's payments of a day",
    )
    refunds_at = f"/api/v1/dept/payments/{order['order_no']}/refunds/"
    s.call(
        dept,
        "post",
        refunds_at,
        {"amount_fen": 500, "reason": "部分退费"},
        expect=201,
        summary="A partial refund",
        HTTP_IDEMPOTENCY_KEY="refund-1",
    )
    s.call(
        dept,
        "post",
        refunds_at,
        {"amount_fen": 5000},
        expect=422,
        summary="More than is left to refund",
    )
    s.call(dept, "get", refunds_at, expect=200, summary="An order's refunds")
    s.call(
        dept,
        "get",
        f"/api/v1/dept/payments/{order['order_no']}/",
        expect=200,
        summary="An order and its refunds",
    )

    # A channel's callback, as WeChat Pay sends it for another order.
    _other, opened = fee_order()
    trade = books.trade_pay(channel="wechat", order_no=opened["order_no"], succeed=True)
    built = sandbox_for("wechat").payment_notify(trade)
    assert built is not None
    headers, sent = built
    s.call(
        public,
        "post",
        "/api/v1/payments/notify/wechat/",
        raw=("application/json", sent),
        expect=204,
        summary="A WeChat Pay callback, acknowledged",
        **{
            "HTTP_" + k.upper().replace("-", "_"): v
            for k, v in headers.items()
            if k.lower() != "content-type"
        },
    )

    # The citizen takes their data, logs out, closes the account.
    s.call(me, "get", "/api/v1/me/export/", expect=200, summary="Everything kept on the citizen")
    s.call(
        public,
        "post",
        "/api/v1/auth/logout/",
        {"refresh": pair["refresh"]},
        expect=204,
        summary="Logged out",
    )
    s.call(me, "delete", "/api/v1/me/", expect=204, summary="The account closed")
    return s


def kept_form(story: Story) -> dict[str, Any]:
    """The story's bodies as the file keeps them."""
    return Placeholders(story.started, story.server_url).apply(story.told)


def shape(value: Any, path: str = "") -> set[str]:
    """The fields of a body, as paths."""
    if isinstance(value, dict):
        return {f"{path}.{k}" for k in value} | {
            p for k, v in value.items() for p in shape(v, f"{path}.{k}")
        }
    if isinstance(value, list):
        return {p for item in value for p in shape(item, f"{path}[]")}
    return set()


@pytest.fixture
def department_system() -> Iterator[DepartmentServer]:
    caches.clear()
    get_recorder.cache_clear()
    with DepartmentServer() as server:
        yield server
    caches.clear()


@pytest.mark.django_db(transaction=True)
def test_the_story_gives_every_example(
    schema, department, category, integrator_key, scanner_key, department_system
) -> None:
    told = kept_form(
        story(schema, department, category, integrator_key, scanner_key, department_system)
    )
    documented = {op["operationId"]: op for _, _, op in operations(schema)}
    assert set(told) == set(documented), "the story must reach every operation"
    wrong: dict[str, list[str]] = {}
    for op, example in told.items():
        operation = documented[op]
        if "request" in example:
            media = operation["requestBody"]["content"]["application/json"]
            found = problems_of(schema, media["schema"], example["request"]["value"])
            if found:
                wrong[f"{op} request"] = found
        for status, answer in example["responses"].items():
            if "value" in answer:
                media = operation["responses"][status]["content"][answer["content_type"]]
                found = problems_of(schema, media["schema"], answer["value"])
                if found:
                    wrong[f"{op} {status}"] = found
    assert wrong == {}
    if WRITE:
        EXAMPLES_FILE.write_text(
            json.dumps(told, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        )
        return
    kept = examples_load()
    told_statuses = {(op, status) for op, e in told.items() for status in e["responses"]}
    kept_statuses = {(op, status) for op, e in kept.items() for status in e["responses"]}
    assert told_statuses == kept_statuses, "regenerate with scripts/api_examples.py"
    stale = [
        f"{op} {where}"
        for op, example in told.items()
        for where, fresh, old in [
            ("request", example.get("request"), kept.get(op, {}).get("request")),
            *[
                (status, answer, kept.get(op, {}).get("responses", {}).get(status))
                for status, answer in example["responses"].items()
            ],
        ]
        if fresh is not None
        and (old is None or shape(fresh.get("value")) != shape(old.get("value")))
    ]
    assert stale == [], "the API changed: regenerate with scripts/api_examples.py"

"""The docs stay true to the code: docs/ and the README are checked here.

- Every fenced Python block with a ``title="…"`` in its info string is a
  runnable snippet. Each defines ``verify_event`` (a department checking an
  event), ``verify_star_code`` (a scanner checking a code offline) or
  ``revocations_apply`` (a scanner merging the revocation feed); it is run
  against what the project itself produces (an event delivered over HTTP by
  the routing engine, signed by ``services.routing.transport``; codes signed
  by the qr app, with the JWKS and the revocation feed the API serves) and
  must accept those, and refuse tampered, stale, foreign and revoked ones.
- Every fenced ``json`` block with ``event="<type>"`` has the shape of the
  body that type of event really has (keys, nesting, value types).
- Every relative link in the README and docs/ resolves to a file (and a
  heading, with ``#…``) inside the repository; nothing points outside it.
- Every API path in backticks (`` `/api/v1/...` ``, placeholders such as
  ``{number}`` or ``<id>`` allowed) resolves to a view of ours, or is a
  prefix under which such views are mounted; a method written before it
  (`` `POST /api/v1/...` ``) is one that view answers. So does every URL the
  guides' shell examples call.
- Error codes in the docs' tables exist, with the status written beside them,
  and the figures the docs quote are the settings' defaults.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404
from django.utils import timezone

from accounts import citizens
from accounts.models import User
from config import api as config_api
from config.errors import ERROR_CODES
from payments import tasks as payments_tasks
from payments.models import Refund
from qr import caches, codes, documents, keys, star_codes, venue_codes
from qr.models import VenueCode
from services.models import Endpoint
from services.routing import endpoints, events, transport
from tests.services.department import DepartmentServer, Received
from tests.services.factories import ServiceFactory

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def pages() -> list[Path]:
    """The README and every page of docs/."""
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _short(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- Reading Markdown ---------------------------------------------------------------------

_FENCE = re.compile(
    r"^(?P<fence>```+|~~~+)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S
)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    attributes: dict[str, str]
    code: str

    @property
    def where(self) -> str:
        return f"{_short(self.path)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        info = match["info"].strip()
        language = info.split(maxsplit=1)[0] if info else ""
        attributes = dict(re.findall(r'(\w+)="([^"]*)"', info))
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(path, line, language, attributes, match["body"]))
    return found


def prose(path: Path) -> str:
    """The page without its fenced blocks (links and paths live in prose)."""
    return _FENCE.sub("", path.read_text(encoding="utf-8"))


def snippets(function: str) -> list[Block]:
    """The runnable snippets (``python title="…"``) that define ``function``."""
    return [
        block
        for path in pages()
        for block in fenced_blocks(path)
        if block.language == "python"
        and "title" in block.attributes
        and re.search(rf"^def {function}\(", block.code, re.M)
    ]


def load(block: Block, **overrides: Any) -> dict[str, Any]:
    """Run a snippet as the module it is, and return its namespace."""
    namespace: dict[str, Any] = {"__name__": f"docs_snippet_{block.line}"}
    exec(compile(block.code, f"{block.where} ({block.attributes['title']})", "exec"), namespace)
    namespace.update(overrides)
    return namespace


# --- The story that makes every kind of event -----------------------------------------------

FORM = {"reason": "首次申领", "phone": "13800138000"}


@dataclass
class Story:
    endpoint: Endpoint
    secret: str
    server: DepartmentServer

    def received(self, event_type: str) -> Received:
        """The last request of this event type the department's server got."""
        for request in reversed(self.server.received):
            if request.payload["type"] == event_type:
                return request
        raise AssertionError(f"no {event_type} reached the department")


@pytest.fixture
def department_server() -> Iterator[DepartmentServer]:
    with DepartmentServer() as server:
        yield server


@pytest.fixture
def story(
    citizen,
    citizen_api,
    department,
    category,
    service,
    integrator_api,
    department_server,
    django_capture_on_commit_callbacks,
    settings,
) -> Story:
    """A department with one endpoint for every event; a citizen applies,
    is asked for more, supplements; applies again and withdraws; applies
    for a paid service, pays, and is partly refunded."""
    settings.PAYMENTS_QUERY_AFTER_SECONDS = 0
    run = django_capture_on_commit_callbacks
    endpoint, secret = endpoints.endpoint_create(
        department=department,
        url=department_server.url("/hrss/events"),
        events=list(events.SUBSCRIBABLE),
        description="审批系统",
        actor=None,
    )

    def ok(response: Any, status: int = 200) -> dict[str, Any]:
        assert response.status_code == status, response.content
        return response.json() if response.content else {}

    def post(client: Any, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
        with run(execute=True):
            return ok(client.post(path, body, format="json"), status)

    with run(execute=True):
        endpoints.endpoint_ping(endpoint=endpoint, actor=None)

    first = post(citizen_api, "/api/v1/applications/", {"service": service.code, "form": FORM}, 201)
    for status, note in (("accepted", "材料齐全，予以受理"), ("needs_info", "请补充份数")):
        post(
            integrator_api,
            f"/api/v1/dept/applications/{first['number']}/status/",
            {"status": status, "note": note, "reference": "HRSS-2026-0001"},
        )
    post(citizen_api, f"/api/v1/applications/{first['id']}/supplement/", {"form": {"copies": 2}})

    second = post(
        citizen_api, "/api/v1/applications/", {"service": service.code, "form": FORM}, 201
    )
    post(citizen_api, f"/api/v1/applications/{second['id']}/cancel/", {"reason": "不需要了"})

    fee_service = ServiceFactory(
        code="sbk-replace",
        name="社会保障卡补换",
        department=department,
        category=category,
        fee_fen=2000,
    )
    paid = post(
        citizen_api, "/api/v1/applications/", {"service": fee_service.code, "form": FORM}, 201
    )
    order = post(
        citizen_api, "/api/v1/payments/", {"application": paid["id"], "channel": "wechat"}, 201
    )
    post(
        citizen_api,
        f"/api/v1/sandbox/payments/{order['order_no']}/pay/",
        {"result": "success"},
        202,
    )
    refund = post(
        integrator_api,
        f"/api/v1/dept/payments/{order['order_no']}/refunds/",
        {"amount_fen": 500, "reason": "材料费减免"},
        201,
    )
    if Refund.objects.get(pk=refund["id"]).status == "pending":
        with run(execute=True):
            payments_tasks.payments_sweep()
    return Story(endpoint=endpoint, secret=secret, server=department_server)


# --- (a) The snippets accept what the platform signs, and nothing else ------------------------


def test_the_docs_carry_runnable_snippets_for_departments_and_scanners() -> None:
    assert len(snippets("verify_event")) >= 2, "departments.md: standardwebhooks and stdlib"
    assert len(snippets("verify_star_code")) >= 2, "scanners.md: jwcrypto and cryptography"
    assert len(snippets("revocations_apply")) >= 1, "scanners.md: merging the revocation feed"


def test_every_titled_python_block_is_a_snippet_this_test_runs() -> None:
    """A ``title`` promises a tested snippet: one defining none of the
    functions this module knows would silently go untested."""
    known = ("verify_event", "verify_star_code", "revocations_apply")
    for path in pages():
        for block in fenced_blocks(path):
            if block.language == "python" and "title" in block.attributes:
                assert any(re.search(rf"^def {name}\(", block.code, re.M) for name in known), (
                    f"{block.where}: a titled snippet must define one of {known}"
                )


def test_every_python_block_compiles() -> None:
    for path in pages():
        for block in fenced_blocks(path):
            if block.language == "python":
                compile(block.code, block.where, "exec")


def refuses(check: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Whether ``check`` refuses with the error its snippet says it raises
    (its own ``InvalidEvent`` or ``CodeRefused``, or standardwebhooks'
    ``WebhookVerificationError``); any other error is a broken snippet and
    fails the test."""
    namespace = check.__globals__  # the snippet's module, as load() ran it
    kinds: list[type[BaseException]] = [
        namespace[name] for name in ("InvalidEvent", "CodeRefused") if name in namespace
    ]
    if "Webhook" in namespace:
        from standardwebhooks.webhooks import WebhookVerificationError

        kinds.append(WebhookVerificationError)
    assert kinds, "the snippet names no error of its own"
    try:
        check(*args, **kwargs)
    except tuple(kinds):
        return True
    return False


def _tampered(body: bytes) -> bytes:
    """The same event with one character of its data changed."""
    event = json.loads(body)
    event["data"]["application"]["status"] = "accepted"
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.django_db
@pytest.mark.parametrize("snippet", snippets("verify_event"), ids=lambda b: b.attributes["title"])
def test_a_department_verifies_a_real_delivery_and_refuses_a_forged_one(
    snippet, story, django_capture_on_commit_callbacks
) -> None:
    verify_event = load(snippet)["verify_event"]
    received = story.received("application.submitted")

    event = verify_event(story.secret, received.headers, received.body)

    assert event == json.loads(received.body)
    assert event["data"]["application"]["applicant"]["name"] == "张三丰"
    refused = [
        (story.secret, received.headers, _tampered(received.body)),
        (story.secret, received.headers, received.body + b" "),
        (transport.secret_generate(), received.headers, received.body),
        (story.secret, {**received.headers, "webhook-id": "msg_0"}, received.body),
        (
            story.secret,
            {
                **received.headers,
                "webhook-timestamp": str(int(received.headers["webhook-timestamp"]) + 1),
            },
            received.body,
        ),
        (
            story.secret,
            {k: v for k, v in received.headers.items() if k != "webhook-signature"},
            received.body,
        ),
    ]
    for number, (secret, headers, body) in enumerate(refused):
        assert refuses(verify_event, secret, headers, body), f"accepted forgery {number}"

    # Signed by the platform ten minutes ago (a captured request played again).
    stale = transport.signature_headers(
        msg_id=received.headers["webhook-id"],
        body=received.body.decode(),
        keys=[story.secret],
        now=timezone.now() - dt.timedelta(minutes=10),
    )
    assert refuses(verify_event, story.secret, stale, received.body)


@pytest.mark.django_db
@pytest.mark.parametrize("snippet", snippets("verify_event"), ids=lambda b: b.attributes["title"])
def test_during_a_secret_rotation_either_secret_verifies(
    snippet, story, django_capture_on_commit_callbacks
) -> None:
    verify_event = load(snippet)["verify_event"]
    new_secret = endpoints.endpoint_rotate_secret(endpoint=story.endpoint, actor=None)
    with django_capture_on_commit_callbacks(execute=True):
        endpoints.endpoint_ping(endpoint=story.endpoint, actor=None)
    ping = story.received("ping")
    assert len(ping.headers["webhook-signature"].split()) == 2  # new and previous secret

    for secret in (new_secret, story.secret):
        assert verify_event(secret, ping.headers, ping.body)["type"] == "ping"
    assert refuses(verify_event, transport.secret_generate(), ping.headers, ping.body)


@pytest.fixture
def scanner_view(db) -> Iterator[None]:
    """Empty key caches around each test (the database is rolled back under them)."""
    caches.clear()
    yield
    caches.clear()


def _jwks(api) -> dict[str, Any]:
    response = api.get("/api/v1/qr/keys/")
    assert response.status_code == 200
    return response.json()


def _with_claims(code: str, **changes: Any) -> str:
    """``code`` with its claims changed and its signature kept: a forgery."""
    header, claims, signature = code.removeprefix(codes.PREFIX).split(".")
    changed = {**json.loads(codes.b64url_decode(claims)), **changes}
    payload = codes.b64url(json.dumps(changed, separators=(",", ":")).encode())
    return f"{codes.PREFIX}{header}.{payload}.{signature}"


def _signed(claims: dict[str, Any]) -> str:
    """Signed by the platform's current key, as the qr app signs."""
    kid, private = keys.keyring_ensure()
    return codes.sign(claims, kid=kid, private_key=private)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "snippet", snippets("verify_star_code"), ids=lambda b: b.attributes["title"]
)
def test_a_scanner_verifies_real_codes_offline_and_refuses_the_rest(
    snippet, scanner_view, api, citizen, department, service
) -> None:
    verify = load(snippet, ISSUER=settings.QR_ISSUER)["verify_star_code"]
    issued = star_codes.star_code_issue(user=citizen)
    venue = venue_codes.venue_code_create(department=department, service=service, label="3 号窗口")
    jwks = _jwks(api)

    claims = verify(issued.code, jwks)
    assert (claims["sub"], claims["knd"], claims["lvl"]) == (citizen.subject, "citizen", 2)
    assert verify(venue.code, jwks)["sub"] == service.code
    exp = claims["exp"]
    assert verify(issued.code, jwks, now=exp + 5)  # a scanner's clock may run 15 s ahead

    now = time.time()
    header, payload, signature = issued.code.removeprefix(codes.PREFIX).split(".")
    flipped = ("A" if signature[10] != "A" else "B").join((signature[:10], signature[11:]))
    refused = {
        "tampered claims": (_with_claims(issued.code, lvl=3), now),
        "tampered signature": (f"{codes.PREFIX}{header}.{payload}.{flipped}", now),
        "no prefix": (issued.code.removeprefix(codes.PREFIX), now),
        "not a code": ("https://example.com/", now),
        "expired": (issued.code, exp + codes.CLOCK_SKEW_SECONDS + 1),
        "not yet valid": (issued.code, claims["iat"] - codes.CLOCK_SKEW_SECONDS - 60),
        "another issuer": (
            _signed({**claims, "iss": "https://example.com", "jti": secrets.token_urlsafe(12)}),
            now,
        ),
        "a citizen code without exp": (
            _signed({k: v for k, v in claims.items() if k != "exp"}),
            now,
        ),
        "a receipt": (
            documents.document_sign({"knd": "receipt", "sub": "P2026120700000000000001"}),
            now,
        ),
    }
    accepted = [
        name for name, (text, when) in refused.items() if not refuses(verify, text, jwks, now=when)
    ]
    assert not accepted
    other_keys = {"keys": [{**k, "kid": k["kid"] + "-old"} for k in jwks["keys"]]}
    assert refuses(verify, issued.code, other_keys)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "snippet", snippets("verify_star_code"), ids=lambda b: b.attributes["title"]
)
def test_offline_verification_follows_the_revocation_feed(
    snippet, scanner_view, api, scanner_api, citizen, other_citizen, department, service, settings
) -> None:
    settings.QR_REVOCATIONS_LAG_SECONDS = 0
    verify = load(snippet, ISSUER=settings.QR_ISSUER)["verify_star_code"]
    apply = load(snippets("revocations_apply")[0])["revocations_apply"]
    venue = venue_codes.venue_code_create(department=department, service=service, label="3 号窗口")
    suspended_code = star_codes.star_code_issue(user=citizen).code
    jwks = _jwks(api)
    assert verify(venue.code, jwks) and verify(suspended_code, jwks)

    a_second_ago = timezone.now() - dt.timedelta(seconds=1)
    venue_codes.venue_code_deactivate(venue=venue)
    VenueCode.objects.filter(pk=venue.pk).update(deactivated_at=a_second_ago)
    issued_at = json.loads(codes.b64url_decode(suspended_code.split(".")[1]))["iat"]
    User.objects.filter(pk=citizen.pk).update(
        is_active=False, deactivated_at=dt.datetime.fromtimestamp(issued_at, tz=dt.UTC)
    )
    # Suspended long ago and reinstated since: the feed still lists the subject.
    User.objects.filter(pk=other_citizen.pk).update(
        is_active=False, deactivated_at=a_second_ago - dt.timedelta(minutes=5)
    )
    feed = scanner_api.get("/api/v1/qr/revocations/")
    assert feed.status_code == 200, feed.json()
    revoked: set[str] = set()
    inactive_since: dict[str, float] = {}
    since = apply(feed.json(), revoked, inactive_since)
    citizens.user_set_active(user=User.objects.get(pk=other_citizen.pk), active=True, actor=None)
    reinstated_code = star_codes.star_code_issue(user=User.objects.get(pk=other_citizen.pk)).code

    assert since == feed.json()["until"]
    assert revoked == {venue.jti} and set(inactive_since) == {
        citizen.subject,
        other_citizen.subject,
    }
    for text in (venue.code, suspended_code):
        assert refuses(verify, text, jwks, revoked=revoked, inactive_since=inactive_since)
    assert verify(reinstated_code, jwks, revoked=revoked, inactive_since=inactive_since)


# --- The example events have the shape of real ones -------------------------------------------


def _shape(value: Any) -> Any:
    """Keys and value types, recursively; what a citizen typed (form,
    supplement) is free-form and only has to be an object."""
    if isinstance(value, dict):
        return {
            key: ("object" if key in ("form", "supplement") else _shape(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def _same_shape(documented: Any, real: Any, where: str = "") -> list[str]:
    """Where ``documented`` and ``real`` differ in shape (None stands for
    any type: a nullable member may be null in one and set in the other)."""
    if isinstance(documented, dict) and isinstance(real, dict):
        problems = [f"{where}.{k}: only in the docs" for k in documented.keys() - real.keys()]
        problems += [f"{where}.{k}: missing from the docs" for k in real.keys() - documented.keys()]
        for key in documented.keys() & real.keys():
            problems += _same_shape(documented[key], real[key], f"{where}.{key}")
        return problems
    if "NoneType" in (documented, real) or documented == real:
        return []
    return [f"{where}: {documented} in the docs, {real} in a real event"]


def event_examples() -> dict[str, Block]:
    found: dict[str, Block] = {}
    for path in pages():
        for block in fenced_blocks(path):
            if block.language == "json" and "event" in block.attributes:
                assert block.attributes["event"] not in found, f"{block.where}: a second example"
                found[block.attributes["event"]] = block
    return found


def test_every_event_type_has_an_example() -> None:
    assert set(event_examples()) == {events.PING, *events.SUBSCRIBABLE}


@pytest.mark.django_db
def test_the_example_events_have_the_shape_of_real_ones(story) -> None:
    for event_type, block in event_examples().items():
        documented = json.loads(block.code)
        real = story.received(event_type).payload
        assert documented["type"] == event_type, block.where
        problems = _same_shape(_shape(documented), _shape(real))
        assert not problems, f"{block.where}: {problems}"


def test_the_shape_check_notices_a_renamed_member() -> None:
    real: dict[str, Any] = {"type": "ping", "data": {"endpoint": "x", "department": "hrss"}}
    renamed = copy.deepcopy(real)
    renamed["data"]["dept"] = renamed["data"].pop("department")
    retyped = copy.deepcopy(real)
    retyped["data"]["endpoint"] = 7

    assert _same_shape(_shape(real), _shape(real)) == []
    assert _same_shape(_shape(renamed), _shape(real))
    assert _same_shape(_shape(retyped), _shape(real))


# --- (b) Links stay inside the repository and resolve -----------------------------------------

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
_EXTERNAL = ("http://", "https://", "mailto:")


def links(path: Path) -> list[str]:
    text = prose(path)
    return _LINK.findall(text) + _REFERENCE.findall(text)


def anchors(path: Path) -> set[str]:
    """The ids GitHub gives the page's headings."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose(path), re.M):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def link_problems(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        if target.startswith(_EXTERNAL):
            continue
        location, _, fragment = target.partition("#")
        if location.startswith(("/", "\\", "file:")) or re.match(r"^[A-Za-z]:", location):
            problems.append(f"{target}: an absolute path")
            continue
        file = (path.parent / location).resolve() if location else path
        if not file.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not file.exists():
            problems.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            problems.append(f"{target}: no heading #{fragment} in {_short(file)}")
    return problems


def test_every_relative_link_resolves_inside_the_repository() -> None:
    checked = 0
    for path in pages():
        assert not link_problems(path), f"{_short(path)}: {link_problems(path)}"
        checked += len(links(path))
    assert checked >= 30  # the index and the guides' tables of contents, at least


def test_the_readme_and_the_index_lead_to_every_guide() -> None:
    guides = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert guides >= {"departments.md", "scanners.md", "mobile.md"}
    index = set(links(DOCS / "README.md"))
    readme = set(links(ROOT / "README.md"))
    for guide in guides:
        assert guide in index, f"docs/README.md does not link {guide}"
        assert f"docs/{guide}" in readme, f"README.md does not link docs/{guide}"
    assert "docs/README.md" in readme


def test_nothing_points_outside_the_repository() -> None:
    for path in pages():
        text = path.read_text(encoding="utf-8")
        for outside in ("../shared", "/work/", "DESIGN.md", "CONVENTIONS.md"):
            assert outside not in text, f"{_short(path)} mentions {outside}"


def test_the_link_check_refuses_what_it_should(tmp_path) -> None:
    page = DOCS / "departments.md"
    bad = [
        "[design](../shared/DESIGN.md)",
        "[abs](/work/main/README.md)",
        "[gone](missing.md)",
        "[anchor](scanners.md#no-such-heading)",
        "[self](#nowhere)",
    ]
    for link in bad:
        probe = DOCS / f"_probe_{secrets.token_hex(4)}.md"
        probe.write_text(f"# Probe\n\nSee {link}.\n", encoding="utf-8")
        try:
            assert link_problems(probe), link
        finally:
            probe.unlink()
    assert not link_problems(page)


# --- (c) API paths written in the docs are routes of ours ---------------------------------------

_CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_PATH = re.compile(
    r"(?:(?P<methods>(?:GET|POST|PATCH|PUT|DELETE)(?:\|(?:GET|POST|PATCH|PUT|DELETE))*)\s+)?(?P<path>/api/[^\s`'\")]*)"
)
_PLACEHOLDER = re.compile(r"\{([^}|]+)\}|<(?:\w+:)?([^>]+)>")
_ALTERNATIVES = re.compile(r"\{([^}]*\|[^}]*)\}")
SAMPLES = {
    "number": "CS20261207000001",
    "order_no": "P202612079FDAD84E697581",
    "code": "sbk-apply",
    "channel": "wechat",
}
SAMPLE_ID = str(uuid.UUID(int=1))


@dataclass(frozen=True)
class ApiMention:
    where: str
    methods: tuple[str, ...]
    path: str


_SHELL_URL = re.compile(r"(?:-X (?P<method>[A-Z]+) )?https?://[^/\s'\"]+(?P<path>/api/[^\s'\"\\]*)")


def api_mentions() -> list[ApiMention]:
    found = []
    for path in pages():
        for span in _CODE_SPAN.findall(prose(path)):
            for match in _PATH.finditer(span):
                methods = tuple((match["methods"] or "").split("|")) if match["methods"] else ()
                raw = match["path"].split("?")[0].rstrip(".,;:")
                found.append(ApiMention(_short(path), methods, raw))
        if path.parent != DOCS:
            continue  # the README's walkthroughs use shell variables for ids
        for block in fenced_blocks(path):
            if block.language == "sh":
                for match in _SHELL_URL.finditer(block.code):
                    methods = (match["method"],) if match["method"] else ("GET",)
                    found.append(ApiMention(block.where, methods, match["path"].split("?")[0]))
    return found


def concrete(path: str) -> list[str]:
    """``path`` with its placeholders filled in; ``{png|svg}`` gives one each."""
    alternatives = _ALTERNATIVES.search(path)
    if alternatives:
        return [
            one
            for choice in alternatives[1].split("|")
            for one in concrete(path[: alternatives.start()] + choice + path[alternatives.end() :])
        ]

    def sample(match: re.Match[str]) -> str:
        name = (match[1] or match[2]).strip()
        return SAMPLES.get(name, SAMPLE_ID if "id" in name.split("_") else "x")

    return [_PLACEHOLDER.sub(sample, path)]


def _routes(patterns: list[Any], prefix: str = "") -> Iterator[str]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route


def view_of(path: str) -> Callable[..., Any] | None:
    """The view ``path`` reaches, None for the catch-all 404 of /api/."""
    try:
        match = resolve(path)
    except Resolver404:
        return None
    return None if match.func is config_api.api_not_found else match.func


def api_path_problems(mention: ApiMention) -> list[str]:
    problems = []
    routes = list(_routes(get_resolver().url_patterns))
    for path in concrete(mention.path):
        view = view_of(path)
        if view is None:
            mount = path.lstrip("/")
            mounted = any(r.lstrip("^").startswith(mount) for r in routes)
            if path.endswith("/") and mounted and not mention.methods:
                continue  # a prefix the routes are mounted under
            problems.append(f"{mention.where}: {mention.path} ({path}) is no route")
            continue
        cls = getattr(view, "view_class", None) or getattr(view, "cls", None)
        for method in mention.methods:
            if cls is not None and not hasattr(cls, method.lower()):
                problems.append(f"{mention.where}: {method} {mention.path} is not answered")
    return problems


def test_every_api_path_in_the_docs_resolves() -> None:
    mentions = api_mentions()
    problems = [problem for mention in mentions for problem in api_path_problems(mention)]
    assert not problems, "\n".join(problems)
    assert len({m.path for m in mentions}) >= 50


def test_the_path_check_refuses_what_it_should() -> None:
    for bad in (
        ApiMention("probe", (), "/api/v1/dept/endpoint/{id}/"),
        ApiMention("probe", (), "/api/v1/qr/verify"),
        ApiMention("probe", ("DELETE",), "/api/v1/qr/verify/"),
        ApiMention("probe", (), "/api/v1/dept/codes/{id}/image.{png|gif}"),
        ApiMention("probe", ("GET",), "/api/v1/dept/"),
    ):
        assert api_path_problems(bad), bad
    assert not api_path_problems(
        ApiMention("probe", ("GET",), "/api/v1/dept/applications/{number}/")
    )
    assert not api_path_problems(ApiMention("probe", (), "/api/v1/dept/"))


# --- Error codes and figures ----------------------------------------------------------------------

_ERROR_ROW = re.compile(r"^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|", re.M)


def test_the_error_codes_in_the_docs_exist_with_their_status() -> None:
    rows = [
        (path, code, int(status))
        for path in pages()
        for code, status in _ERROR_ROW.findall(prose(path))
    ]
    assert len(rows) >= 40
    for path, code, status in rows:
        assert code in ERROR_CODES, f"{_short(path)}: no error code {code}"
        assert ERROR_CODES[code].status == status, (
            f"{_short(path)}: {code} is {ERROR_CODES[code].status}"
        )


def test_the_reasons_the_scanner_guide_lists_are_the_verify_apis() -> None:
    listed = set(re.findall(r"^\|\s*`([a-z_]+)`\s*\|", prose(DOCS / "scanners.md"), re.M))
    assert {reason.value for reason in codes.Reason} <= listed


def _figures() -> list[tuple[str, str]]:
    """(page, text it must contain) for the settings the docs quote."""
    access = settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]
    assert isinstance(access, dt.timedelta)
    minutes = access // dt.timedelta(minutes=1)
    return [
        ("departments.md", "`" + ",".join(map(str, settings.ROUTING_RETRY_SCHEDULE)) + "` seconds"),
        ("departments.md", f"±{settings.ROUTING_RETRY_JITTER * 100:g} % of random jitter"),
        ("departments.md", f"`ROUTING_BREAKER_THRESHOLD` ({settings.ROUTING_BREAKER_THRESHOLD})"),
        ("departments.md", f"({settings.ROUTING_SECRET_OVERLAP_HOURS} hours by default"),
        ("departments.md", f"**2xx within {settings.ROUTING_TIMEOUT_SECONDS:g} seconds**"),
        ("scanners.md", f"`STAR_CODE_TTL` ({settings.STAR_CODE_TTL} s by default)"),
        ("scanners.md", f"allowing `{codes.CLOCK_SKEW_SECONDS}` seconds of clock difference"),
        ("scanners.md", f"({settings.QR_VERIFY_RATE.split('/')[0]} a minute per key)"),
        ("scanners.md", f"1 to {settings.QR_OFFLINE_BATCH_MAX} scans"),
        ("mobile.md", f"`JWT_ACCESS_MINUTES` ({minutes} minutes)"),
        ("mobile.md", f"`STAR_CODE_TTL` ({settings.STAR_CODE_TTL} s)"),
        (
            "mobile.md",
            f"the {settings.OTP_MAX_ATTEMPTS}th wrong code (`OTP_MAX_ATTEMPTS`)",
        ),
    ]


@pytest.mark.parametrize(("page", "text"), _figures())
def test_the_docs_quote_the_settings_defaults(page, text) -> None:
    assert text in (DOCS / page).read_text(encoding="utf-8"), f"{page} should say: {text}"


def test_the_retry_table_names_what_the_engine_retries() -> None:
    """408, 429 and 5xx are retried; 410 disables; other answers are final."""
    from services.routing import deliveries

    assert all(deliveries._retryable(code) for code in (None, 408, 429, 500, 503))
    assert not any(deliveries._retryable(code) for code in (301, 400, 401, 404, 410, 422))
    text = (DOCS / "departments.md").read_text(encoding="utf-8")
    assert "| no answer, connection error, timeout, 408, 429, 5xx |" in text
    assert "| 410 Gone |" in text

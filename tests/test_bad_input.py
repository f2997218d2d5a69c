"""No documented endpoint answers bad input with a 500 or an HTML page.

The operations come from the OpenAPI schema itself, so every endpoint added
later is covered without touching this file. Each is called as every kind of
caller with junk bodies and wrong types for each documented field.
"""

from __future__ import annotations

import json
import re
import uuid
from functools import cache

import pytest
from drf_spectacular.generators import SchemaGenerator

from tests.conftest import client_for, client_with_key

JUNK_BODIES = [
    "[]",
    '"text"',
    "null",
    "12",
    "{}",
    '{"a": {"b": {"c": [1, 2, {"d": null}]}}}',
    "\ufeff{}",
    '{"\\u0000": "\\u0000"}',
    # Deep, but within what the JSON decoder itself takes.
    "[" * 450 + "]" * 450,
    '{"a": ' * 700 + "1" + "}" * 700,
    '{"form": ' + '{"a": [' * 300 + "1" + "]}" * 300 + "}",
    '{"form": {"reason": "\\ud800"}, "service": "\\udfff", "\\ud83d": 1}',
]
WRONG_VALUES = [
    None,
    12,
    -1,
    1.5e308,
    True,
    [],
    {},
    ["x"],
    {"k": "v"},
    "",
    " ",
    "x" * 5000,
    "\u0000",
    "💥",
]


@cache
def operations() -> list[tuple[str, str, tuple[str, ...]]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            fields: tuple[str, ...] = ()
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                ref = body["schema"].get("$ref", "")
                component = schema["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
                fields = tuple(component.get("properties", {}))
            found.append((path, method, fields))
    return found


def concrete(path: str, value: str | None = None) -> str:
    def fill(match: re.Match) -> str:
        if value is not None:
            return value
        return str(uuid.uuid4()) if "id" in match.group(0) else "nope"

    return re.sub(r"\{[^}]+\}", fill, path)


def assert_clean_refusal(response) -> None:
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        assert response["Content-Type"] == "application/problem+json", response.content[:200]
        body = response.json()
        assert body["status"] == response.status_code
        assert isinstance(body["code"], str) and body["code"]


@pytest.fixture
def callers(citizen, integrator_key, scanner_key):
    from rest_framework.test import APIClient

    return {
        "anonymous": APIClient(),
        "citizen": client_for(citizen),
        "integrator": client_with_key(integrator_key.raw),
        "scanner": client_with_key(scanner_key.raw),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "method", "fields"), operations(), ids=lambda v: str(v))
def test_junk_input_is_refused_cleanly(callers, path, method, fields) -> None:
    url = concrete(path)
    for caller in callers.values():
        call = getattr(caller, method)
        if method in ("post", "put", "patch"):
            for body in JUNK_BODIES:
                assert_clean_refusal(call(url, body, content_type="application/json"))
            assert_clean_refusal(call(url, "<xml/>", content_type="application/xml"))
            for field in fields:
                for value in WRONG_VALUES:
                    assert_clean_refusal(
                        call(url, json.dumps({field: value}), content_type="application/json")
                    )
        else:
            assert_clean_refusal(
                call(url, {"page": "x", "cursor": "%%%", "page_size": "-1", "q": "\u0000"})
            )


@pytest.mark.django_db
@pytest.mark.parametrize("depth", [65, 400, 600, 900, 5000])
def test_deeply_nested_json_is_a_400_at_any_depth(api, depth) -> None:
    for body in ("[" * depth + "]" * depth, '{"a": ' * depth + "1" + "}" * depth):
        response = api.post("/api/v1/auth/otp/", body, content_type="application/json")
        assert response.status_code == 400
        assert response.json()["code"] == "malformed_request"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "name"),
    [
        ('{"phone": "13800138000", "phone": "13900139000"}', "phone"),
        ('{"phone": "13800138000", "x": {"nested": 1, "nested": 2}}', "nested"),
        ('[{"amount_fen": 5, "amount_fen": 1900}]', "amount_fen"),
    ],
)
def test_a_name_given_twice_in_one_json_object_is_a_400(api, body, name) -> None:
    """Which value counts is up to each reader (the last here, the first in
    a department's log or a proxy): a body that says two things is refused."""
    response = api.post("/api/v1/auth/otp/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_request"
    assert name in response.json()["detail"]


def _cursor(query: str) -> str:
    import base64

    return base64.b64encode(query.encode()).decode()


TAMPERED_CURSORS = [
    _cursor("p=garbage"),
    _cursor("r=1&p=2026-13-01T00:00:00"),
    _cursor("p=\x00"),
    _cursor("o=-5"),
    _cursor("p=9999-12-31T23:59:59-12:00"),
    _cursor("p=0001-01-01 00:00:00"),
    "cD0",
]


@pytest.mark.django_db
@pytest.mark.parametrize("cursor", TAMPERED_CURSORS)
def test_a_tampered_cursor_is_a_400_on_every_cursor_list(callers, cursor) -> None:
    lists = {
        "citizen": [
            "/api/v1/applications/",
            "/api/v1/me/messages/",
            "/api/v1/me/scans/",
            "/api/v1/payments/",
        ],
        "integrator": [
            "/api/v1/dept/applications/",
            "/api/v1/dept/deliveries/",
            "/api/v1/dept/payments/",
        ],
    }
    for caller, urls in lists.items():
        for url in urls:
            response = callers[caller].get(url, {"cursor": cursor})
            assert response.status_code == 400, (url, response.content[:300])
            assert response.json()["code"] == "pagination_invalid"


@pytest.mark.django_db
def test_json_nested_past_the_interpreters_limit_is_a_400(api) -> None:
    response = api.post("/api/v1/auth/otp/", "[" * 5000, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_request"


# The methods of each route, as DESIGN §5 gives them (the contract, not what
# the views happen to define). A new route goes here too.
CONTRACT: dict[str, set[str]] = {
    "/api/v1/applications/": {"get", "post"},
    "/api/v1/applications/{application_id}/": {"get"},
    "/api/v1/applications/{application_id}/cancel/": {"post"},
    "/api/v1/applications/{application_id}/rating/": {"post"},
    "/api/v1/applications/{application_id}/supplement/": {"post"},
    "/api/v1/auth/logout/": {"post"},
    "/api/v1/auth/otp/": {"post"},
    "/api/v1/auth/token/": {"post"},
    "/api/v1/auth/token/refresh/": {"post"},
    "/api/v1/categories/": {"get"},
    "/api/v1/departments/": {"get"},
    "/api/v1/dept/applications/": {"get"},
    "/api/v1/dept/applications/{number}/": {"get"},
    "/api/v1/dept/applications/{number}/status/": {"post"},
    "/api/v1/dept/codes/": {"get", "post"},
    "/api/v1/dept/codes/{code_id}/": {"get"},
    "/api/v1/dept/codes/{code_id}/deactivate/": {"post"},
    "/api/v1/dept/codes/{code_id}/image.png": {"get"},
    "/api/v1/dept/codes/{code_id}/image.svg": {"get"},
    "/api/v1/dept/deliveries/": {"get"},
    "/api/v1/dept/deliveries/{delivery_id}/": {"get"},
    "/api/v1/dept/deliveries/{delivery_id}/retry/": {"post"},
    "/api/v1/dept/endpoints/": {"get", "post"},
    "/api/v1/dept/endpoints/{endpoint_id}/": {"get", "patch", "delete"},
    "/api/v1/dept/endpoints/{endpoint_id}/rotate-secret/": {"post"},
    "/api/v1/dept/endpoints/{endpoint_id}/test/": {"post"},
    "/api/v1/dept/payments/": {"get"},
    "/api/v1/dept/payments/{order_no}/": {"get"},
    "/api/v1/dept/payments/{order_no}/refunds/": {"get", "post"},
    "/api/v1/dept/services/": {"get", "post"},
    "/api/v1/dept/services/{code}/": {"get", "patch"},
    "/api/v1/me/": {"get", "patch", "delete"},
    "/api/v1/me/export/": {"get"},
    "/api/v1/me/messages/": {"get"},
    "/api/v1/me/messages/{message_id}/read/": {"post"},
    "/api/v1/me/messages/read-all/": {"post"},
    "/api/v1/me/real-name/": {"post"},
    "/api/v1/me/scans/": {"get"},
    "/api/v1/me/star-code/": {"get"},
    "/api/v1/me/star-code/image.png": {"get"},
    "/api/v1/me/star-code/image.svg": {"get"},
    "/api/v1/payments/": {"get", "post"},
    "/api/v1/payments/notify/{channel}/": {"post"},
    "/api/v1/payments/{order_id}/": {"get"},
    "/api/v1/payments/{order_id}/receipt.svg": {"get"},
    "/api/v1/payments/{order_id}/receipt/": {"get"},
    "/api/v1/qr/keys/": {"get"},
    "/api/v1/qr/resolve/": {"post"},
    "/api/v1/qr/revocations/": {"get"},
    "/api/v1/qr/scans/": {"post"},
    "/api/v1/qr/verify/": {"post"},
    "/api/v1/sandbox/payments/{order_no}/pay/": {"post"},
    "/api/v1/services/": {"get"},
    "/api/v1/services/{code}/": {"get"},
}


def test_the_schema_documents_exactly_the_contracts_methods() -> None:
    documented: dict[str, set[str]] = {}
    for path, method, _fields in operations():
        documented.setdefault(path, set()).add(method)
    assert documented == CONTRACT


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "allowed"), sorted(CONTRACT.items()), ids=lambda v: str(v))
def test_each_route_answers_only_its_methods(callers, path, allowed) -> None:
    url = concrete(path)
    for method in {"get", "post", "put", "patch", "delete"} - allowed:
        statuses = set()
        for caller in callers.values():
            call = getattr(caller, method)
            response = (
                call(url) if method == "get" else call(url, "{}", content_type="application/json")
            )
            assert_clean_refusal(response)
            statuses.add(response.status_code)
        # Callers the route is not for are refused first; its own caller
        # learns the method is not there.
        assert statuses <= {401, 403, 405}, (method, statuses)
        assert 405 in statuses, (method, statuses)


@pytest.mark.django_db
def test_a_nul_in_the_query_is_refused_for_what_it_is(api) -> None:
    """No JSON was sent: the refusal does not say the body is bad JSON."""
    response = api.get("/api/v1/services/", {"q": "社保\x00"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "malformed_request"
    assert "JSON" not in body["title"] and "NUL" in body["detail"]


# --- The charset a body names ------------------------------------------------------------


def _bz2(text: str) -> bytes:
    import bz2

    return bz2.compress(text.encode(), 9)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("charset", "body"),
    [
        # A few hundred bytes that a codec would make into gigabytes.
        ("bz2", _bz2('{"phone": "13800138001", "x": "' + "a" * 200_000 + '"}')),
        ("zlib", b"not zlib data"),
        ("base64", b"eyJwaG9uZSI6ICIxMzgwMDEzODAwMSJ9"),
        ("hex", b"7b7d"),
        ("rot13", b'{"cubar": "13800138001"}'),
        ("uu", b"begin 666 x\n"),
    ],
    ids=lambda value: value if isinstance(value, str) else "body",
)
def test_a_body_in_a_codec_that_is_not_a_text_encoding_is_refused(api, charset, body) -> None:
    """Python knows bz2, zlib, base64… as codecs: a charset naming one made
    the parser decompress the body (past every size bound) or fail (500)."""
    response = api.post(
        "/api/v1/auth/otp/", body, content_type=f"application/json; charset={charset}"
    )
    assert response.status_code == 415
    problem = response.json()
    assert problem["code"] == "unsupported_media_type"
    assert charset in problem["detail"]


@pytest.mark.django_db
def test_a_body_in_a_text_encoding_it_names_is_read(api) -> None:
    response = api.post(
        "/api/v1/auth/otp/",
        '{"phone": "13800138001"}'.encode("utf-16"),
        content_type="application/json; charset=utf-16",
    )
    assert response.status_code == 202, response.content


@pytest.mark.django_db
@pytest.mark.parametrize("charset", ["bz2", "rot13", "undefined", "idna", "punycode"])
def test_a_page_posted_in_a_codec_that_is_not_a_text_encoding_is_a_400(client, charset) -> None:
    # Django's multipart parser decoded the field names in it: a 500. The
    # last three are text encodings that raise on bytes they do not expect.
    body = (
        b'--BB\r\nContent-Disposition: form-data; name="username"\r\n\r\na\xc3\xa9\r\n'
        b'--BB\r\nContent-Disposition: form-data; name="password"\r\n\r\nb\r\n--BB--\r\n'
    )
    response = client.generic(
        "POST",
        "/admin/login/",
        body,
        content_type=f"multipart/form-data; boundary=BB; charset={charset}",
    )
    assert response.status_code == 400


@pytest.mark.django_db
def test_the_refusal_of_a_codec_carries_the_answers_usual_headers(api, client) -> None:
    response = api.post("/api/v1/auth/otp/", b"{}", content_type="application/json; charset=hex")
    assert response.status_code == 415 and response["Cache-Control"] == "no-store"
    page = client.generic("POST", "/admin/login/", b"7b", content_type="text/plain; charset=hex")
    assert page.status_code == 400 and "Content-Security-Policy" in page


# A request's charset is the encoding Django decodes its query string with
# too, and it did so as it built the request: with a query string, a codec
# that is not a text encoding failed before any middleware (500).
NOT_TEXT = [
    "zlib",
    "base64",
    "bz2",
    "rot13",
    "hex",
    "uu",
    "quopri",
    "undefined",
    "idna",
    "punycode",
]
# (idna and punycode take ASCII: "社" is what they raise on.)
WITH_A_QUERY = [
    ("POST", "/api/v1/payments/notify/alipay/?x=1"),
    ("POST", "/api/v1/auth/otp/?a=%E7%A4%BE"),
    ("GET", "/api/v1/services/?q=sbk"),
    ("GET", "/api/v1/services/?q=%E7%A4%BE"),
    ("GET", "/healthz?x=1"),
    ("GET", "/admin/?x=%E7%A4%BE"),
    ("POST", "/admin/login/?next=/admin/"),
]


def _assert_charset_refused(path: str, status: int, headers, body: bytes) -> None:
    if path.startswith("/api/"):
        assert status == 415, body[:300]
        assert json.loads(body)["code"] == "unsupported_media_type"
        assert headers["Cache-Control"] == "no-store"
    else:
        assert status == 400, body[:300]
        assert headers["Content-Type"].startswith("text/html")
        assert "Content-Security-Policy" in headers


@pytest.mark.django_db
@pytest.mark.parametrize("charset", NOT_TEXT)
@pytest.mark.parametrize(("method", "path"), WITH_A_QUERY, ids=lambda v: v)
def test_a_codec_that_is_not_a_text_encoding_is_refused_with_a_query_string(
    client, method, path, charset
) -> None:
    response = client.generic(
        method,
        path,
        b"a=1" if method == "POST" else b"",
        **{"CONTENT_TYPE": f"application/x-www-form-urlencoded; charset={charset}"},
    )
    _assert_charset_refused(path, response.status_code, response, response.content)


@pytest.mark.django_db
@pytest.mark.parametrize("charset", NOT_TEXT)
@pytest.mark.parametrize(("method", "path"), WITH_A_QUERY, ids=lambda v: v)
def test_a_codec_that_is_not_a_text_encoding_is_refused_as_served(method, path, charset) -> None:
    """Through the layers gunicorn serves (the probes and the fast paths in
    front of Django) as through Django alone."""
    from config.wsgi import application
    from tests.wsgi import environ_for, wsgi_call

    route, _, query = path.partition("?")
    body = b"a=1" if method == "POST" else b""
    environ = environ_for(
        route,
        body,
        f"application/x-www-form-urlencoded; charset={charset}",
        REQUEST_METHOD=method,
        QUERY_STRING=query,
    )
    if not body:
        environ["CONTENT_LENGTH"] = ""
    status, headers, payload = wsgi_call(application, environ)
    _assert_charset_refused(path, status, headers, payload)


def test_a_request_does_not_take_a_codec_that_is_not_a_text_encoding_as_its_encoding(
    rf,
) -> None:
    refused = rf.get("/api/v1/services/?q=%E7%A4%BE", CONTENT_TYPE="text/plain; charset=zlib")
    assert refused.GET["q"] == "社" and refused.encoding is None
    assert refused.content_params == {"charset": "zlib"}  # for the refusal
    # A text encoding is the query string's as Django has it.
    latin = rf.get("/api/v1/services/?q=%E9", CONTENT_TYPE="text/plain; charset=latin-1")
    assert latin.GET["q"] == "é" and latin.encoding == "latin-1"

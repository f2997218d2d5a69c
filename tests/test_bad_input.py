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
def test_json_nested_past_the_interpreters_limit_is_a_400(api) -> None:
    response = api.post("/api/v1/auth/otp/", "[" * 5000, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_request"

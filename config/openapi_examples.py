"""The examples of ``/api/schema/``: each operation's request and answers as
the API gave them in a story told through it (``config/api_examples.json``,
written by ``scripts/api_examples.py``; tests/test_api_examples.py checks
that every operation has them and that each fits its schema).

A drf-spectacular postprocessing hook attaches them as OpenAPI media-type
``examples``, which Swagger UI and ReDoc show next to each body.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

EXAMPLES_FILE = Path(__file__).with_name("api_examples.json")

# The media types whose bodies are kept (a JWK Set is JSON too).
JSON_TYPES = frozenset({"application/json", "application/problem+json", "application/jwk-set+json"})


@cache
def _examples(mtime: float) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(EXAMPLES_FILE.read_text(encoding="utf-8"))
    return loaded


def examples_load() -> dict[str, Any]:
    """The file's examples by operation id: ``request`` and ``responses``
    (by status), each with a ``summary`` and, for a JSON body, its ``value``
    (and an answer's ``content_type``). Empty without the file."""
    try:
        return _examples(EXAMPLES_FILE.stat().st_mtime)
    except FileNotFoundError:
        return {}


def _attach(media: dict[str, Any] | None, told: dict[str, Any]) -> None:
    if media is not None and "value" in told:
        media["examples"] = {
            "story": {"summary": told["summary"], "value": json.loads(json.dumps(told["value"]))}
        }


def add_examples(result, generator, request, public):
    """drf-spectacular postprocessing hook: each operation's examples on its
    JSON request body and on the answers the story gave."""
    examples = examples_load()
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            told = examples.get(operation.get("operationId", ""))
            if told is None:
                continue
            if "request" in told:
                content = operation.get("requestBody", {}).get("content", {})
                _attach(content.get("application/json"), told["request"])
            for status, answer in told.get("responses", {}).items():
                content = operation.get("responses", {}).get(status, {}).get("content", {})
                _attach(content.get(answer.get("content_type", "")), answer)
    return result

"""``/api/problems/``: what each stable error code means (the ``type`` URIs).

Each code says when it happens and what the client should do. A browser
(``Accept: text/html`` preferred) gets a page, anything else JSON; both in
the request's language.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from config.api import ERROR_CODES, api_read_only
from config.errors import NOT_FOUND, problem_http_response


def _describe(code: str) -> dict[str, Any]:
    error = ERROR_CODES[code]
    return {
        "code": error.code,
        "status": error.status,
        "title": str(error.title),
        "when": str(error.when),
        "what_to_do": str(error.what_to_do),
    }


def _marked_up(text: str) -> SafeString:
    """The text escaped, its `code spans` set as ``<code>``."""
    return mark_safe(re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text)))


def _for_page(problem: dict[str, Any]) -> dict[str, Any]:
    return {
        **problem,
        "when": _marked_up(problem["when"]),
        "what_to_do": _marked_up(problem["what_to_do"]),
    }


def _answer(
    request: HttpRequest, data: dict[str, Any], template: str, page: dict[str, Any]
) -> HttpResponse:
    """The page for a browser, the JSON for anyone else."""
    if request.get_preferred_type(["application/json", "text/html"]) == "text/html":
        response: HttpResponse = render(request, template, page)
    else:
        response = JsonResponse(data, json_dumps_params={"ensure_ascii": False})
    response["Cache-Control"] = "public, max-age=3600"
    patch_vary_headers(response, ["Accept"])
    return response


@api_read_only
def problem_list(request: HttpRequest) -> HttpResponse:
    problems = [_describe(code) for code in sorted(ERROR_CODES)]
    return _answer(
        request,
        {"results": problems, "next": None, "previous": None},
        "site/problem_list.html",
        {"problems": [_for_page(problem) for problem in problems]},
    )


@api_read_only
def problem_detail(request: HttpRequest, code: str) -> HttpResponse:
    if code not in ERROR_CODES:
        return problem_http_response(NOT_FOUND)
    problem = _describe(code)
    return _answer(request, problem, "site/problem_detail.html", {"problem": _for_page(problem)})

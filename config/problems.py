"""``/api/problems/``: what each stable error code means (the ``type`` URIs)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from config.api import ERROR_CODES, api_read_only
from config.errors import NOT_FOUND, problem_http_response


def _describe(code: str) -> dict[str, object]:
    error = ERROR_CODES[code]
    return {"code": error.code, "status": error.status, "title": str(error.title)}


@api_read_only
def problem_list(request: HttpRequest) -> JsonResponse:
    results = [_describe(code) for code in sorted(ERROR_CODES)]
    return JsonResponse(
        {"results": results, "next": None, "previous": None},
        json_dumps_params={"ensure_ascii": False},
        headers={"Cache-Control": "public, max-age=3600"},
    )


@api_read_only
def problem_detail(request: HttpRequest, code: str) -> HttpResponse:
    if code not in ERROR_CODES:
        return problem_http_response(NOT_FOUND)
    return JsonResponse(
        _describe(code),
        json_dumps_params={"ensure_ascii": False},
        headers={"Cache-Control": "public, max-age=3600"},
    )

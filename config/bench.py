"""The floor every HTTP benchmark is measured against: a bare Django JSON
view on the same server, with the same middleware. Mounted only when
``BENCHMARK_VIEWS=1``."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse


def bare_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})

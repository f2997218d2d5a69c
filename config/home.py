"""``/``: where a person who opens the server in a browser starts; and the
rule for the pages such a person reads (the landing page, the API docs):
nothing is loaded from another host."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe


@require_safe
def landing(request: HttpRequest) -> HttpResponse:
    """Links to the API docs, the error codes, the admin and the probes."""
    return render(request, "site/landing.html", {"admin_url": reverse("admin:index")})


# Everything from this server; inline scripts and styles (Swagger UI's
# settings, ReDoc's styles) and blob workers (ReDoc) allowed, and data: images
# (both UIs' icons). A library's bundle that names another host (ReDoc's
# footer logo) is then refused by the browser itself, before any request.
# No page is framed, not even by another of ours (X_FRAME_OPTIONS = DENY,
# which a browser ignores once a policy names frame-ancestors).
SAME_ORIGIN_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
    ]
)


# Every other page (the admin, the error code pages, Django's own): the
# same, and no inline script at all (none of them has one; the admin's
# scripts are files), so text that slipped through escaping runs nothing.
PAGE_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def same_origin_only(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """``view``'s pages tell the browser to load nothing from another host."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        response.headers.setdefault("Content-Security-Policy", SAME_ORIGIN_POLICY)
        return response

    return wrapped

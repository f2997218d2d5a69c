"""``/``: where a person who opens the server in a browser starts."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe


@require_safe
def landing(request: HttpRequest) -> HttpResponse:
    """Links to the API docs, the error codes, the admin and the probes."""
    return render(request, "site/landing.html", {"admin_url": reverse("admin:index")})

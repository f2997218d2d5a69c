"""Root URLs: the API under /api/v1/, its schema and docs, probes, admin, the landing page."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from accounts import urls as accounts_urls
from config import api, bench, health, home, problems
from config.home import same_origin_only
from config.openapi import KeptSchema
from payments import urls as payments_urls
from qr import urls as qr_urls
from services import urls as services_urls

admin.site.site_header = settings.ADMIN_SITE_HEADER
admin.site.site_title = settings.ADMIN_SITE_HEADER
# The admin's "View site" opens the landing page.
admin.site.site_url = "/"


class SchemaView(KeptSchema, SpectacularAPIView):
    """/api/schema/, generated once per language in each process."""


# Mounted by first segment, so resolving a path tries a handful of patterns,
# not every route of every app; the scanners' hot path comes first.
api_v1 = [
    path("qr/", include(qr_urls.scanner_urls)),
    path("auth/", include(accounts_urls.auth_urls)),
    path("me/", include([*accounts_urls.me_urls, *qr_urls.me_urls])),
    path("applications/", include(services_urls.application_urls)),
    path("payments/", include(payments_urls.payment_urls)),
    path("sandbox/", include(payments_urls.sandbox_urls)),
    path(
        "dept/",
        include([*services_urls.dept_urls, *payments_urls.dept_urls, *qr_urls.dept_urls]),
    ),
    path("", include(services_urls.catalog_urls)),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path(
        "api/docs/",
        same_origin_only(SpectacularSwaggerView.as_view(url_name="schema")),
        name="docs",
    ),
    path(
        "api/redoc/",
        same_origin_only(
            SpectacularRedocView.as_view(url_name="schema", template_name="site/redoc.html")
        ),
        name="redoc",
    ),
    path("api/problems/", problems.problem_list, name="problem-list"),
    path("api/problems/<slug:code>", problems.problem_detail, name="problem-detail"),
    re_path(r"^api/", api.api_not_found),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("", same_origin_only(home.landing), name="home"),
]

if settings.BENCHMARK_VIEWS:
    urlpatterns.insert(0, path("bench/bare", bench.bare_json))

handler400 = api.handler400
handler403 = api.handler403
handler404 = api.handler404
handler500 = api.handler500

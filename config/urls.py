"""Root URLs: the API under /api/v1/, its schema and docs, probes, admin."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import api, bench, health, problems

admin.site.site_header = settings.ADMIN_SITE_HEADER
admin.site.site_title = settings.ADMIN_SITE_HEADER

api_v1 = [
    path("", include("accounts.urls")),
    path("", include("services.urls")),
    path("", include("qr.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/problems/", problems.problem_list, name="problem-list"),
    path("api/problems/<slug:code>", problems.problem_detail, name="problem-detail"),
    re_path(r"^api/", api.api_not_found),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
]

if settings.BENCHMARK_VIEWS:
    urlpatterns.insert(0, path("bench/bare", bench.bare_json))

handler400 = api.handler400
handler403 = api.handler403
handler404 = api.handler404
handler500 = api.handler500

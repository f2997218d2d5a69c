"""Star-code URLs, by area; ``config.urls`` mounts each under its prefix."""

from django.urls import path

from qr import apis

# /api/v1/qr/ (scanners, and resolve for anyone)
scanner_urls = [
    path("keys/", apis.KeysView.as_view(), name="qr-keys"),
    path("verify/", apis.VerifyView.as_view(), name="qr-verify"),
    path("revocations/", apis.RevocationsView.as_view(), name="qr-revocations"),
    path("scans/", apis.ScanUploadView.as_view(), name="qr-scans"),
    path("resolve/", apis.ResolveView.as_view(), name="qr-resolve"),
]

# /api/v1/me/
me_urls = [
    path("star-code/", apis.StarCodeView.as_view(), name="me-star-code"),
    path(
        "star-code/image.png",
        apis.StarCodeImageView.as_view(),
        {"fmt": "png"},
        name="me-star-code-png",
    ),
    path(
        "star-code/image.svg",
        apis.StarCodeImageView.as_view(),
        {"fmt": "svg"},
        name="me-star-code-svg",
    ),
    path("scans/", apis.MyScansView.as_view(), name="me-scans"),
]

# /api/v1/dept/
dept_urls = [
    path("codes/", apis.DeptCodeListView.as_view(), name="dept-code-list"),
    path("codes/<uuid:code_id>/", apis.DeptCodeDetailView.as_view(), name="dept-code-detail"),
    path(
        "codes/<uuid:code_id>/image.png",
        apis.DeptCodeImageView.as_view(),
        {"fmt": "png"},
        name="dept-code-png",
    ),
    path(
        "codes/<uuid:code_id>/image.svg",
        apis.DeptCodeImageView.as_view(),
        {"fmt": "svg"},
        name="dept-code-svg",
    ),
    path(
        "codes/<uuid:code_id>/deactivate/",
        apis.DeptCodeDeactivateView.as_view(),
        name="dept-code-deactivate",
    ),
]

from django.urls import path

from qr import apis

urlpatterns = [
    path("qr/keys/", apis.KeysView.as_view(), name="qr-keys"),
    path("qr/verify/", apis.VerifyView.as_view(), name="qr-verify"),
    path("qr/revocations/", apis.RevocationsView.as_view(), name="qr-revocations"),
    path("qr/scans/", apis.ScanUploadView.as_view(), name="qr-scans"),
    path("qr/resolve/", apis.ResolveView.as_view(), name="qr-resolve"),
    path("me/star-code/", apis.StarCodeView.as_view(), name="me-star-code"),
    path(
        "me/star-code/image.png",
        apis.StarCodeImageView.as_view(),
        {"fmt": "png"},
        name="me-star-code-png",
    ),
    path(
        "me/star-code/image.svg",
        apis.StarCodeImageView.as_view(),
        {"fmt": "svg"},
        name="me-star-code-svg",
    ),
    path("me/scans/", apis.MyScansView.as_view(), name="me-scans"),
    path("dept/codes/", apis.DeptCodeListView.as_view(), name="dept-code-list"),
    path("dept/codes/<uuid:code_id>/", apis.DeptCodeDetailView.as_view(), name="dept-code-detail"),
    path(
        "dept/codes/<uuid:code_id>/image.png",
        apis.DeptCodeImageView.as_view(),
        {"fmt": "png"},
        name="dept-code-png",
    ),
    path(
        "dept/codes/<uuid:code_id>/image.svg",
        apis.DeptCodeImageView.as_view(),
        {"fmt": "svg"},
        name="dept-code-svg",
    ),
    path(
        "dept/codes/<uuid:code_id>/deactivate/",
        apis.DeptCodeDeactivateView.as_view(),
        name="dept-code-deactivate",
    ),
]

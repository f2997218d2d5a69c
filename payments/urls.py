"""Payments URLs, by area; ``config.urls`` mounts each under its prefix."""

from django.urls import path

from payments.apis import citizen, dept, notify, receipts

# /api/v1/payments/
payment_urls = [
    path("", citizen.PaymentListView.as_view(), name="payment-list"),
    path("notify/<slug:channel>/", notify.NotifyView.as_view(), name="payment-notify"),
    path("<uuid:order_id>/", citizen.PaymentDetailView.as_view(), name="payment-detail"),
    path("<uuid:order_id>/receipt/", receipts.ReceiptView.as_view(), name="payment-receipt"),
    path(
        "<uuid:order_id>/receipt.svg", receipts.ReceiptSvgView.as_view(), name="payment-receipt-svg"
    ),
]

# /api/v1/sandbox/
sandbox_urls = [
    path(
        "payments/<str:order_no>/pay/", citizen.SandboxPayView.as_view(), name="sandbox-payment-pay"
    ),
]

# /api/v1/dept/
dept_urls = [
    path("payments/", dept.DeptPaymentListView.as_view(), name="dept-payment-list"),
    path(
        "payments/<str:order_no>/",
        dept.DeptPaymentDetailView.as_view(),
        name="dept-payment-detail",
    ),
    path(
        "payments/<str:order_no>/refunds/",
        dept.DeptRefundView.as_view(),
        name="dept-payment-refunds",
    ),
]

"""Accounts URLs, by area; ``config.urls`` mounts each under its prefix."""

from django.urls import path

from accounts import apis

# /api/v1/auth/
auth_urls = [
    path("otp/", apis.OtpView.as_view(), name="auth-otp"),
    path("token/", apis.TokenView.as_view(), name="auth-token"),
    path("token/refresh/", apis.TokenRefreshView.as_view(), name="auth-token-refresh"),
    path("logout/", apis.LogoutView.as_view(), name="auth-logout"),
]

# /api/v1/me/
me_urls = [
    path("", apis.MeView.as_view(), name="me"),
    path("real-name/", apis.RealNameView.as_view(), name="me-real-name"),
    path("export/", apis.ExportView.as_view(), name="me-export"),
    path("messages/", apis.MessageListView.as_view(), name="me-messages"),
    path("messages/read-all/", apis.MessageReadAllView.as_view(), name="me-messages-read-all"),
    path(
        "messages/<uuid:message_id>/read/", apis.MessageReadView.as_view(), name="me-message-read"
    ),
]

from django.urls import path

from accounts import apis

urlpatterns = [
    path("auth/otp/", apis.OtpView.as_view(), name="auth-otp"),
    path("auth/token/", apis.TokenView.as_view(), name="auth-token"),
    path("auth/token/refresh/", apis.TokenRefreshView.as_view(), name="auth-token-refresh"),
    path("auth/logout/", apis.LogoutView.as_view(), name="auth-logout"),
    path("me/", apis.MeView.as_view(), name="me"),
    path("me/real-name/", apis.RealNameView.as_view(), name="me-real-name"),
    path("me/export/", apis.ExportView.as_view(), name="me-export"),
    path("me/messages/", apis.MessageListView.as_view(), name="me-messages"),
    path("me/messages/read-all/", apis.MessageReadAllView.as_view(), name="me-messages-read-all"),
    path(
        "me/messages/<uuid:message_id>/read/",
        apis.MessageReadView.as_view(),
        name="me-message-read",
    ),
]

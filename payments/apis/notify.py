"""The channels' callbacks (支付结果通知)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from config.api import (
    AnyAccept,
    FixedWindowThrottle,
    client_ip,
    problems,
)
from payments import notifications
from payments.models import Channel

# --- Channels' callbacks ---------------------------------------------------------------------


class NotifyThrottle(FixedWindowThrottle):
    scope = "payments_notify"

    def get_rate(self) -> str:
        return settings.PAYMENTS_NOTIFY_RATE


_WECHAT_REFUSAL = inline_serializer(
    "ChannelRefusal",
    {"code": serializers.CharField(help_text="`FAIL`"), "message": serializers.CharField()},
)


def _refused(status: int, description: str) -> dict[tuple[int, str], OpenApiResponse]:
    """A refusal in the channel's format: Alipay's and UnionPay's ``fail``,
    WeChat Pay's JSON."""
    return {
        (status, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description=description),
        (status, "application/json"): OpenApiResponse(_WECHAT_REFUSAL),
    }


class NotifyView(APIView):
    """``POST /api/v1/payments/notify/{channel}/``: the channel's server
    calls this; it authenticates by the channel's signature, not by us."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = [NotifyThrottle]
    parser_classes: list[Any] = []  # the raw body is what was signed
    # A channel's server sends whatever Accept it likes; the callback is
    # handled whatever it says (as the fast path in front handles it).
    content_negotiation_class = AnyAccept

    @extend_schema(
        tags=["payments"],
        summary="A channel's payment callback (WeChat Pay, Alipay, UnionPay wire formats)",
        description=(
            "Answered in the channel's own format: WeChat Pay 204 (or 4xx with "
            '`{"code": "FAIL"}`), Alipay `success` / `fail`, UnionPay 200 `ok`. A '
            "callback that is not authentic, names an unknown order or another amount is "
            "refused with 4xx and changes nothing."
        ),
        request={"application/json": {}, "application/x-www-form-urlencoded": {}},
        responses={
            (200, "text/plain"): OpenApiResponse(
                OpenApiTypes.STR, description="Acknowledged (Alipay `success`, UnionPay `ok`)"
            ),
            204: OpenApiResponse(description="Acknowledged (WeChat Pay)"),
            **_refused(400, "Refused; the channel retries"),
            **_refused(401, "Not authentic"),
            **_refused(404, "Unknown order, in the channel's format; unknown channel: `not_found`"),
            **problems("not_found", "throttled"),
        },
        auth=[],
    )
    def post(self, request: Request, channel: str) -> HttpResponse:
        if channel not in Channel.values:
            raise Http404
        reply = notifications.notify_receive(
            channel=channel,
            headers=request.headers,
            body=request.body,
            client_ip=client_ip(request),
        )
        response = HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
        for name, value in reply.headers.items():
            response[name] = value
        return response

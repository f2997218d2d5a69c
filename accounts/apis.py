"""Citizen identity API: login by SMS code, tokens, profile, real name, inbox."""

from __future__ import annotations

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import citizens, inbox, otp, selectors, tokens
from accounts.authentication import CitizenRequest, IsCitizen
from accounts.models import Message, User
from config.api import (
    ClientScopedRateThrottle,
    ClientUserRateThrottle,
    FeedPagination,
    ModelSerializer,
    OneCheckAtATime,
    client_ip,
    links,
    problems,
)


class RealNameThrottle(OneCheckAtATime, ClientUserRateThrottle):
    scope = "real_name"


# --- Serializers --------------------------------------------------------------------


class UserSerializer(ModelSerializer):
    """The citizen's own profile; personal data masked."""

    phone = serializers.CharField(source="phone_masked", read_only=True, help_text="138****8000")
    real_name = serializers.CharField(source="real_name_masked", read_only=True, help_text="张*")
    id_number = serializers.CharField(
        source="id_number_masked", read_only=True, help_text="430102********123X"
    )
    identity_level = serializers.IntegerField(
        read_only=True, help_text="1: phone verified; 2: real-name verified"
    )

    class Meta:
        model = User
        fields = [
            "id",
            "phone",
            "nickname",
            "email",
            "identity_level",
            "real_name",
            "id_number",
            "real_name_verified_at",
            "date_joined",
        ]
        read_only_fields = ["id", "real_name_verified_at", "date_joined"]


class ProfileUpdateSerializer(serializers.Serializer):
    nickname = serializers.CharField(max_length=40, allow_blank=True, required=False)
    # As long as the column (Django's EmailField): an address may run to 320.
    email = serializers.EmailField(allow_blank=True, required=False, max_length=254)


class OtpSerializer(serializers.Serializer):
    phone = serializers.CharField(max_length=32, help_text="13800138000 or +8613800138000")


class LoginSerializer(serializers.Serializer):
    phone = serializers.CharField(max_length=32)
    code = serializers.CharField(max_length=16, help_text="The 6-digit code from the SMS")


class RefreshSerializer(serializers.Serializer):
    refresh = serializers.CharField(max_length=4096)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class LoginResponseSerializer(TokenPairSerializer):
    user = UserSerializer()


class RealNameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=40)
    id_number = serializers.CharField(max_length=32)


class MessageSerializer(ModelSerializer):
    title = serializers.SerializerMethodField()
    body = serializers.SerializerMethodField()
    is_read = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = ["id", "kind", "title", "body", "data", "created_at", "read_at", "is_read"]

    def get_title(self, message: Message) -> str:
        return message.localized_title()

    def get_body(self, message: Message) -> str:
        return message.localized_body()

    def get_is_read(self, message: Message) -> bool:
        return message.read_at is not None


# --- Login and tokens ------------------------------------------------------------------


class OtpView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["auth"],
        summary="Send a login code by SMS",
        request=OtpSerializer,
        responses={
            202: inline_serializer(
                "OtpSent",
                {
                    "detail": serializers.CharField(),
                    "resend_after": serializers.IntegerField(),
                    "expires_in": serializers.IntegerField(),
                },
            ),
            **problems("phone_invalid", "throttled", "sms_unavailable"),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = OtpSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        otp.otp_send(phone=serializer.validated_data["phone"], ip=client_ip(request))
        return Response(
            {
                "detail": _("验证码已发送"),
                "resend_after": settings.OTP_SEND_INTERVAL_SECONDS,
                "expires_in": settings.OTP_TTL_SECONDS,
            },
            status=status.HTTP_202_ACCEPTED,
        )


class TokenView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ClientScopedRateThrottle]
    throttle_scope = "login"

    @extend_schema(
        tags=["auth"],
        summary="Log in with the SMS code (creates the account on first login)",
        request=LoginSerializer,
        responses={
            200: LoginResponseSerializer,
            **problems(
                "phone_invalid",
                "otp_invalid",
                "otp_expired",
                "otp_attempts_exceeded",
                "account_suspended",
                "throttled",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = otp.otp_login(**serializer.validated_data, ip=client_ip(request))
        pair = tokens.tokens_login(user=user)
        return Response({**pair, "user": UserSerializer(user).data})


class TokenRefreshView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ClientScopedRateThrottle]
    throttle_scope = "refresh"

    @extend_schema(
        tags=["auth"],
        summary="Trade a refresh token for a new pair (the old one is revoked)",
        request=RefreshSerializer,
        responses={200: TokenPairSerializer, **problems("token_invalid", "account_inactive")},
    )
    def post(self, request: Request) -> Response:
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(tokens.token_refresh(refresh=serializer.validated_data["refresh"]))


class LogoutView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["auth"],
        summary="Log out: revoke a refresh token",
        request=RefreshSerializer,
        responses={204: None, **problems("token_invalid")},
    )
    def post(self, request: Request) -> Response:
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tokens.token_revoke(refresh=serializer.validated_data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- The citizen's own account ------------------------------------------------------------


class MeView(APIView):
    permission_classes = [IsCitizen]

    @extend_schema(tags=["me"], summary="My profile", responses={200: UserSerializer})
    def get(self, request: CitizenRequest) -> Response:
        return Response(UserSerializer(request.user).data)

    @extend_schema(
        tags=["me"],
        summary="Change nickname or e-mail",
        request=ProfileUpdateSerializer,
        responses={200: UserSerializer},
    )
    def patch(self, request: CitizenRequest) -> Response:
        serializer = ProfileUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        user = citizens.profile_update(user=request.user, **serializer.validated_data)
        return Response(UserSerializer(user).data)

    @extend_schema(
        tags=["me"],
        summary="Close my account (personal data erased, tokens revoked)",
        description=(
            "Every section of the citizen's data is erased or pseudonymised in one "
            "transaction; applications stay as pseudonymous records, and the events "
            "stored for departments keep only the pseudonymous `sub` (see README). "
            "An operator's account (staff, superuser, holding powers) that logged in "
            "by SMS code is refused (`account_privileged`): the admin manages it."
        ),
        responses={204: None, **problems("account_privileged")},
    )
    def delete(self, request: CitizenRequest) -> Response:
        citizens.account_close(user=request.user, ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class RealNameView(APIView):
    permission_classes = [IsCitizen]
    throttle_classes = [RealNameThrottle]

    @extend_schema(
        tags=["me"],
        summary="Verify my real name (identity level 2)",
        request=RealNameSerializer,
        responses={
            200: UserSerializer,
            **problems(
                "name_invalid",
                "id_number_invalid",
                "already_verified",
                "id_number_taken",
                "identity_mismatch",
                "identity_provider_unavailable",
                "throttled",
            ),
        },
    )
    def post(self, request: CitizenRequest) -> Response:
        serializer = RealNameSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = citizens.real_name_verify(
            user=request.user, ip=client_ip(request), **serializer.validated_data
        )
        return Response(UserSerializer(user).data)


class ExportView(APIView):
    permission_classes = [IsCitizen]

    @extend_schema(
        tags=["me"],
        summary="Everything held about me, unmasked (JSON)",
        description=(
            "One member per section of the citizen's data that an app declares "
            "(accounts.citizen_data): `profile`, `login_codes`, `messages`, "
            "`applications` (with form, timeline, rating and the events sent to "
            "departments), `payments` (`orders`, with their refunds), "
            "`star_code_scans` and `audit_trail` (the audit entries about the citizen: "
            "their own actions with their address, and what operators did to the "
            "account, by kind only; kept when the account closes). Each section is the "
            "app's own record, unmasked."
        ),
        responses={
            200: inline_serializer(
                "AccountExport",
                {
                    "profile": serializers.DictField(),
                    "login_codes": serializers.ListField(child=serializers.DictField()),
                    "messages": serializers.ListField(child=serializers.DictField()),
                    "applications": serializers.ListField(child=serializers.DictField()),
                    "payments": serializers.DictField(),
                    "star_code_scans": serializers.ListField(child=serializers.DictField()),
                    "audit_trail": serializers.ListField(child=serializers.DictField()),
                },
            )
        },
    )
    def get(self, request: CitizenRequest) -> Response:
        return Response(
            selectors.account_export(request.user),
            headers={"Content-Disposition": 'attachment; filename="my-changsha-export.json"'},
        )


class MessageListView(ListAPIView):
    request: CitizenRequest
    permission_classes = [IsCitizen]
    serializer_class = MessageSerializer
    pagination_class = FeedPagination
    openapi_links = {
        "get": [links(200, "me_messages_read_create", message_id="$response.body#/results/0/id")]
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Message.objects.none()
        unread = self.request.query_params.get("unread", "").lower() in ("1", "true", "yes")
        return selectors.messages_for(self.request.user, unread_only=unread)

    @extend_schema(
        tags=["me"],
        summary="My inbox, newest first",
        parameters=[OpenApiParameter("unread", bool, description="Only unread messages")],
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)


class MessageReadView(APIView):
    permission_classes = [IsCitizen]

    @extend_schema(
        tags=["me"],
        summary="Mark a message read",
        request=None,
        responses={200: MessageSerializer, **problems("not_found")},
    )
    def post(self, request: CitizenRequest, message_id: str) -> Response:
        message = inbox.message_mark_read(user=request.user, message_id=message_id)
        return Response(MessageSerializer(message).data)


class MessageReadAllView(APIView):
    permission_classes = [IsCitizen]

    @extend_schema(
        tags=["me"],
        summary="Mark every message read",
        request=None,
        responses={200: inline_serializer("MarkedRead", {"marked": serializers.IntegerField()})},
    )
    def post(self, request: CitizenRequest) -> Response:
        return Response({"marked": inbox.messages_mark_all_read(user=request.user)})

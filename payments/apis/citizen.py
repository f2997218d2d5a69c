"""Citizen API: pay for an application, follow the order; and the sandbox
cashier that stands in for the wallet."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import CitizenRequest, IsCitizen
from accounts.idempotency import idempotent
from config.api import (
    FeedPagination,
    links,
    paginated,
    problems,
)
from payments import orders, selectors
from payments.errors import SANDBOX_DISABLED, SANDBOX_PAYMENT_REFUSED, PaymentsError
from payments.models import PaymentOrder
from payments.sandbox import books
from payments.sandbox import notify as sandbox_notify
from payments.serializers import (
    OrderCreateSerializer,
    PaymentOrderSerializer,
    SandboxPaySerializer,
)
from services.apis.applications import IDEMPOTENCY_KEY

# --- Citizen ----------------------------------------------------------------------------------


class CitizenView(APIView):
    request: CitizenRequest
    permission_classes = [IsCitizen]

    def own(self, order_id: Any) -> PaymentOrder:
        order = selectors.order_of(self.request.user, order_id)
        if order is None:
            raise Http404
        return order


class PaymentListView(CitizenView):
    pagination_class = FeedPagination
    openapi_links = {
        "get": [
            links(
                200,
                "payments_retrieve",
                "payments_receipt_retrieve",
                "payments_receipt_svg_retrieve",
                order_id="$response.body#/results/0/id",
            ),
            links(
                200, "sandbox_payments_pay_create", order_no="$response.body#/results/0/order_no"
            ),
        ],
        "post": [
            links(
                201,
                "payments_retrieve",
                "payments_receipt_retrieve",
                "payments_receipt_svg_retrieve",
                order_id="$response.body#/id",
            ),
            links(201, "sandbox_payments_pay_create", order_no="$response.body#/order_no"),
        ],
    }

    @extend_schema(
        tags=["payments"],
        summary="My payment orders, newest first",
        operation_id="payments_list",
        responses={200: PaymentOrderSerializer(many=True)},
    )
    def get(self, request: CitizenRequest) -> Response:
        return paginated(
            request,
            self,
            selectors.orders_of(request.user),
            PaymentOrderSerializer,
        )

    @extend_schema(
        tags=["payments"],
        summary="Pay for one of my applications (the amount is the service's fee)",
        description=(
            "Opens an order at the channel and returns what the app needs to pay it "
            "(`checkout`). An open order of the same channel is returned again (200); "
            "one of another channel is closed first. Unpaid orders close after "
            "`PAYMENTS_ORDER_TTL_SECONDS` (30 minutes)."
        ),
        parameters=[IDEMPOTENCY_KEY],
        request=OrderCreateSerializer,
        responses={
            201: PaymentOrderSerializer,
            200: PaymentOrderSerializer,
            **problems(
                "not_found",
                "application_not_payable",
                "payment_channel_unavailable",
                "payment_provider_error",
                "idempotency_key_reused",
                "idempotency_key_invalid",
            ),
        },
    )
    def post(self, request: CitizenRequest) -> Response:
        def create() -> Response:
            serializer = OrderCreateSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            order, created = orders.order_create(
                citizen=request.user,
                application_id=serializer.validated_data["application"],
                channel=serializer.validated_data["channel"],
            )
            return Response(
                PaymentOrderSerializer(order).data,
                status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            )

        return idempotent(request, create)


class PaymentDetailView(CitizenView):
    @extend_schema(
        tags=["payments"],
        summary="One of my payment orders",
        description=(
            "A pending order past its expiry is checked with the channel and closed "
            "(or found paid) before it is shown. If the channel can neither be asked "
            "nor close it, the order is shown as it stands (`pending`: the wallet may "
            "have paid) and the payments sweep settles it."
        ),
        responses={200: PaymentOrderSerializer, **problems("not_found")},
    )
    def get(self, request: CitizenRequest, order_id: str) -> Response:
        order = orders.order_as_of_now(self.own(order_id))
        return Response(PaymentOrderSerializer(order).data)


# --- Sandbox cashier -------------------------------------------------------------------------


class SandboxPayView(CitizenView):
    @extend_schema(
        tags=["payments"],
        summary="Sandbox wallet: pay (or fail to pay) one of my orders",
        description=(
            "Only with `PAYMENTS_SANDBOX`. The sandbox channel then sends its signed "
            "callback to the notify endpoint from a worker, a moment later and sometimes "
            "twice, as the real channel would."
        ),
        request=SandboxPaySerializer,
        responses={
            202: PaymentOrderSerializer,
            **problems("not_found", "sandbox_disabled", "sandbox_payment_refused"),
        },
    )
    def post(self, request: CitizenRequest, order_no: str) -> Response:
        if not settings.PAYMENTS_SANDBOX:
            raise PaymentsError(SANDBOX_DISABLED)
        order = selectors.orders_of(request.user).filter(order_no=order_no).first()
        if order is None:
            raise Http404
        serializer = SandboxPaySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            sandbox_notify.payment_pay(
                channel=order.channel,
                order_no=order.order_no,
                succeed=serializer.validated_data["result"] == "success",
            )
        except books.SandboxRefusal as exc:
            raise PaymentsError(SANDBOX_PAYMENT_REFUSED, exc.message) from exc
        return Response(PaymentOrderSerializer(order).data, status=status.HTTP_202_ACCEPTED)

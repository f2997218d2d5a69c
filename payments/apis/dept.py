"""Department API: a department's orders and their refunds."""

from __future__ import annotations

import datetime as dt
import re

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import DepartmentRequest
from accounts.idempotency import idempotent
from config.api import (
    FeedPagination,
    PagePagination,
    client_ip,
    links,
    paginated,
    problems,
)
from payments import orders, selectors
from payments.models import Channel, OrderStatus, PaymentOrder
from payments.serializers import (
    DepartmentPaymentDetailSerializer,
    DepartmentPaymentSerializer,
    RefundCreateSerializer,
    RefundSerializer,
)
from services.apis.applications import IDEMPOTENCY_KEY
from services.apis.dept_services import DepartmentView

# --- Department ------------------------------------------------------------------------------


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        if not _DAY.fullmatch(value):  # (fromisoformat takes 2026-W49-1 and 20261207 too)
            raise ValueError(value)
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError({"date": ["YYYY-MM-DD"]}) from None
    # The calendar's first and last days have no bounds in China time: the
    # first one starts before year 1 in UTC, the last one has no day after.
    if not dt.date.min < day < dt.date.max:
        raise ValidationError({"date": [f"{dt.date.min + ONE_DAY} to {dt.date.max - ONE_DAY}"]})
    return day


ONE_DAY = dt.timedelta(days=1)


class DeptPaymentListView(DepartmentView):
    pagination_class = FeedPagination
    openapi_links = {
        "get": [
            links(
                200,
                "dept_payments_retrieve",
                "dept_refunds_list",
                "dept_payments_refunds_create",
                order_no="$response.body#/results/0/order_no",
            )
        ],
    }

    @extend_schema(
        tags=["dept: payments"],
        summary="My department's payment orders, newest first",
        operation_id="dept_payments_list",
        parameters=[
            OpenApiParameter(
                "date", OpenApiTypes.DATE, description="Day the order was opened (YYYY-MM-DD)"
            ),
            OpenApiParameter("status", str, enum=OrderStatus.values),
            OpenApiParameter("channel", str, enum=Channel.values),
        ],
        responses={200: DepartmentPaymentSerializer(many=True), **problems("invalid")},
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        wanted_status = params.get("status") or None
        if wanted_status is not None and wanted_status not in OrderStatus.values:
            raise ValidationError({"status": [f"one of {', '.join(OrderStatus.values)}"]})
        wanted_channel = params.get("channel") or None
        if wanted_channel is not None and wanted_channel not in Channel.values:
            raise ValidationError({"channel": [f"one of {', '.join(Channel.values)}"]})
        return paginated(
            request,
            self,
            selectors.orders_for_department(
                self.department,
                status=wanted_status,
                channel=wanted_channel,
                date=_date(params.get("date")),
            ),
            selectors.payment_view,
        )


class _DeptOrderView(DepartmentView):
    def get_order(self, order_no: str) -> PaymentOrder:
        order = selectors.order_for_department(self.department, order_no)
        if order is None:
            raise Http404
        return order


class DeptPaymentDetailView(_DeptOrderView):
    @extend_schema(
        tags=["dept: payments"],
        summary="One of my department's orders, with its refunds",
        responses={200: DepartmentPaymentDetailSerializer, **problems("not_found")},
    )
    def get(self, request: Request, order_no: str) -> Response:
        order = self.get_order(order_no)
        return Response(
            {
                **selectors.payment_view(order),
                "refunds": RefundSerializer(selectors.refunds_of(order), many=True).data,
            }
        )


class DeptRefundView(_DeptOrderView):
    pagination_class = PagePagination

    @extend_schema(
        tags=["dept: payments"],
        summary="The refunds of one of my department's orders",
        operation_id="dept_refunds_list",
        responses={200: RefundSerializer(many=True), **problems("not_found")},
    )
    def get(self, request: Request, order_no: str) -> Response:
        return paginated(
            request,
            self,
            selectors.refunds_of(self.get_order(order_no)),
            RefundSerializer,
        )

    @extend_schema(
        tags=["dept: payments"],
        summary="Refund part or all of a paid order",
        description=(
            "Several refunds per order; together never more than was paid (422 "
            "`refund_exceeds_paid`, also under concurrent requests). The channel answers "
            "asynchronously: the refund is `pending` until it settles, then the "
            "department gets `payment.refunded` and the citizen a message."
        ),
        parameters=[IDEMPOTENCY_KEY],
        request=RefundCreateSerializer,
        responses={
            201: RefundSerializer,
            **problems(
                "not_found",
                "refund_exceeds_paid",
                "refund_not_allowed",
                "idempotency_key_reused",
                "idempotency_key_invalid",
            ),
        },
    )
    def post(self, request: DepartmentRequest, order_no: str) -> Response:
        def create() -> Response:
            serializer = RefundCreateSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            refund = orders.refund_request(
                order=self.get_order(order_no),
                amount_fen=serializer.validated_data["amount_fen"],
                reason=serializer.validated_data["reason"],
                actor=request.auth,
                ip=client_ip(request),
            )
            refund.refresh_from_db()
            return Response(RefundSerializer(refund).data, status=status.HTTP_201_CREATED)

        return idempotent(request, create)

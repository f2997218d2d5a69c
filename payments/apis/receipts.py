"""Citizen API: the electronic receipt of a paid order, as JSON and as a
printable SVG (DESIGN §5)."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from accounts.authentication import CitizenRequest
from config.api import AnyAccept, problems
from payments import receipts, selectors
from payments.apis.citizen import CitizenView
from payments.models import Channel, OrderStatus, PaymentOrder

PRIVATE = "private, no-store"


class _PayerSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The payer's real name, masked (张**); empty if unknown")
    phone = serializers.CharField(help_text="The payer's phone, masked (138****8000)")


class _PayeeSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    name_en = serializers.CharField()


class _ServiceSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()


class ReceiptSerializer(serializers.Serializer):
    """A paid order's receipt (电子缴费凭证), for the schema."""

    title = serializers.CharField()
    order_no = serializers.CharField()
    application = serializers.CharField(help_text="The application's number")
    payer = _PayerSerializer()
    payee = _PayeeSerializer(help_text="The department the money was paid to")
    service = _ServiceSerializer()
    amount_fen = serializers.IntegerField(help_text="What was paid, in fen")
    refunded_fen = serializers.IntegerField(help_text="What has been refunded since, in fen")
    currency = serializers.CharField()
    channel = serializers.ChoiceField(choices=Channel.choices)
    transaction_id = serializers.CharField(help_text="The channel's transaction id")
    status = serializers.ChoiceField(choices=OrderStatus.choices)
    paid_at = serializers.DateTimeField()
    code = serializers.CharField(
        help_text='`MCS1:` + compact JWS (EdDSA), claims `knd: "receipt"`, `ono`, `amt`, '
        "`cur`, `dep`, `svc`, `pat`, no `exp`; verify offline with the JWKS at "
        "`/api/v1/qr/keys/`"
    )


class _ReceiptView(CitizenView):
    def paid_order(self, order_id: Any) -> PaymentOrder:
        order = (
            selectors.orders_of(self.request.user)
            .select_related("service", "department", "payer")
            .filter(pk=order_id)
            .first()
        )
        if order is None:
            raise Http404
        return order


class ReceiptView(_ReceiptView):
    @extend_schema(
        tags=["payments"],
        summary="The electronic receipt of one of my paid orders",
        description=(
            "Payer masked, payee department, service, amount, payment time, order number, "
            'and a `code` signed like a star-code (`knd: "receipt"`, no expiry) that anyone '
            "verifies offline with the JWKS. A refunded order keeps its receipt and shows "
            "`refunded_fen`. The same order gives the same receipt on every download. "
            "Printable: `receipt.svg` beside it."
        ),
        responses={200: ReceiptSerializer, **problems("not_found", "receipt_not_available")},
    )
    def get(self, request: CitizenRequest, order_id: str) -> Response:
        receipt = receipts.receipt_for(self.paid_order(order_id))
        return Response(receipt, headers={"Cache-Control": PRIVATE})


class ReceiptSvgView(_ReceiptView):
    # The SVG whatever Accept says (a browser asks for image/* or text/html).
    content_negotiation_class = AnyAccept

    @extend_schema(
        tags=["payments"],
        summary="The receipt of one of my paid orders, printable (A5 SVG with its QR code)",
        operation_id="payments_receipt_svg_retrieve",
        description=(
            "Self-contained: no fonts, images or styles are loaded from elsewhere. "
            "The QR code holds the receipt's signed `code`."
        ),
        responses={
            (200, "image/svg+xml"): OpenApiResponse(OpenApiTypes.STR, description="SVG"),
            **problems("not_found", "receipt_not_available"),
        },
    )
    def get(self, request: CitizenRequest, order_id: str) -> HttpResponse:
        order = self.paid_order(order_id)
        body = receipts.receipt_svg(receipts.receipt_for(order))
        response = HttpResponse(body, content_type="image/svg+xml")
        response["Cache-Control"] = PRIVATE
        response["X-Content-Type-Options"] = "nosniff"
        # Opened on its own in a browser, the SVG may run nothing and load nothing.
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Content-Disposition"] = f'inline; filename="receipt-{order.order_no}.svg"'
        return response

"""Shapes of orders and refunds in and out of the API."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from config.api import ModelSerializer
from payments.models import Channel, OrderStatus, PaymentOrder, Refund


class OrderCreateSerializer(serializers.Serializer):
    application = serializers.UUIDField(help_text="The id of one of my applications")
    channel = serializers.ChoiceField(choices=Channel.choices)


class PaymentOrderSerializer(ModelSerializer):
    """An order as its payer sees it."""

    application = serializers.UUIDField(source="application_id", read_only=True)
    checkout = serializers.SerializerMethodField(
        help_text="What the app needs to open the wallet (code_url, qr_code or tn); "
        "empty once the order is no longer pending"
    )

    class Meta:
        model = PaymentOrder
        fields = [
            "id",
            "order_no",
            "application",
            "amount_fen",
            "currency",
            "channel",
            "status",
            "checkout",
            "expires_at",
            "paid_at",
            "refunded_fen",
            "created_at",
        ]
        read_only_fields = fields

    def get_checkout(self, order: PaymentOrder) -> dict[str, str]:
        return dict(order.checkout) if order.status == OrderStatus.PENDING else {}


class FenField(serializers.IntegerField):
    """An amount in fen: a JSON integer and nothing else (DRF's
    IntegerField would take ``"10"`` or ``10.0``; money is never guessed)."""

    default_error_messages = {"not_an_integer": _("金额必须是以分为单位的整数")}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("not_an_integer")
        return super().to_internal_value(data)


class RefundCreateSerializer(serializers.Serializer):
    amount_fen = FenField(min_value=1, max_value=100_000_000)
    reason = serializers.CharField(max_length=200, allow_blank=True, default="")


class RefundSerializer(ModelSerializer):
    order_no = serializers.CharField(source="order.order_no", read_only=True)
    currency = serializers.SerializerMethodField()

    class Meta:
        model = Refund
        fields = [
            "id",
            "refund_no",
            "order_no",
            "amount_fen",
            "currency",
            "reason",
            "status",
            "created_at",
            "succeeded_at",
        ]
        read_only_fields = fields

    def get_currency(self, refund: Refund) -> str:
        return "CNY"


class DepartmentPaymentSerializer(serializers.Serializer):
    """An order as its department sees it (also ``data.payment`` of events)."""

    order_no = serializers.CharField()
    application = serializers.CharField(help_text="The application's number")
    service = serializers.CharField(help_text="The service's code")
    amount_fen = serializers.IntegerField()
    currency = serializers.CharField()
    channel = serializers.ChoiceField(choices=Channel.choices)
    status = serializers.ChoiceField(choices=OrderStatus.choices)
    paid_fen = serializers.IntegerField()
    refunded_fen = serializers.IntegerField()
    transaction_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)


class DepartmentPaymentDetailSerializer(DepartmentPaymentSerializer):
    """One order as its department sees it, with its refunds."""

    refunds = RefundSerializer(many=True)


class SandboxPaySerializer(serializers.Serializer):
    result = serializers.ChoiceField(choices=["success", "fail"], default="success")

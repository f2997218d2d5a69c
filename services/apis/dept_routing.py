"""Department API: endpoints that receive events, and their deliveries."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import django_filters
from django.conf import settings
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import DepartmentRequest
from config.api import (
    FeedPagination,
    FixedWindowThrottle,
    PagePagination,
    client_ip,
    links,
    paginated,
    problems,
)
from services import selectors
from services.apis.dept_services import DepartmentView
from services.models import Delivery, DeliveryStatus, Endpoint
from services.routing import deliveries, endpoints
from services.serializers import (
    DeliveryDetailSerializer,
    DeliverySerializer,
    EndpointSerializer,
    EndpointWithSecretSerializer,
    EndpointWriteSerializer,
)


class SendThrottle(FixedWindowThrottle):
    """Pings and retries per API key, in fixed windows: each is a POST the
    delivery workers, which every department shares, send at once."""

    scope = "dept_sends"

    def get_rate(self) -> str:
        return settings.ROUTING_SEND_RATE

    def get_ident(self, request: Any) -> str:
        return str(request.auth.pk)


class EndpointWriteThrottle(FixedWindowThrottle):
    """Endpoint registrations, changes, removals and secret rotations per
    API key, in fixed windows: a registration or a new URL looks its host
    up while the request waits (up to ``transport.LOOKUP_SECONDS`` for a
    name whose servers never answer), holding a web worker meanwhile."""

    scope = "dept_endpoint_writes"
    methods = frozenset({"POST", "PATCH", "DELETE"})

    def get_rate(self) -> str:
        return settings.ROUTING_ENDPOINT_WRITE_RATE

    def get_ident(self, request: Any) -> str:
        return str(request.auth.pk)


# The schema's word on it, for each write.
ENDPOINT_WRITES_LIMITED = (
    "Registrations, changes, removals and secret rotations together count against "
    "`ROUTING_ENDPOINT_WRITE_RATE` per API key (60 an hour)."
)
LOOKUP_BUSY = (
    " A URL whose host cannot be looked up now (too many lookups under way) is 503 "
    "`service_unavailable` with `Retry-After`: nothing was changed, send it again then."
)


class EndpointListView(DepartmentView):
    pagination_class = PagePagination
    throttle_classes = [EndpointWriteThrottle]
    openapi_links = {
        "get": [
            links(
                200,
                "dept_endpoints_retrieve",
                "dept_endpoints_partial_update",
                "dept_endpoints_rotate_secret_create",
                "dept_endpoints_test_create",
                "dept_endpoints_destroy",
                endpoint_id="$response.body#/results/0/id",
            )
        ],
        "post": [
            links(
                201,
                "dept_endpoints_retrieve",
                "dept_endpoints_partial_update",
                "dept_endpoints_rotate_secret_create",
                "dept_endpoints_test_create",
                "dept_endpoints_destroy",
                endpoint_id="$response.body#/id",
            )
        ],
    }

    @extend_schema(
        tags=["dept: endpoints"],
        summary="My endpoints",
        operation_id="dept_endpoints_list",
        responses={200: EndpointSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        return paginated(request, self, selectors.endpoints_of(self.department), EndpointSerializer)

    @extend_schema(
        tags=["dept: endpoints"],
        summary="Register an endpoint (the secret is shown only in this answer)",
        description=ENDPOINT_WRITES_LIMITED + LOOKUP_BUSY,
        request=EndpointWriteSerializer,
        responses={
            201: EndpointWithSecretSerializer,
            **problems(
                "endpoint_url_invalid",
                "endpoint_url_not_allowed",
                "endpoint_limit_reached",
                "throttled",
                "service_unavailable",
            ),
        },
    )
    def post(self, request: DepartmentRequest) -> Response:
        serializer = EndpointWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint, secret = endpoints.endpoint_create(
            department=self.department,
            actor=request.auth,
            ip=client_ip(request),
            **serializer.validated_data,
        )
        return Response(
            {**EndpointSerializer(endpoint).data, "secret": secret}, status=status.HTTP_201_CREATED
        )


class _EndpointView(DepartmentView):
    """Looks up one of the department's endpoints; answers no method itself
    (each route answers only the methods its own class defines)."""

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        endpoint = selectors.endpoints_of(self.department).filter(pk=endpoint_id).first()
        if endpoint is None:
            raise Http404
        return endpoint


class EndpointDetailView(_EndpointView):
    throttle_classes = [EndpointWriteThrottle]

    @extend_schema(
        tags=["dept: endpoints"],
        summary="One endpoint",
        responses={200: EndpointSerializer, **problems("not_found")},
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        return Response(EndpointSerializer(self.get_endpoint(endpoint_id)).data)

    @extend_schema(
        tags=["dept: endpoints"],
        summary="Change an endpoint (is_active: true also resumes a paused one)",
        description=ENDPOINT_WRITES_LIMITED + LOOKUP_BUSY,
        request=EndpointWriteSerializer(partial=True),
        responses={
            200: EndpointSerializer,
            **problems(
                "endpoint_url_invalid",
                "endpoint_url_not_allowed",
                "endpoint_held",
                "not_found",
                "throttled",
                "service_unavailable",
            ),
        },
    )
    def patch(self, request: DepartmentRequest, endpoint_id: str) -> Response:
        endpoint = self.get_endpoint(endpoint_id)
        serializer = EndpointWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        endpoint = endpoints.endpoint_update(
            endpoint=endpoint,
            actor=request.auth,
            ip=client_ip(request),
            **serializer.validated_data,
        )
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(
        tags=["dept: endpoints"],
        summary="Remove an endpoint",
        description=ENDPOINT_WRITES_LIMITED,
        responses={204: None, **problems("not_found", "throttled")},
    )
    def delete(self, request: DepartmentRequest, endpoint_id: str) -> Response:
        endpoints.endpoint_delete(
            endpoint=self.get_endpoint(endpoint_id),
            actor=request.auth,
            ip=client_ip(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointRotateSecretView(_EndpointView):
    throttle_classes = [EndpointWriteThrottle]

    @extend_schema(
        tags=["dept: endpoints"],
        summary="New secret; the old one keeps signing alongside it for a day",
        description=ENDPOINT_WRITES_LIMITED,
        request=None,
        responses={
            200: inline_serializer(
                "RotatedSecret",
                {
                    "secret": serializers.CharField(),
                    "previous_secret_expires_at": serializers.DateTimeField(),
                },
            ),
            **problems("not_found", "throttled"),
        },
    )
    def post(self, request: DepartmentRequest, endpoint_id: str) -> Response:
        secret = endpoints.endpoint_rotate_secret(
            endpoint=self.get_endpoint(endpoint_id), actor=request.auth, ip=client_ip(request)
        )
        endpoint = self.get_endpoint(endpoint_id)
        return Response(
            {
                "secret": secret,
                "previous_secret_expires_at": serializers.DateTimeField().to_representation(
                    endpoint.previous_secret_expires_at  # type: ignore[arg-type]  # set by the rotation above; DRF takes None too
                ),
            }
        )


class EndpointTestView(_EndpointView):
    throttle_classes = [SendThrottle]
    openapi_links = {
        "post": [
            links(
                202,
                "dept_deliveries_retrieve",
                "dept_deliveries_retry_create",
                delivery_id="$response.body#/id",
            )
        ]
    }

    @extend_schema(
        tags=["dept: endpoints"],
        summary="Send a ping event (a paused endpoint that answers it is resumed)",
        description="Pings and retries count against `ROUTING_SEND_RATE` per API key (60 a minute).",
        request=None,
        responses={202: DeliverySerializer, **problems("not_found", "throttled")},
    )
    def post(self, request: DepartmentRequest, endpoint_id: str) -> Response:
        delivery = endpoints.endpoint_ping(
            endpoint=self.get_endpoint(endpoint_id), actor=request.auth, ip=client_ip(request)
        )
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class DeliveryFilter(django_filters.FilterSet):
    """The list's parameters, checked; selectors.deliveries_of applies them
    (one endpoint's deliveries are read otherwise than the department's)."""

    endpoint = django_filters.UUIDFilter(field_name="endpoint_id")
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)

    class Meta:
        model = Delivery
        fields = ["endpoint", "status"]


class DeliveryListView(DepartmentView):
    pagination_class = FeedPagination
    openapi_links = {
        "get": [
            links(
                200,
                "dept_deliveries_retrieve",
                "dept_deliveries_retry_create",
                delivery_id="$response.body#/results/0/id",
            )
        ],
    }

    @extend_schema(
        tags=["dept: deliveries"],
        summary="Deliveries to my endpoints, newest first",
        operation_id="dept_deliveries_list",
        parameters=[
            OpenApiParameter("endpoint", OpenApiTypes.UUID, description="Endpoint id"),
            OpenApiParameter("status", str, enum=DeliveryStatus.values),
        ],
        responses={200: DeliverySerializer(many=True), **problems("invalid")},
    )
    def get(self, request: Request) -> Response:
        asked = DeliveryFilter(request.query_params, queryset=Delivery.objects.none())
        if not asked.is_valid():
            raise serializers.ValidationError(asked.errors)
        deliveries = selectors.deliveries_of(
            self.department,
            endpoint=asked.form.cleaned_data.get("endpoint"),
            status=asked.form.cleaned_data.get("status") or None,
        )
        return paginated(request, self, deliveries, DeliverySerializer)


class _DeliveryView(DepartmentView):
    """Looks up one delivery to the department's endpoints; answers no method itself."""

    def get_delivery(self, delivery_id: str | UUID) -> Delivery:
        delivery = selectors.deliveries_of(self.department).filter(pk=delivery_id).first()
        if delivery is None:
            raise Http404
        return delivery


class DeliveryDetailView(_DeliveryView):
    @extend_schema(
        tags=["dept: deliveries"],
        summary="One delivery with every try (status, latency, error, response)",
        responses={200: DeliveryDetailSerializer, **problems("not_found")},
    )
    def get(self, request: Request, delivery_id: str) -> Response:
        return Response(DeliveryDetailSerializer(self.get_delivery(delivery_id)).data)


class DeliveryRetryView(_DeliveryView):
    throttle_classes = [SendThrottle]

    @extend_schema(
        tags=["dept: deliveries"],
        summary="Send again now with a fresh retry schedule (dead letters and delivered ones alike)",
        description="Pings and retries count against `ROUTING_SEND_RATE` per API key (60 a minute).",
        request=None,
        responses={
            202: DeliverySerializer,
            **problems("delivery_not_retryable", "not_found", "throttled"),
        },
    )
    def post(self, request: DepartmentRequest, delivery_id: str) -> Response:
        delivery = deliveries.delivery_replay(
            delivery=self.get_delivery(delivery_id), actor=request.auth, ip=client_ip(request)
        )
        return Response(
            DeliverySerializer(self.get_delivery(delivery.pk)).data, status=status.HTTP_202_ACCEPTED
        )

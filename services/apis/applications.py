"""Citizen API: apply, follow, cancel, supplement, rate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import CitizenRequest, IsCitizen
from accounts.idempotency import idempotent
from config.api import FeedPagination, links, problems
from services import applications, selectors
from services.models import Application
from services.serializers import (
    ApplicationCreateSerializer,
    ApplicationListItemSerializer,
    ApplicationSerializer,
    CancelSerializer,
    RatingSerializer,
    SupplementSerializer,
)

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Same key and body within 24 h → the first response again; another body → 422",
)


class CitizenView(APIView):
    request: CitizenRequest
    permission_classes = [IsCitizen]

    def own(self, application_id: str | UUID) -> Application:
        application = selectors.application_of(self.request.user, application_id)
        if application is None:
            raise Http404
        return application


class ApplicationListView(CitizenView, ListAPIView):
    serializer_class = ApplicationListItemSerializer
    pagination_class = FeedPagination
    openapi_links = {
        "get": [
            links(
                200,
                "applications_retrieve",
                "applications_cancel_create",
                "applications_supplement_create",
                "applications_rating_create",
                application_id="$response.body#/results/0/id",
            )
        ],
        "post": [
            links(
                201,
                "applications_retrieve",
                "applications_cancel_create",
                "applications_supplement_create",
                "applications_rating_create",
                application_id="$response.body#/id",
            )
        ],
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Application.objects.none()
        return selectors.applications_of(self.request.user)

    @extend_schema(tags=["applications"], summary="My applications, newest first")
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["applications"],
        summary="Apply for a service",
        parameters=[IDEMPOTENCY_KEY],
        request=ApplicationCreateSerializer,
        responses={
            201: ApplicationSerializer,
            **problems(
                "form_invalid",
                "form_schema_unusable",
                "service_not_online",
                "identity_level_too_low",
                "idempotency_key_reused",
                "idempotency_key_invalid",
            ),
        },
    )
    def post(self, request: CitizenRequest) -> Response:
        def create() -> Response:
            serializer = ApplicationCreateSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            application = applications.application_submit(
                citizen=request.user, **serializer.validated_data
            )
            return Response(ApplicationSerializer(application).data, status=status.HTTP_201_CREATED)

        return idempotent(request, create)


class ApplicationDetailView(CitizenView):
    @extend_schema(
        tags=["applications"],
        summary="One of my applications, with its timeline",
        responses={200: ApplicationSerializer, **problems("not_found")},
    )
    def get(self, request: Request, application_id: str) -> Response:
        return Response(ApplicationSerializer(self.own(application_id)).data)


class ApplicationActionView(CitizenView):
    """A citizen's move on one of their applications: check the body, call
    the service, answer with the application as it now stands."""

    body: type[serializers.Serializer]
    move: Callable[..., Any]  # the service function

    def post(self, request: CitizenRequest, application_id: str) -> Response:
        application = self.own(application_id)
        serializer = self.body(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.move(citizen=request.user, application=application, **serializer.validated_data)
        return Response(ApplicationSerializer(self.own(application.pk)).data)


@extend_schema_view(
    post=extend_schema(
        tags=["applications"],
        summary="Withdraw an application (before the department accepts it)",
        request=CancelSerializer,
        responses={200: ApplicationSerializer, **problems("invalid_transition", "not_found")},
    )
)
class ApplicationCancelView(ApplicationActionView):
    body = CancelSerializer
    move = staticmethod(applications.application_cancel)


@extend_schema_view(
    post=extend_schema(
        tags=["applications"],
        summary="Supply the information the department asked for (needs_info → accepted)",
        request=SupplementSerializer,
        responses={
            200: ApplicationSerializer,
            **problems("form_invalid", "form_schema_unusable", "invalid_transition", "not_found"),
        },
    )
)
class ApplicationSupplementView(ApplicationActionView):
    body = SupplementSerializer
    move = staticmethod(applications.application_supplement)


@extend_schema_view(
    post=extend_schema(
        tags=["applications"],
        summary="Rate the service (好差评), once, after it ended",
        request=RatingSerializer,
        responses={200: ApplicationSerializer, **problems("rating_not_allowed", "not_found")},
    )
)
class ApplicationRatingView(ApplicationActionView):
    body = RatingSerializer
    move = staticmethod(applications.application_rate)

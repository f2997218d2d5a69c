"""Department API: a department manages its own service guides."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import ApiKeyAuthentication, DepartmentRequest, IsIntegrator
from accounts.models import Department
from config.api import FixedWindowThrottle, PagePagination, client_ip, links, paginated, problems
from services import catalog, selectors
from services.models import Service
from services.serializers import GuideSerializer, ServiceCreateSerializer, ServiceGuideSerializer


class DepartmentView(APIView):
    request: DepartmentRequest
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsIntegrator]

    @property
    def department(self) -> Department:
        return self.request.auth.department


class ServiceWriteThrottle(FixedWindowThrottle):
    """Service creations and edits per API key, in fixed windows: each
    checks the guide's form schema, which a department may make costly
    (within the schema limits, a fraction of a second of a web worker)."""

    scope = "dept_service_writes"

    def get_rate(self) -> str:
        return settings.DEPT_SERVICE_WRITE_RATE

    methods = frozenset({"POST", "PATCH"})

    def get_ident(self, request: Any) -> str:
        return str(request.auth.pk)


class DeptServiceListView(DepartmentView):
    pagination_class = PagePagination
    throttle_classes = [ServiceWriteThrottle]
    openapi_links = {
        "get": [
            links(
                200,
                "dept_services_retrieve",
                "dept_services_partial_update",
                code="$response.body#/results/0/code",
            )
        ],
        "post": [
            links(
                201,
                "dept_services_retrieve",
                "dept_services_partial_update",
                code="$response.body#/code",
            )
        ],
    }

    @extend_schema(
        tags=["dept: services"],
        summary="My department's services",
        operation_id="dept_services_list",
        responses={200: ServiceGuideSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        return paginated(
            request, self, selectors.department_services(self.department), ServiceGuideSerializer
        )

    @extend_schema(
        tags=["dept: services"],
        summary="Publish a service (live at once unless is_active is false)",
        request=ServiceCreateSerializer,
        responses={
            201: ServiceGuideSerializer,
            **problems(
                "form_schema_invalid",
                "guide_invalid",
                "service_code_taken",
                "api_key_scope",
                "throttled",
            ),
        },
    )
    def post(self, request: DepartmentRequest) -> Response:
        serializer = ServiceCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        service = catalog.service_create(
            department=self.department,
            actor=request.auth,
            ip=client_ip(request),
            **serializer.validated_data,
        )
        return Response(ServiceGuideSerializer(service).data, status=status.HTTP_201_CREATED)


class DeptServiceDetailView(DepartmentView):
    throttle_classes = [ServiceWriteThrottle]

    def get_service(self, code: str) -> Service:
        service = selectors.department_services(self.department).filter(code=code).first()
        if service is None:
            raise Http404
        return service

    @extend_schema(
        tags=["dept: services"],
        summary="One of my department's services",
        responses={200: ServiceGuideSerializer, **problems("not_found")},
    )
    def get(self, request: Request, code: str) -> Response:
        return Response(ServiceGuideSerializer(self.get_service(code)).data)

    @extend_schema(
        tags=["dept: services"],
        summary="Change a service's guide (code and department are fixed)",
        request=GuideSerializer(partial=True),
        responses={
            200: ServiceGuideSerializer,
            **problems(
                "form_schema_invalid", "guide_invalid", "not_found", "service_held", "throttled"
            ),
        },
    )
    def patch(self, request: DepartmentRequest, code: str) -> Response:
        service = self.get_service(code)
        serializer = GuideSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        service = catalog.service_update(
            service=service, actor=request.auth, ip=client_ip(request), **serializer.validated_data
        )
        return Response(ServiceGuideSerializer(service).data)

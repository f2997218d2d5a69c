"""Department API: the applications to a department's services."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import DepartmentRequest
from accounts.idempotency import idempotent
from config.api import FeedPagination, client_ip, links, paginated, problems
from services import applications, selectors
from services.apis.applications import IDEMPOTENCY_KEY
from services.apis.dept_services import DepartmentView
from services.models import Application, ApplicationStatus
from services.serializers import (
    DepartmentApplicationSerializer,
    DepartmentStatusSerializer,
    TimelineEntrySerializer,
)

# The filter's values, refused in the caller's language as a body's would be.
_STATUS = serializers.ChoiceField(choices=ApplicationStatus.choices)


def _with_timeline(application: Application) -> dict:
    return {
        **selectors.department_view(application),
        "timeline": TimelineEntrySerializer(application.timeline.all(), many=True).data,
    }


class DeptApplicationListView(DepartmentView):
    class Pagination(FeedPagination):
        # When each reached the department (paid, for a fee-bearing one), not
        # when it was made: one paid days later is not buried under newer ones.
        ordering = ("-submitted_at", "-id")

    pagination_class = Pagination
    openapi_links = {
        "get": [
            links(
                200,
                "dept_applications_retrieve",
                "dept_applications_status_create",
                number="$response.body#/results/0/number",
            )
        ],
    }

    @extend_schema(
        tags=["dept: applications"],
        summary="Applications to my department's services, newest to reach it first",
        operation_id="dept_applications_list",
        parameters=[OpenApiParameter("status", str, enum=ApplicationStatus.values)],
        responses={200: DepartmentApplicationSerializer(many=True), **problems("invalid")},
    )
    def get(self, request: Request) -> Response:
        wanted = request.query_params.get("status") or None
        if wanted is not None:
            try:
                wanted = _STATUS.run_validation(wanted)
            except ValidationError as exc:
                raise ValidationError({"status": exc.detail}) from exc
        return paginated(
            request,
            self,
            selectors.applications_for_department(self.department, status=wanted),
            selectors.department_view,
        )


class _DeptApplicationView(DepartmentView):
    """Looks up one of the department's applications; answers no method itself."""

    def get_application(self, number: str) -> Application:
        application = selectors.application_for_department(self.department, number)
        if application is None:
            raise Http404
        return application


class DeptApplicationDetailView(_DeptApplicationView):
    @extend_schema(
        tags=["dept: applications"],
        summary="One application, with the applicant's verified identity and the timeline",
        responses={200: DepartmentApplicationSerializer, **problems("not_found")},
    )
    def get(self, request: Request, number: str) -> Response:
        return Response(_with_timeline(self.get_application(number)))


class DeptApplicationStatusView(_DeptApplicationView):
    @extend_schema(
        tags=["dept: applications"],
        summary="Report progress: accepted, needs_info, completed or rejected",
        parameters=[IDEMPOTENCY_KEY],
        request=DepartmentStatusSerializer,
        responses={
            200: DepartmentApplicationSerializer,
            **problems(
                "invalid_transition",
                "not_found",
                "idempotency_key_reused",
                "idempotency_key_invalid",
            ),
        },
    )
    def post(self, request: DepartmentRequest, number: str) -> Response:
        application = self.get_application(number)

        def report() -> Response:
            serializer = DepartmentStatusSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            applications.application_department_update(
                application=application,
                api_key=request.auth,
                ip=client_ip(request),
                **serializer.validated_data,
            )
            return Response(_with_timeline(self.get_application(number)))

        # The answer names the applicant: kept for the department's retries,
        # it goes when the applicant's account closes.
        return idempotent(request, report, concerns=application.applicant)

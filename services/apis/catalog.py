"""Public catalog API: departments, categories, services and their guides."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from config.api import problems
from services import selectors
from services.models import Service
from services.serializers import (
    CategorySerializer,
    DepartmentSerializer,
    ServiceGuideSerializer,
    ServiceSummarySerializer,
)

CATALOG_CACHE = "public, max-age=60"


class PublicCatalogView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code == 200:
            response["Cache-Control"] = CATALOG_CACHE
        return response


@extend_schema_view(get=extend_schema(tags=["catalog"], summary="Departments"))
class DepartmentListView(PublicCatalogView, ListAPIView):
    serializer_class = DepartmentSerializer

    def get_queryset(self):
        return selectors.departments_public()


@extend_schema_view(get=extend_schema(tags=["catalog"], summary="Categories (themes)"))
class CategoryListView(PublicCatalogView, ListAPIView):
    serializer_class = CategorySerializer

    def get_queryset(self):
        return selectors.categories_public()


class ServiceFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="search",
        max_length=50,
        help_text="Words of the name or keywords, or their pinyin: full (gongjijin) or initials (gjj)",
    )
    category = django_filters.CharFilter(field_name="category__code", help_text="Category code")
    department = django_filters.CharFilter(
        field_name="department__code", help_text="Department code"
    )

    class Meta:
        model = Service
        fields = ["q", "category", "department"]

    def search(self, queryset, name, value):
        return selectors.services_matching(queryset, value)


@extend_schema_view(
    get=extend_schema(
        tags=["catalog"],
        summary="Find services",
        responses={200: ServiceSummarySerializer(many=True), **problems("invalid")},
    )
)
class ServiceListView(PublicCatalogView, ListAPIView):
    serializer_class = ServiceSummarySerializer
    filterset_class = ServiceFilter

    def get_queryset(self):
        return selectors.services_public()


@extend_schema_view(
    get=extend_schema(
        tags=["catalog"],
        summary="A service's guide (办事指南)",
        responses={200: ServiceGuideSerializer, **problems("not_found")},
    )
)
class ServiceDetailView(PublicCatalogView, RetrieveAPIView):
    serializer_class = ServiceGuideSerializer
    lookup_field = "code"

    def get_queryset(self):
        return selectors.services_public()

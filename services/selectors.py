"""Reads of the catalog, applications and routing."""

from __future__ import annotations

from django.db.models import Case, IntegerField, QuerySet, Value, When

from accounts.models import Department
from services.models import Category, Service


def departments_public() -> QuerySet[Department]:
    return Department.objects.filter(is_active=True).order_by("code")


def categories_public() -> QuerySet[Category]:
    return Category.objects.filter(is_active=True)


def services_public() -> QuerySet[Service]:
    """Services a citizen can see and apply for."""
    return Service.objects.filter(
        is_active=True, department__is_active=True, category__is_active=True
    ).select_related("department", "category")


def services_matching(services: QuerySet[Service], q: str) -> QuerySet[Service]:
    """Services whose name, keywords or their pinyin contain every word of
    ``q``; name matches first."""
    terms = q.strip().lower().split()
    if not terms:
        return services
    for term in terms:
        services = services.filter(search_text__contains=term)
    return services.annotate(
        name_rank=Case(
            When(name__contains=terms[0], then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
    ).order_by("name_rank", "code")


def department_services(department: Department) -> QuerySet[Service]:
    return Service.objects.filter(department=department).select_related("department", "category")

"""Factories for the catalog, applications and routing."""

from __future__ import annotations

import factory
from factory.django import DjangoModelFactory

from services.catalog import search_text_build
from services.models import Category, Service
from tests.accounts.factories import DepartmentFactory

SIMPLE_FORM = {
    "type": "object",
    "required": ["reason", "phone"],
    "properties": {
        "reason": {"type": "string", "title": "申请事由", "minLength": 2, "maxLength": 200},
        "phone": {"type": "string", "title": "联系电话", "pattern": "^1[3-9]\\d{9}$"},
        "copies": {"type": "integer", "title": "份数", "minimum": 1, "maximum": 5},
    },
    "additionalProperties": False,
}


class CategoryFactory(DjangoModelFactory):
    class Meta:
        model = Category
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"cat{n}")
    name = factory.Sequence(lambda n: f"分类{n}")


class ServiceFactory(DjangoModelFactory):
    class Meta:
        model = Service

    code = factory.Sequence(lambda n: f"service-{n}")
    name = factory.Sequence(lambda n: f"测试事项{n}")
    department = factory.SubFactory(DepartmentFactory)
    category = factory.SubFactory(CategoryFactory)
    summary = "事项简介"
    materials = factory.LazyFunction(lambda: [{"name": "居民身份证", "required": True, "note": ""}])
    channels = factory.LazyFunction(lambda: ["online", "hall"])
    identity_level = 2
    time_limit_days = 5
    form_schema = factory.LazyFunction(lambda: dict(SIMPLE_FORM))
    keywords = factory.LazyFunction(list)
    search_text = factory.LazyAttribute(lambda o: search_text_build(o.name, o.keywords))

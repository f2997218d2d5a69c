"""Factories for the accounts app."""

from __future__ import annotations

import factory
from django.contrib.auth.hashers import make_password
from django.utils import timezone
from factory.django import DjangoModelFactory

from accounts import idnumber, pii
from accounts.models import Department, IdentityLevel, User


def make_id_number(seq: int, *, born: str = "19900307", region: str = "430102") -> str:
    """A valid resident ID number (checksum included), distinct per ``seq``."""
    first17 = f"{region}{born}{seq % 1000:03d}"
    return first17 + idnumber.check_char(first17)


class DepartmentFactory(DjangoModelFactory):
    class Meta:
        model = Department
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"dept{n}")
    name = factory.Sequence(lambda n: f"测试部门{n}")


class CitizenFactory(DjangoModelFactory):
    """A citizen who logged in by phone (identity level 1)."""

    class Meta:
        model = User

    phone = factory.Sequence(lambda n: f"139{n:08d}")
    password = factory.LazyFunction(lambda: make_password(None))

    class Params:
        verified = factory.Trait(
            identity_level=IdentityLevel.REAL_NAME,
            real_name="张三丰",
            id_number=factory.Sequence(lambda n: make_id_number(n)),
            id_number_index=factory.LazyAttribute(
                lambda o: pii.blind_index(o.id_number, purpose="id_number")
            ),
            real_name_verified_at=factory.LazyFunction(timezone.now),
        )


STAFF_PASSWORD = "correct horse battery"


class StaffFactory(DjangoModelFactory):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True
    password = factory.LazyFunction(lambda: make_password(STAFF_PASSWORD))


class AccessAttemptFactory(DjangoModelFactory):
    """A failed admin log-in as django-axes records it (a locked-out clerk)."""

    class Meta:
        model = "axes.AccessAttempt"

    username = "clerk"
    ip_address = "10.1.2.3"
    user_agent = "Mozilla/5.0"
    path_info = "/admin/login/"
    http_accept = "text/html"
    get_data = ""
    post_data = "username=clerk"
    failures_since_start = 5

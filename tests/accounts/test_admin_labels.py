"""Every column, field and app name an operator reads in the admin is in
Chinese (DESIGN: Chinese first); every time the admin shows in a record's
name is China time."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib import admin
from django.contrib.admin.utils import get_fields_from_path, label_for_field

from accounts.models import AuditEntry
from services.models import TimelineEntry

CJK = re.compile(r"[\u4e00-\u9fff]")
# Names that are the same in every language.
AS_IS = {"jti", "IP"}


def operator_admins():
    """Every table an operator can open: the project's and the libraries'
    (login lockouts, refresh tokens, periodic tasks)."""
    return list(admin.site._registry.items())


@pytest.mark.parametrize(
    ("model", "model_admin"),
    operator_admins(),
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_every_label_of_an_operators_page_is_chinese(model, model_admin) -> None:
    names = [
        *(n for n in model_admin.list_display if n != "action_checkbox"),
        *(n for n in (model_admin.fields or ()) if isinstance(n, str)),
        *(n for n in (model_admin.readonly_fields or ()) if isinstance(n, str)),
        *(n for n in model_admin.list_filter if isinstance(n, str) and "__" not in n),
    ]
    if model_admin.fields is None and not model_admin.fieldsets:
        # A form made of the model's fields: each one is shown.
        names += [
            f.name
            for f in model._meta.get_fields()
            if f.concrete
            and getattr(f, "editable", False)
            and not f.auto_created
            and f.name not in (model_admin.exclude or ())
        ]
    untranslated = sorted(
        {
            f"{name}: {label}"
            for name in names
            for label in [str(label_for_field(name, model, model_admin))]
            if not CJK.search(label) and label not in AS_IS
        }
    )
    # A filter across a relation is titled by the last field's name.
    untranslated += [
        f"{path}: {field.verbose_name}"
        for path in model_admin.list_filter
        if isinstance(path, str) and "__" in path
        for field in [get_fields_from_path(model, path)[-1]]
        if not CJK.search(str(field.verbose_name))
    ]
    assert untranslated == []
    assert CJK.search(str(model._meta.verbose_name_plural))


@pytest.mark.django_db
def test_every_app_on_the_index_has_a_chinese_name(operator_client) -> None:
    apps = operator_client.get("/admin/").context["app_list"]
    assert [app["name"] for app in apps if not CJK.search(str(app["name"]))] == []
    models = [m["name"] for app in apps for m in app["models"]]
    assert [name for name in models if not CJK.search(str(name))] == []


def test_record_names_show_china_time() -> None:
    at = dt.datetime(2026, 11, 24, 17, 30, tzinfo=dt.UTC)  # 01:30 on the 25th in Changsha
    assert "2026-11-25 01:30" in str(TimelineEntry(status="accepted", at=at))
    assert "2026-11-25 01:30:00" in str(AuditEntry(at=at, action="x", target_type="t"))

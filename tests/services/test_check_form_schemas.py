"""An operator finds the services whose stored form schema nobody can use."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from services.models import Service
from tests.services.factories import SIMPLE_FORM, ServiceFactory

pytestmark = pytest.mark.django_db


def stored_before_the_rules(service: Service, schema: dict) -> None:
    Service.objects.filter(pk=service.pk).update(form_schema=schema)


def test_the_check_command_lists_services_whose_stored_form_is_unusable(service) -> None:
    ServiceFactory(code="fine")
    out = io.StringIO()
    call_command("check_form_schemas", stdout=out)
    assert "2 form schemas checked, all usable" in out.getvalue()

    stored_before_the_rules(
        service, {**SIMPLE_FORM, "properties": {"extra": {"$ref": "http://127.0.0.1:9/x"}}}
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 of 2 services"):
        call_command("check_form_schemas", stdout=out)
    assert "sbk-apply (hrss, active)" in out.getvalue()
    assert "properties/extra/$ref" in out.getvalue()
    assert "fine" not in out.getvalue()


def test_the_check_command_lists_a_schema_that_crashed_the_rules(service) -> None:
    # A pointer through a string and one through a list made the reference
    # library raise, and the command stop.
    ServiceFactory(code="fine")
    ServiceFactory(
        code="listy", form_schema={**SIMPLE_FORM, "properties": {"x": {"$ref": "#/required/x"}}}
    )
    stored_before_the_rules(service, {**SIMPLE_FORM, "properties": {"extra": {"$ref": "#/type/x"}}})
    out = io.StringIO()
    with pytest.raises(CommandError, match="2 of 3 services"):
        call_command("check_form_schemas", stdout=out)
    assert "sbk-apply (hrss, active)" in out.getvalue()
    assert "properties/extra/$ref" in out.getvalue() and "#/type/x" in out.getvalue()
    assert "listy" in out.getvalue() and "#/required/x" in out.getvalue()


def test_the_check_command_names_formats_nothing_checks_without_calling_them_unusable(
    service,
) -> None:
    # Stored before formats were checked when saved: applications are taken,
    # the answers in those fields are not checked, and the operator is told.
    stored_before_the_rules(
        service, {**SIMPLE_FORM, "properties": {"span": {"type": "string", "format": "duration"}}}
    )
    out = io.StringIO()
    call_command("check_form_schemas", stdout=out)
    assert "1 form schemas checked, all usable" in out.getvalue()
    assert "sbk-apply (hrss, active)" in out.getvalue()
    assert "properties/span/format" in out.getvalue() and "duration" in out.getvalue()

"""The API's model serializers work out their fields from the model once per
class (config.api.ModelSerializer) and hand each instance its own copies."""

from __future__ import annotations

import importlib

import pytest
from rest_framework import serializers

from config.api import ModelSerializer


def _every_subclass(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_every_subclass(sub))
    return found


def project_serializers() -> list[type]:
    # Imported, the modules' classes are subclasses to be found.
    for module in (
        "accounts.apis",
        "services.serializers",
        "payments.serializers",
        "qr.serializers",
    ):
        importlib.import_module(module)
    return [
        cls for cls in _every_subclass(ModelSerializer) if not cls.__module__.startswith("tests")
    ]


def test_every_model_serializer_of_the_api_uses_the_kept_fields() -> None:
    plain = [
        cls
        for cls in _every_subclass(serializers.ModelSerializer)
        if cls.__module__.split(".")[0] in {"accounts", "services", "payments", "qr"}
        and not issubclass(cls, ModelSerializer)
    ]
    assert plain == []
    assert len(project_serializers()) >= 14


@pytest.mark.parametrize("cls", project_serializers(), ids=lambda cls: cls.__name__)
def test_the_kept_fields_are_the_fields_drf_works_out(cls) -> None:
    kept = cls().get_fields()
    again = cls().get_fields()
    worked_out = serializers.ModelSerializer.get_fields(cls())
    assert list(kept) == list(worked_out)
    for name, field in kept.items():
        assert repr(field) == repr(worked_out[name])
        assert field is not again[name]  # each instance has its own


def test_fields_are_worked_out_once_per_class(monkeypatch) -> None:
    from services.models import Category

    calls = []
    real = serializers.ModelSerializer.get_fields

    def counting(self):
        calls.append(type(self))
        return real(self)

    monkeypatch.setattr(serializers.ModelSerializer, "get_fields", counting)

    class Fresh(ModelSerializer):
        class Meta:
            model = Category
            fields = ["code", "name"]

    first, second = Fresh(), Fresh()
    assert list(first.fields) == ["code", "name"]
    first.fields["name"].read_only = True
    assert second.fields["name"].read_only is False
    assert calls == [Fresh]


@pytest.mark.parametrize("cls", project_serializers(), ids=lambda cls: cls.__name__)
def test_fields_kept_in_one_language_are_not_served_in_another(cls) -> None:
    """DRF decides in the active language whether a field needs a label of
    its own: fields worked out in English first must not leave Chinese
    requests with English labels."""
    from django.utils import translation

    for first, then in (("en", "zh-hans"), ("zh-hans", "en")):
        cls.__dict__.get("_fields_from_model", {}).clear()
        with translation.override(first):
            cls().get_fields()
        with translation.override(then):
            kept = cls().get_fields()
            worked_out = serializers.ModelSerializer.get_fields(cls())
            assert {name: str(field.label) for name, field in kept.items()} == {
                name: str(field.label) for name, field in worked_out.items()
            }

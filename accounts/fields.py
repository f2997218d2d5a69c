"""Model fields for personal data."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from accounts import pii


class EncryptedTextField(models.TextField):
    """Text stored Fernet-encrypted; reads give the plain value back.

    Ciphertexts are randomised, so the column supports no lookups: search
    through a separate blind-index column instead.
    """

    description = "Text encrypted at rest"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str:
        if not value:
            return ""
        return pii.decrypt(value)

    def get_prep_value(self, value: Any) -> str:
        value = super().get_prep_value(value)
        if not value:
            return ""
        return pii.encrypt(value)

    def get_lookup(self, lookup_name: str) -> Any:
        if lookup_name != "isnull":
            return None
        return super().get_lookup(lookup_name)


class EncryptedJSONField(models.TextField):
    """A JSON value stored Fernet-encrypted (forms, event payloads, replayed
    responses: anything that may carry personal data). No lookups."""

    description = "JSON encrypted at rest"
    # The value types django-stubs reads: any JSON value, not TextField's str.
    _pyi_private_set_type: Any
    _pyi_private_get_type: Any

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        return json.loads(pii.decrypt(value))

    def to_python(self, value: Any) -> Any:
        return value

    def get_prep_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return pii.encrypt(json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False))

    def value_to_string(self, obj: models.Model) -> str:
        return json.dumps(self.value_from_object(obj), cls=DjangoJSONEncoder, ensure_ascii=False)

    def get_lookup(self, lookup_name: str) -> Any:
        if lookup_name != "isnull":
            return None
        return super().get_lookup(lookup_name)

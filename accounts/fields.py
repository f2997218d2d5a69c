"""Model fields for personal data."""

from __future__ import annotations

from typing import Any

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

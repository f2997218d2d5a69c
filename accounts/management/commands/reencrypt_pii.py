from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import models, transaction
from tqdm import tqdm

from accounts.fields import EncryptedJSONField, EncryptedTextField

ENCRYPTED = (EncryptedTextField, EncryptedJSONField)
# Each batch's rows are named in one statement, whose values PostgreSQL
# bounds (65,535 parameters when it binds them).
MOST_PER_BATCH = 10_000


def encrypted_columns() -> list[tuple[type[models.Model], list[str]]]:
    """Every model with encrypted fields, and those fields (all apps)."""
    found = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.concrete_fields if isinstance(f, ENCRYPTED)]
        if names:
            found.append((model, names))
    return found


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted column (names and ID numbers, forms, event payloads, "
        "endpoint secrets, signing keys, stored replies) under the first "
        "FIELD_ENCRYPTION_KEY. Run after putting a new key first; afterwards the old "
        "keys can be removed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help=f"rows a transaction (1 to {MOST_PER_BATCH})",
        )

    def handle(self, *args, batch_size: int, **options) -> None:
        if not 1 <= batch_size <= MOST_PER_BATCH:
            raise CommandError(f"--batch-size must be from 1 to {MOST_PER_BATCH}")
        total = 0
        for model, names in encrypted_columns():
            # Reading decrypts with any listed key; saving encrypts with the first.
            rows = model._default_manager.only("pk", *names)
            ids = list(rows.values_list("pk", flat=True))
            label = model._meta.label
            for start in tqdm(
                range(0, len(ids), batch_size), desc=label, unit="batch", disable=not ids
            ):
                chunk = ids[start : start + batch_size]
                with transaction.atomic():
                    batch = list(rows.select_for_update().filter(pk__in=chunk))
                    model._default_manager.bulk_update(batch, names)
            self.stdout.write(f"{label}: re-encrypted {len(ids)} row(s) ({', '.join(names)})")
            total += len(ids)
        self.stdout.write(f"re-encrypted {total} row(s) in all")

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction
from tqdm import tqdm

from accounts.models import User


class Command(BaseCommand):
    help = (
        "Re-encrypt personal data under the first FIELD_ENCRYPTION_KEY. Run after "
        "putting a new key first; afterwards the old keys can be removed."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, batch_size: int, **options) -> None:  # type: ignore[no-untyped-def]
        # Verified accounts are the ones holding encrypted data. Reading
        # decrypts with any listed key; saving encrypts with the first.
        users = User.objects.exclude(id_number_index=None).only("id", "real_name", "id_number")
        ids = list(users.values_list("id", flat=True))
        done = 0
        for start in tqdm(range(0, len(ids), batch_size), unit="batch", disable=not ids):
            chunk = ids[start : start + batch_size]
            with transaction.atomic():
                rows = list(users.select_for_update().filter(id__in=chunk))
                User.objects.bulk_update(rows, ["real_name", "id_number"])
            done += len(rows)
        self.stdout.write(f"re-encrypted {done} account(s)")

"""Refresh tokens listed as outstanding before this migration were stored
whole; keep only their fingerprint (accounts.services.token_fingerprint)."""

import hashlib

from django.db import migrations


def fingerprint_tokens(apps, schema_editor):
    OutstandingToken = apps.get_model("token_blacklist", "OutstandingToken")
    for row in OutstandingToken.objects.exclude(token__startswith="sha256:").iterator():
        digest = hashlib.sha256(row.token.encode()).hexdigest()[:32]
        OutstandingToken.objects.filter(pk=row.pk).update(token=f"sha256:{digest}")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_idempotency"),
        ("token_blacklist", "0013_alter_blacklistedtoken_options_and_more"),
    ]

    operations = [migrations.RunPython(fingerprint_tokens, migrations.RunPython.noop)]
